//! Per-vendor counters over the last hour, for `status`: attempts by verdict and flow bytes, in
//! one-minute buckets. Keys are vendor names from the policy and `none`, so memory is bounded by
//! the policy (60 buckets per vendor).

use std::collections::BTreeMap;

use serde::Serialize;

const BUCKETS: usize = 60;
const BUCKET_S: u64 = 60;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub allowed: u64,
    pub alerted: u64,
    pub denied: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.allowed += o.allowed;
        self.alerted += o.alerted;
        self.denied += o.denied;
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
    }
}

struct Ring {
    /// Minute number (seconds / 60) each bucket holds.
    minute: [u64; BUCKETS],
    counts: [Counts; BUCKETS],
}

impl Default for Ring {
    fn default() -> Self {
        Ring { minute: [0; BUCKETS], counts: [Counts::default(); BUCKETS] }
    }
}

impl Ring {
    fn at(&mut self, now_s: u64) -> &mut Counts {
        let minute = now_s / BUCKET_S;
        let i = (minute % BUCKETS as u64) as usize;
        if self.minute[i] != minute {
            self.minute[i] = minute;
            self.counts[i] = Counts::default();
        }
        &mut self.counts[i]
    }

    fn total(&self, now_s: u64) -> Counts {
        let minute = now_s / BUCKET_S;
        let mut t = Counts::default();
        for (m, c) in self.minute.iter().zip(&self.counts) {
            if *m + BUCKETS as u64 > minute && *m <= minute {
                t.add(c);
            }
        }
        t
    }
}

#[derive(Default)]
pub struct Recent {
    by_vendor: BTreeMap<String, Ring>,
}

impl Recent {
    /// Applies `f` to the vendor's bucket for `now_s` (no allocation once the vendor is known).
    fn with(&mut self, vendor: &str, now_s: u64, f: impl FnOnce(&mut Counts)) {
        if let Some(r) = self.by_vendor.get_mut(vendor) {
            f(r.at(now_s));
            return;
        }
        let mut r = Ring::default();
        f(r.at(now_s));
        self.by_vendor.insert(vendor.to_owned(), r);
    }

    /// An attempt, with its verdict (`allow`, `alert`, `deny`).
    pub fn attempt(&mut self, vendor: &str, verdict: &str, now_s: u64) {
        self.with(vendor, now_s, |c| match verdict {
            "allow" => c.allowed += 1,
            "alert" => c.alerted += 1,
            _ => c.denied += 1,
        });
    }

    pub fn bytes(&mut self, vendor: &str, out: u64, inb: u64, now_s: u64) {
        self.with(vendor, now_s, |c| {
            c.bytes_out += out;
            c.bytes_in += inb;
        });
    }

    /// The last hour, per vendor.
    pub fn last_hour(&self, now_s: u64) -> BTreeMap<&str, Counts> {
        self.by_vendor.iter().map(|(v, r)| (v.as_str(), r.total(now_s))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_hour_only() {
        let mut r = Recent::default();
        let t0 = 60 * 16_666; // the start of a minute
        r.attempt("stripe", "allow", t0);
        r.attempt("stripe", "deny", t0 + 30);
        r.bytes("stripe", 10, 20, t0 + 61);
        r.attempt("none", "alert", t0 + 3000);
        let h = r.last_hour(t0 + 3000);
        assert_eq!(h["stripe"], Counts { allowed: 1, denied: 1, alerted: 0, bytes_out: 10, bytes_in: 20 });
        assert_eq!(h["none"].alerted, 1);
        // An hour later, the first minute is gone, the second still counts.
        let h = r.last_hour(t0 + 3600 + 59);
        assert_eq!((h["stripe"].allowed, h["stripe"].bytes_out), (0, 10));
        // A bucket reused by a later minute starts from zero.
        r.attempt("stripe", "allow", t0 + 3600);
        assert_eq!(r.last_hour(t0 + 3600)["stripe"].allowed, 1);
    }
}
