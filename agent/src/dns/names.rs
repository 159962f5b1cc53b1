//! The names each process resolved, from the kernel's DNS events: a connect event names the
//! domain its address came from. Bounded (LRU): the oldest resolutions are forgotten first.

use std::net::IpAddr;

use lru::LruCache;

/// Resolutions remembered per process and address, and per address.
const CAPACITY: usize = 65_536;

pub struct ResolvedNames {
    /// (pid, process start time, address) -> name.
    by_process: LruCache<(u32, u64, IpAddr), String>,
    /// address -> the latest name any watched process resolved to it.
    by_addr: LruCache<IpAddr, String>,
}

impl Default for ResolvedNames {
    fn default() -> Self {
        // Grown as used, not allocated up front: an idle agent should not hold room for 65,536
        // names it has not seen.
        Self { by_process: LruCache::unbounded(), by_addr: LruCache::unbounded() }
    }
}

/// Puts into an LRU kept at [`CAPACITY`] by hand (see `Default`).
fn put_bounded<K: std::hash::Hash + Eq, V>(cache: &mut LruCache<K, V>, k: K, v: V) {
    if cache.len() >= CAPACITY && !cache.contains(&k) {
        cache.pop_lru();
    }
    cache.put(k, v);
}

impl ResolvedNames {
    pub fn record(&mut self, pid: u32, start_ns: u64, addr: IpAddr, name: &str) {
        put_bounded(&mut self.by_process, (pid, start_ns, addr), name.to_owned());
        put_bounded(&mut self.by_addr, addr, name.to_owned());
    }

    /// The name `pid` resolved to `addr`; else, when the kernel allowed the address as learnt
    /// (`learnt`), the latest name any process resolved to it (a worker connecting to what its
    /// parent resolved); else none.
    pub fn name(&mut self, pid: u32, start_ns: u64, addr: IpAddr, learnt: bool) -> Option<String> {
        if let Some(n) = self.by_process.get(&(pid, start_ns, addr)) {
            return Some(n.clone());
        }
        if learnt {
            return self.by_addr.get(&addr).cloned();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_process_first_then_by_address_only_when_learnt() {
        let mut n = ResolvedNames::default();
        let a: IpAddr = "192.0.2.7".parse().expect("addr");
        n.record(10, 1, a, "api.stripe.com");
        assert_eq!(n.name(10, 1, a, false).as_deref(), Some("api.stripe.com"));
        assert_eq!(n.name(11, 1, a, false), None);
        assert_eq!(n.name(11, 1, a, true).as_deref(), Some("api.stripe.com"));
    }
}
