//! The names each process resolved, from the kernel's DNS events: a connect event names the
//! domain its address came from. Bounded (LRU): the oldest resolutions are forgotten first.
//!
//! At its bound ([`CAPACITY`] entries in each table) this is the largest thing the agent keeps,
//! so an answer's name is stored once, shared by both tables and every address of the answer.

use std::{net::IpAddr, sync::Arc};

use lru::LruCache;

/// Resolutions remembered per process and address, and per address: 7/16 of 2^17. A full table
/// under churn (one removed, one added) leaves tombstones in its hashbrown index; once they use
/// up its free slots, hashbrown rehashes in place only if the entries fill at most half of what
/// the index may hold (7/8 of its slots), and else doubles it. At 65,536 entries (2^17 slots)
/// the soak saw the heap grow 4.2 MiB at once after about 500,000 replacements, no entry added:
/// both indexes going to 2^18 slots. At this bound the index is 2^17 slots from soon after the
/// table fills, and is only ever rehashed in place.
const CAPACITY: usize = 57_344;

pub struct ResolvedNames {
    /// (pid, process start time, address) -> name.
    by_process: LruCache<(u32, u64, IpAddr), Arc<str>>,
    /// address -> the latest name any watched process resolved to it.
    by_addr: LruCache<IpAddr, Arc<str>>,
}

impl Default for ResolvedNames {
    fn default() -> Self {
        // Grown as used, not allocated up front: an idle agent should not hold room for 57,344
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
    pub fn record(&mut self, pid: u32, start_ns: u64, addr: IpAddr, name: &Arc<str>) {
        put_bounded(&mut self.by_process, (pid, start_ns, addr), name.clone());
        put_bounded(&mut self.by_addr, addr, name.clone());
    }

    /// The fill of both tables.
    pub fn fill(&self) -> [crate::memory::CacheFill; 2] {
        use crate::memory::CacheFill;
        [
            CacheFill::new("dns_names_by_process", self.by_process.len(), CAPACITY),
            CacheFill::new("dns_names_by_address", self.by_addr.len(), CAPACITY),
        ]
    }

    /// The name `pid` resolved to `addr`; else, when the kernel allowed the address as learnt
    /// (`learnt`), the latest name any process resolved to it (a worker connecting to what its
    /// parent resolved); else none.
    pub fn name(&mut self, pid: u32, start_ns: u64, addr: IpAddr, learnt: bool) -> Option<String> {
        if let Some(n) = self.by_process.get(&(pid, start_ns, addr)) {
            return Some(n.to_string());
        }
        if learnt {
            return self.by_addr.get(&addr).map(ToString::to_string);
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
        n.record(10, 1, a, &Arc::from("api.stripe.com"));
        assert_eq!(n.name(10, 1, a, false).as_deref(), Some("api.stripe.com"));
        assert_eq!(n.name(11, 1, a, false), None);
        assert_eq!(n.name(11, 1, a, true).as_deref(), Some("api.stripe.com"));
    }

    /// What the tables cost at their bound, one name per answer (the soak's churn, the worst
    /// case): `cargo test -p agent --release -- --ignored --nocapture names_at_the_bound`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn names_at_the_bound() {
        let before = crate::memory::heap().expect("glibc's mallinfo2");
        let mut n = ResolvedNames::default();
        for i in 0..CAPACITY as u128 {
            let name: Arc<str> = Arc::from(format!("n{i}-123456.soak.test"));
            n.record(4242, 1, IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i)), &name);
        }
        let full = crate::memory::heap().expect("glibc's mallinfo2").allocated;
        let bytes = full - before.allocated;
        println!(
            "{CAPACITY} resolutions in both tables: {:.1} MiB allocated, {} bytes each",
            bytes as f64 / 1048576.0,
            bytes / CAPACITY as u64
        );
        assert_eq!(n.fill().map(|f| f.entries), [CAPACITY, CAPACITY]);
        // Churn: each new resolution replaces the oldest. The index must not grow (see CAPACITY).
        for i in CAPACITY as u128..10 * CAPACITY as u128 {
            let name: Arc<str> = Arc::from(format!("n{i}-123456.soak.test"));
            n.record(4242, 1, IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i)), &name);
        }
        let churned = crate::memory::heap().expect("glibc's mallinfo2").allocated;
        println!("after {} replacements: {:+.2} MiB", 9 * CAPACITY, (churned as f64 - full as f64) / 1048576.0);
        assert!(churned < full + 1024 * 1024, "the tables grew under churn: {full} → {churned}");
    }
}
