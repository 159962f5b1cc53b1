//! The baseline thresholds a policy sets (`spec.baseline`, each vendor's `baseline` and
//! `response`), resolved: defaults applied, and each vendor's overrides laid over the policy-wide
//! values.

use std::{collections::HashMap, time::Duration};

use crate::policy::{
    model::{BaselineSpec, ResponseAction},
    Merged,
};

use super::anomalies::AnomalyKind;

/// What counts as a departure for one vendor (or for every party without a vendor).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Length of a counting interval of the rate and volume statistics.
    pub interval: Duration,
    /// Nothing is flagged about a key (or a process, or a party) watched for less than this.
    pub warmup: Duration,
    /// At most one anomaly per key and kind within this.
    pub cooldown: Duration,
    /// A spike is at least `mean + sigmas × standard deviation` ...
    pub sigmas: f64,
    /// ... and at least `mean × rate_factor` connections ...
    pub rate_factor: f64,
    /// ... or `mean × volume_factor` bytes out ...
    pub volume_factor: f64,
    /// ... and at least this many connections in one interval ...
    pub min_connections: u64,
    /// ... or this many bytes out in one interval.
    pub min_bytes: u64,
    pub off_hours: bool,
    pub new_destinations: bool,
    pub new_processes: bool,
}

impl Thresholds {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
    /// A day: every hour of the day has been seen once before anything is judged.
    pub const DEFAULT_WARMUP: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(3600);

    /// These thresholds with the keys `o` gives replaced.
    pub fn overlaid(&self, o: &BaselineSpec) -> Self {
        Self {
            interval: o.interval.map_or(self.interval, |v| v.0),
            warmup: o.warmup.map_or(self.warmup, |v| v.0),
            cooldown: o.cooldown.map_or(self.cooldown, |v| v.0),
            sigmas: o.sigmas.map_or(self.sigmas, |v| v.0),
            rate_factor: o.rate_factor.map_or(self.rate_factor, |v| v.0),
            volume_factor: o.volume_factor.map_or(self.volume_factor, |v| v.0),
            min_connections: o.min_connections.map_or(self.min_connections, |v| v.0),
            min_bytes: o.min_bytes.map_or(self.min_bytes, |v| v.0),
            off_hours: o.off_hours.unwrap_or(self.off_hours),
            new_destinations: o.new_destinations.unwrap_or(self.new_destinations),
            new_processes: o.new_processes.unwrap_or(self.new_processes),
        }
    }

    /// Whether anomalies of `kind` are looked for at all.
    pub fn enabled(&self, kind: AnomalyKind) -> bool {
        match kind {
            AnomalyKind::NewDestination => self.new_destinations,
            AnomalyKind::NewProcess => self.new_processes,
            AnomalyKind::OffHours => self.off_hours,
            AnomalyKind::RateSpike | AnomalyKind::VolumeSpike => true,
        }
    }
}

impl Default for Thresholds {
    /// Quiet on ordinary noise: a spike must be four times the usual and four standard
    /// deviations above it, and large in absolute terms too (20 connections or 10 MiB out in five
    /// minutes), so that a key idling at one connection an hour is not flagged for its fifth.
    fn default() -> Self {
        Self {
            interval: Self::DEFAULT_INTERVAL,
            warmup: Self::DEFAULT_WARMUP,
            cooldown: Self::DEFAULT_COOLDOWN,
            sigmas: 4.0,
            rate_factor: 4.0,
            volume_factor: 4.0,
            min_connections: 20,
            min_bytes: 10 << 20,
            off_hours: true,
            new_destinations: true,
            new_processes: true,
        }
    }
}

/// An opt-in automated response: block the offending process's traffic to the vendor for
/// `duration` when one of the `on` kinds is flagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub on: Vec<AnomalyKind>,
    pub duration: Duration,
}

/// Every threshold of a policy, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineSettings {
    pub global: Thresholds,
    /// Hours of the day are counted in this offset (the host's business day, not UTC's).
    pub utc_offset: time::UtcOffset,
    /// Vendors with their own `baseline`, their overrides laid over `global`.
    pub vendors: HashMap<String, Thresholds>,
    /// Vendors with a `response`.
    pub responses: HashMap<String, Response>,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        Self {
            global: Thresholds::default(),
            utc_offset: time::UtcOffset::UTC,
            vendors: HashMap::new(),
            responses: HashMap::new(),
        }
    }
}

impl BaselineSettings {
    pub fn from_merged(m: &Merged) -> Self {
        let global = Thresholds::default().overlaid(&m.baseline);
        let mut vendors = HashMap::new();
        let mut responses = HashMap::new();
        for (v, _) in &m.vendors {
            if let Some(o) = &v.baseline {
                vendors.insert(v.name.0.clone(), global.overlaid(o));
            }
            if let Some(r) = &v.response {
                // `block` is the only action: a second one must be handled here before it parses.
                let ResponseAction::Block = r.action;
                responses.insert(v.name.0.clone(), Response { on: r.on.clone(), duration: r.duration.0 });
            }
        }
        Self { global, utc_offset: m.baseline.utc_offset.map_or(time::UtcOffset::UTC, |o| o.0), vendors, responses }
    }

    /// The thresholds for traffic to `vendor` (or to a party that is no vendor).
    pub fn thresholds(&self, vendor: Option<&str>) -> &Thresholds {
        vendor.and_then(|v| self.vendors.get(v)).unwrap_or(&self.global)
    }

    /// How long to block when `vendor` shows an anomaly of `kind`, if its policy asks for it.
    pub fn response(&self, vendor: &str, kind: AnomalyKind) -> Option<Duration> {
        self.responses.get(vendor).filter(|r| r.on.contains(&kind)).map(|r| r.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{merge, parse};

    fn settings(spec: &str) -> BaselineSettings {
        let text = format!("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n{spec}");
        let docs = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e:?}"));
        let (m, _) = merge(&docs).unwrap_or_else(|e| panic!("{e}"));
        BaselineSettings::from_merged(&m)
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        assert_eq!(settings("  mode: monitor\n"), BaselineSettings::default());
        let t = Thresholds::default();
        assert_eq!((t.interval.as_secs(), t.warmup.as_secs(), t.cooldown.as_secs()), (300, 86_400, 3600));
        assert_eq!((t.min_connections, t.min_bytes), (20, 10 * 1024 * 1024));
    }

    #[test]
    fn vendor_overrides_lie_over_the_policy_values() {
        let s = settings(
            "  baseline: {interval: 1m, sigmas: 3, minBytes: 1MiB, utcOffset: \"-05:00\"}\n  vendors:\n    - name: stripe\n      owner: payments\n      destinations: [{domain: api.stripe.com}]\n      baseline: {minBytes: 512KiB, offHours: false}\n      response: {on: [volume_spike], action: block, for: 10m}\n    - name: plain\n      owner: x\n      destinations: [{cidr: 1.1.1.1}]\n",
        );
        assert_eq!(s.global.interval, Duration::from_secs(60));
        assert_eq!(s.utc_offset, time::macros::offset!(-5));
        let stripe = s.thresholds(Some("stripe"));
        assert_eq!((stripe.min_bytes, stripe.sigmas, stripe.off_hours), (512 * 1024, 3.0, false));
        assert_eq!(stripe.interval, Duration::from_secs(60));
        assert_eq!(s.thresholds(Some("plain")), &s.global);
        assert_eq!(s.thresholds(None).min_bytes, 1 << 20);
        assert_eq!(s.response("stripe", AnomalyKind::VolumeSpike), Some(Duration::from_secs(600)));
        assert_eq!(s.response("stripe", AnomalyKind::RateSpike), None);
        assert_eq!(s.response("plain", AnomalyKind::VolumeSpike), None);
    }
}
