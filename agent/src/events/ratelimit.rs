//! The per-key rate limit on connect records: a process retrying a refused destination in a
//! loop, or a service opening thousands of connections a second to one vendor, must not become
//! thousands of identical lines in the SIEM. Every attempt is still decided in the kernel and
//! counted in baselines; only the records are folded.
//!
//! A key (process, destination, port, protocol, verdict, rule) may write `burst` records per
//! window. Further attempts in the window are folded: the last one is kept, and when the window
//! ends it is written once with `suppressed` = how many were folded, so nothing disappears. A key
//! whose window ended is forgotten then (its next attempt opens a new window, as it would have),
//! so the table holds the keys of the last window only, not every destination ever seen. It is
//! bounded too; a key pushed out with folded attempts is written out first.

use std::sync::Arc;

use agent_common::Event;
use lru::LruCache;

use super::enrich::Enriched;

/// What identifies "the same attempt again".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub pid: u32,
    pub start_ns: u64,
    pub daddr: [u8; 16],
    pub dport: u16,
    pub proto: u8,
    pub verdict: u8,
    pub flags: u8,
    pub rule_id: u32,
}

impl Key {
    pub fn of(ev: &Event) -> Self {
        Key {
            pid: ev.pid,
            start_ns: ev.start_ns,
            daddr: ev.daddr,
            dport: ev.dport,
            proto: ev.proto,
            verdict: ev.verdict,
            flags: ev.flags,
            rule_id: ev.rule_id,
        }
    }
}

/// Attempts folded under one key, ready to be written as one record.
#[derive(Debug, Clone)]
pub struct Folded {
    /// The last attempt folded.
    pub event: Event,
    pub who: Arc<Enriched>,
    pub domain: Option<String>,
    pub domain_rule: Option<String>,
    pub suppressed: u64,
}

struct Window {
    start_ns: u64,
    written: u32,
    folded: Option<Folded>,
}

pub struct RateLimiter {
    window_ns: u64,
    burst: u32,
    keys: LruCache<Key, Window>,
    /// Attempts folded since the agent started.
    pub total_suppressed: u64,
}

/// Keys tracked at once.
const CAPACITY: usize = 16_384;

impl RateLimiter {
    /// `burst` records per key per `window_ns`; `burst == 0` turns folding off.
    pub fn new(window_ns: u64, burst: u32) -> Self {
        // Grown as used (see `admit`), not allocated up front.
        Self { window_ns, burst, keys: LruCache::unbounded(), total_suppressed: 0 }
    }

    /// Whether the record of `ev` is written now. If not, it is folded (and written later by
    /// [`Self::expired`] or [`Self::drain`]); if a key was pushed out of the table with folded
    /// attempts, they are returned to be written.
    pub fn admit(
        &mut self,
        ev: &Event,
        who: &Arc<Enriched>,
        domain: &Option<String>,
        domain_rule: &Option<String>,
    ) -> (bool, Option<Folded>) {
        if self.burst == 0 {
            return (true, None);
        }
        let key = Key::of(ev);
        let now = ev.ts_ns;
        if let Some(w) = self.keys.get_mut(&key) {
            if now.saturating_sub(w.start_ns) < self.window_ns {
                if w.written < self.burst {
                    w.written += 1;
                    return (true, None);
                }
                let n = w.folded.as_ref().map_or(0, |f| f.suppressed) + 1;
                w.folded = Some(Folded {
                    event: *ev,
                    who: who.clone(),
                    domain: domain.clone(),
                    domain_rule: domain_rule.clone(),
                    suppressed: n,
                });
                self.total_suppressed += 1;
                return (false, None);
            }
            // A new window; what the old one folded is written first by `expired`, which runs
            // before each batch, so it is normally gone by now.
            let left = w.folded.take();
            *w = Window { start_ns: now, written: 1, folded: None };
            return (true, left);
        }
        let pushed = if self.keys.len() >= CAPACITY { self.keys.pop_lru() } else { None };
        self.keys.put(key, Window { start_ns: now, written: 1, folded: None });
        (true, pushed.and_then(|(_, w)| w.folded))
    }

    /// The fill of the key table.
    pub fn fill(&self) -> crate::memory::CacheFill {
        crate::memory::CacheFill::new("rate_limit_keys", self.keys.len(), CAPACITY)
    }

    /// Folded attempts of windows that ended before `now_ns` (CLOCK_MONOTONIC). Their keys are
    /// removed: a key kept after its window would only wait for the LRU bound, and a host that
    /// reaches many destinations (learnt addresses change with every answer) would fill the
    /// table to [`CAPACITY`] — about 5 MB — in minutes and keep it full.
    pub fn expired(&mut self, now_ns: u64) -> Vec<Folded> {
        let mut out = Vec::new();
        let mut ended = Vec::new();
        for (k, w) in self.keys.iter_mut() {
            if now_ns.saturating_sub(w.start_ns) >= self.window_ns {
                out.extend(w.folded.take());
                ended.push(*k);
            }
        }
        for k in &ended {
            self.keys.pop(k);
        }
        out.sort_by_key(|f| f.event.ts_ns);
        out
    }

    /// Everything folded, whatever its window (the agent is stopping).
    pub fn drain(&mut self) -> Vec<Folded> {
        self.expired(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts_ns: u64, dport: u16) -> Event {
        let mut e = crate::events::test_event();
        (e.pid, e.tid, e.generation, e.ts_ns, e.start_ns, e.dport, e.proto, e.verdict, e.hook) =
            (7, 7, 1, ts_ns, 1, dport, 17, 1, 3);
        e
    }

    #[test]
    fn folds_past_the_burst_and_counts_every_attempt() {
        let mut r = RateLimiter::new(1_000, 2);
        let who = Arc::new(Enriched::default());
        let mut written = 0;
        for i in 0..10 {
            if r.admit(&ev(i, 53), &who, &None, &None).0 {
                written += 1;
            }
        }
        // Another key is not affected.
        assert!(r.admit(&ev(5, 54), &who, &None, &None).0);
        assert_eq!(written, 2);
        assert!(r.expired(500).is_empty(), "the window is still open");
        let folded = r.expired(1_000);
        assert_eq!(folded.len(), 1);
        assert_eq!(folded[0].suppressed, 8);
        assert_eq!(folded[0].event.ts_ns, 9, "the last attempt is the one kept");
        assert_eq!(written as u64 + folded[0].suppressed, 10, "nothing lost");
        assert!(r.expired(2_000).is_empty(), "written once");
        assert_eq!(r.total_suppressed, 8);
    }

    #[test]
    fn keys_are_forgotten_when_their_window_ends() {
        let mut r = RateLimiter::new(1_000, 2);
        let who = Arc::new(Enriched::default());
        // 100 destinations, one attempt each, and one key folding.
        for port in 0..100 {
            assert!(r.admit(&ev(10, port), &who, &None, &None).0);
        }
        for i in 0..5 {
            r.admit(&ev(20 + i, 53), &who, &None, &None);
        }
        assert_eq!(r.fill().entries, 100);
        assert!(r.expired(999).is_empty());
        assert_eq!(r.fill().entries, 100, "windows still open");
        let folded = r.expired(1_010);
        assert_eq!((folded.len(), folded[0].suppressed), (1, 4), "what was folded is still written");
        assert_eq!(r.fill().entries, 0);
        // The next attempt opens a new window, as it would have with the key kept.
        assert!(r.admit(&ev(1_020, 53), &who, &None, &None).0);
        assert!(r.admit(&ev(1_021, 53), &who, &None, &None).0);
        assert!(!r.admit(&ev(1_022, 53), &who, &None, &None).0);
    }

    /// What a full table costs (keys that folded nothing, as most do): `cargo test -p agent
    /// --release -- --ignored --nocapture keys_at_the_bound`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn keys_at_the_bound() {
        let before = crate::memory::heap().expect("glibc's mallinfo2");
        let mut r = RateLimiter::new(1_000_000_000, 2);
        let who = Arc::new(Enriched::default());
        for i in 0..CAPACITY as u32 {
            let mut e = ev(1, 443);
            e.daddr[..4].copy_from_slice(&i.to_be_bytes());
            r.admit(&e, &who, &None, &None);
        }
        let bytes = crate::memory::heap().expect("glibc's mallinfo2").allocated - before.allocated;
        println!(
            "{CAPACITY} keys: {:.1} MiB allocated, {} bytes each",
            bytes as f64 / 1048576.0,
            bytes / CAPACITY as u64
        );
        assert_eq!(r.fill().entries, CAPACITY);
    }

    #[test]
    fn burst_zero_writes_everything() {
        let mut r = RateLimiter::new(1_000, 0);
        let who = Arc::new(Enriched::default());
        assert!((0..100).all(|i| r.admit(&ev(i, 53), &who, &None, &None).0));
        assert!(r.drain().is_empty());
    }
}
