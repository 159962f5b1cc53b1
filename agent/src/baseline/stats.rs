//! The numerics of baselines: exponentially weighted mean and variance of per-interval totals,
//! kept overall and per hour of the day, and the spike threshold drawn from them.
//!
//! Exponential weighting rather than a window: constant memory per statistic, no samples kept,
//! and old behaviour fades instead of falling off a cliff after N intervals.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The overall statistic forgets half its weight in a day: long enough to hold a day's rhythm
/// (so that its variance covers the day/night swing), short enough to follow a real change of
/// load within days.
const OVERALL_HALF_LIFE_S: f64 = 86_400.0;
/// An hour of the day forgets half its weight over three days of that hour: a weekly pattern's
/// weekend dip is absorbed rather than learnt as the new normal.
const HOUR_HALF_LIFE_DAYS: f64 = 3.0;
/// An hour of the day speaks for itself once it has been seen on this many days; before, the
/// overall statistic is used too (see [`Rhythm::threshold`]).
const HOUR_ESTABLISHED_DAYS: u64 = 2;
/// ... and at least this many samples, so that an hour-long interval is not judged on two.
const HOUR_ESTABLISHED_MIN: u64 = 4;

/// An exponentially weighted mean and variance (West's incremental form).
///
/// Until it has seen `1/α` samples it is their plain mean and variance: a first sample taken as
/// the mean with the full EWMA weight would dominate for weeks (half the weight after a day's
/// samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    pub mean: f64,
    pub var: f64,
    /// Samples seen (not weighted).
    pub n: u64,
}

impl Ewma {
    pub fn add(&mut self, x: f64, alpha: f64) {
        self.n = self.n.saturating_add(1);
        let a = alpha.max(1.0 / self.n as f64);
        let d = x - self.mean;
        let inc = a * d;
        self.mean += inc;
        self.var = (1.0 - a) * (self.var + d * inc);
    }

    /// `k` samples of zero at once, in closed form (an idle key closes many empty intervals, and
    /// a loop over a week of one-second intervals would stall the agent). While the plain mean
    /// applies, zeros dilute it: mean' = n·mean/(n+j), var' = n·(var + mean²)/(n+j) − mean'².
    /// After, with `b = (1-α)^k`: mean' = b·mean, var' = b·(var + mean²·(1-b)).
    pub fn add_zeros(&mut self, k: u64, alpha: f64) {
        let plain_until = if alpha > 0.0 { (1.0 / alpha).floor() as u64 } else { u64::MAX };
        let j = k.min(plain_until.saturating_sub(self.n));
        if j > 0 {
            let (n, total) = (self.n as f64, self.n.saturating_add(j) as f64);
            let mean = n * self.mean / total;
            self.var = (n * (self.var + self.mean * self.mean) / total - mean * mean).max(0.0);
            self.mean = mean;
            self.n = self.n.saturating_add(j);
        }
        let k = k - j;
        if k == 0 {
            return;
        }
        let b = (1.0 - alpha).powf(k as f64);
        self.var = b * (self.var + self.mean * self.mean * (1.0 - b));
        self.mean *= b;
        self.n = self.n.saturating_add(k);
    }

    pub fn sd(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    fn is_sane(&self) -> bool {
        self.mean.is_finite() && self.var.is_finite() && self.mean >= 0.0 && self.var >= 0.0
    }
}

/// How fast the statistics of one interval length forget, and when an hour of the day has
/// enough samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub overall: f64,
    pub hour: f64,
    pub hour_established: u64,
}

impl Rates {
    pub fn for_interval(interval: Duration) -> Self {
        let len = interval.as_secs().max(1);
        // Intervals that start in one hour of the day, per day.
        let per_hour = 3600_u64.div_ceil(len);
        Rates {
            overall: 1.0 - (-(len as f64) / OVERALL_HALF_LIFE_S).exp2(),
            hour: 1.0 - (-1.0 / (HOUR_HALF_LIFE_DAYS * per_hour as f64)).exp2(),
            hour_established: (HOUR_ESTABLISHED_DAYS * per_hour).max(HOUR_ESTABLISHED_MIN),
        }
    }
}

/// One quantity's per-interval totals: overall and per hour of the day (24 entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rhythm {
    pub overall: Ewma,
    pub by_hour: Vec<Ewma>,
}

impl Default for Rhythm {
    fn default() -> Self {
        Self { overall: Ewma::default(), by_hour: vec![Ewma::default(); 24] }
    }
}

/// Where a spike begins, and the mean it was measured against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub mean: f64,
    pub threshold: f64,
}

/// What a spike must exceed, besides the statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeRule {
    pub minimum: f64,
    pub factor: f64,
    pub sigmas: f64,
}

impl SpikeRule {
    /// `max(minimum, mean × factor, mean + sigmas × sd)`: the factor guards against a variance
    /// learnt from very regular traffic (a poller's sd is near 0), the minimum against small
    /// numbers (3 connections where there was 0.5 is no incident).
    pub fn threshold(&self, e: &Ewma) -> f64 {
        self.minimum.max(e.mean * self.factor).max(e.mean + self.sigmas * e.sd())
    }
}

impl Rhythm {
    pub fn add(&mut self, hour: usize, x: f64, r: Rates) {
        self.overall.add(x, r.overall);
        if let Some(h) = self.by_hour.get_mut(hour) {
            h.add(x, r.hour);
        }
    }

    pub fn add_zeros(&mut self, hour: usize, k: u64, r: Rates) {
        self.overall.add_zeros(k, r.overall);
        if let Some(h) = self.by_hour.get_mut(hour) {
            h.add_zeros(k, r.hour);
        }
    }

    /// The threshold for an interval in `hour`: from that hour's statistic once it is
    /// established; before, the higher of it and the overall one, so that a busy hour seen only
    /// once is not judged by a mean that the quiet night pulled down.
    pub fn threshold(&self, hour: usize, r: Rates, rule: SpikeRule) -> Threshold {
        let overall = Threshold { mean: self.overall.mean, threshold: rule.threshold(&self.overall) };
        match self.by_hour.get(hour) {
            Some(h) if h.n >= r.hour_established => Threshold { mean: h.mean, threshold: rule.threshold(h) },
            Some(h) if h.n > 0 => {
                let t = rule.threshold(h);
                if t > overall.threshold {
                    Threshold { mean: h.mean, threshold: t }
                } else {
                    overall
                }
            }
            _ => overall,
        }
    }

    /// Whether a rhythm read from a state file can be used as it is.
    pub fn is_sane(&self) -> bool {
        self.by_hour.len() == 24 && self.overall.is_sane() && self.by_hour.iter().all(Ewma::is_sane)
    }
}

/// The chance that at least `k` of `n` independent events of probability `p` happen.
pub fn binomial_tail(n: u32, p: f64, k: u32) -> f64 {
    let p = p.clamp(0.0, 1.0);
    let mut total = 0.0;
    // C(n, i) built up step by step: n is 24 here, far from overflowing an f64.
    let mut choose = 1.0;
    for i in 0..=n {
        if i >= k {
            total += choose * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32);
        }
        choose = choose * f64::from(n - i) / f64::from(i + 1);
    }
    total.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tails() {
        assert!((binomial_tail(24, 0.5, 0) - 1.0).abs() < 1e-12);
        assert!((binomial_tail(24, 0.5, 24) - 0.5f64.powi(24)).abs() < 1e-15);
        assert!((binomial_tail(2, 0.5, 1) - 0.75).abs() < 1e-12);
        assert_eq!(binomial_tail(24, 0.0, 1), 0.0);
    }

    #[test]
    fn zeros_in_closed_form_match_one_at_a_time() {
        for first in [0, 4, 30] {
            let mut a = Ewma::default();
            for x in [5.0, 9.0, 2.0, 7.0, 3.0, 8.0].iter().cycle().take(first) {
                a.add(*x, 0.1);
            }
            let mut b = a;
            for _ in 0..37 {
                a.add(0.0, 0.1);
            }
            b.add_zeros(37, 0.1);
            assert!((a.mean - b.mean).abs() < 1e-9 && (a.var - b.var).abs() < 1e-9, "{first}: {a:?} {b:?}");
            assert_eq!(a.n, b.n);
        }
    }

    #[test]
    fn the_first_samples_are_a_plain_mean() {
        let mut e = Ewma::default();
        for x in [10.0, 20.0, 30.0] {
            e.add(x, 0.01);
        }
        assert!((e.mean - 20.0).abs() < 1e-9 && (e.var - 200.0 / 3.0).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn a_constant_has_no_variance_and_the_factor_still_guards() {
        let mut e = Ewma::default();
        for _ in 0..100 {
            e.add(12.0, 0.05);
        }
        assert!((e.mean - 12.0).abs() < 1e-9 && e.sd() < 1e-9);
        let rule = SpikeRule { minimum: 20.0, factor: 4.0, sigmas: 4.0 };
        assert!((rule.threshold(&e) - 48.0).abs() < 1e-9);
    }

    #[test]
    fn five_minute_rates() {
        let r = Rates::for_interval(Duration::from_secs(300));
        assert_eq!(r.hour_established, 24);
        // Half the weight after a day of intervals (288) and after three days of an hour (36).
        assert!(((1.0 - r.overall).powi(288) - 0.5).abs() < 1e-9);
        assert!(((1.0 - r.hour).powi(36) - 0.5).abs() < 1e-9);
    }
}
