//! The policy's anomaly-detection settings (`spec.baseline`, a vendor's `baseline`) and
//! automated responses (`response`), checked while they are deserialized like the rest of the
//! model (see [`super::model`]).

use std::{str::FromStr, time::Duration};

use serde::Deserialize;

pub use crate::baseline::anomalies::AnomalyKind;

/// `spec.baseline`, and a vendor's `baseline` (which may not set `utcOffset`: one clock for the
/// host): how anomalies are told from an integration's ordinary rhythm. Every key is optional;
/// unset ones take the defaults of [`crate::baseline::settings::Thresholds`] (a vendor's, those
/// of `spec.baseline`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BaselineSpec {
    #[serde(default)]
    pub interval: Option<Interval>,
    #[serde(default)]
    pub warmup: Option<Warmup>,
    #[serde(default)]
    pub cooldown: Option<Cooldown>,
    #[serde(default)]
    pub sigmas: Option<Sigmas>,
    #[serde(default)]
    pub rate_factor: Option<Factor>,
    #[serde(default)]
    pub volume_factor: Option<Factor>,
    #[serde(default)]
    pub min_connections: Option<MinConnections>,
    #[serde(default)]
    pub min_bytes: Option<ByteSize>,
    #[serde(default)]
    pub off_hours: Option<bool>,
    #[serde(default)]
    pub new_destinations: Option<bool>,
    #[serde(default)]
    pub new_processes: Option<bool>,
    /// Hours of the day are counted in this offset from UTC.
    #[serde(default)]
    pub utc_offset: Option<Offset>,
}

/// `spec.vendors[].response`: what the agent does by itself when this vendor's traffic departs
/// from its baseline. Off unless given.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// The anomaly kinds that trigger it.
    pub on: Vec<AnomalyKind>,
    pub action: ResponseAction,
    /// How long the action lasts.
    #[serde(rename = "for")]
    pub duration: ResponseFor,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResponseAction {
    /// Refuse the process's connections to the vendor for a while.
    Block,
}

/// A duration: a number followed by `s`, `m`, `h` or `d` (a bare number is seconds).
fn parse_duration(field: &str, s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].trim_start()),
        None => (t, "s"),
    };
    let mult: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!("{field} `{s}`: expected seconds (`30s`), minutes (`5m`), hours (`1h`) or days (`1d`)"))
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("{field} `{s}`: expected a number then s, m, h or d"))?;
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Checks a duration against its bounds, with a message that says why they exist.
fn bounded(field: &str, s: &str, min: Duration, max: Duration, why: &str) -> Result<Duration, String> {
    let d = parse_duration(field, s)?;
    if d < min || d > max {
        return Err(format!("{field} `{s}` is out of range {}..{}: {why}", show_secs(min), show_secs(max)));
    }
    Ok(d)
}

fn show_secs(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `interval`: the counting interval of the rate and volume statistics, 1s to 1h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        bounded(
            "interval",
            s,
            Duration::from_secs(1),
            Duration::from_secs(3600),
            "intervals are counted per hour of the day, so one cannot be longer than an hour",
        )
        .map(Interval)
    }
}

/// `warmup`: how long a key is watched before anything about it is flagged; 0s to 90 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warmup(pub Duration);

impl FromStr for Warmup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        bounded(
            "warmup",
            s,
            Duration::ZERO,
            Duration::from_secs(90 * 86_400),
            "a longer warm-up never ends in practice",
        )
        .map(Warmup)
    }
}

/// `cooldown`: the shortest time between two anomalies of one kind for one key; 1s to 7 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown(pub Duration);

impl FromStr for Cooldown {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        bounded(
            "cooldown",
            s,
            Duration::from_secs(1),
            Duration::from_secs(7 * 86_400),
            "without one every connection of a burst is reported; longer hides a week of repeats",
        )
        .map(Cooldown)
    }
}

/// `for` of a response: how long an automated block lasts; 1s to 24h, so that a false alarm
/// never cuts an integration off for longer than a day without a person deciding to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFor(pub Duration);

impl FromStr for ResponseFor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        bounded(
            "for",
            s,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
            "an automated block must end within a day; block for longer in the policy itself",
        )
        .map(ResponseFor)
    }
}

/// Parses a finite number from text.
fn parse_number(field: &str, s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{field} `{s}`: expected a number")),
    }
}

/// `sigmas`: standard deviations above the mean a spike must reach; above 0, at most 100.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sigmas(pub f64);

impl FromStr for Sigmas {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let x = parse_number("sigmas", s)?;
        if !(x > 0.0 && x <= 100.0) {
            return Err(format!("sigmas `{s}` must be above 0 and at most 100"));
        }
        Ok(Sigmas(x))
    }
}

/// `rateFactor`, `volumeFactor`: how many times the mean a spike must reach; 1 to 1000 (below 1
/// the ordinary mean itself would be a spike).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factor(pub f64);

impl FromStr for Factor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let x = parse_number("factor", s)?;
        if !(1.0..=1000.0).contains(&x) {
            return Err(format!("factor `{s}` must be from 1 to 1000: below 1 the ordinary mean would be a spike"));
        }
        Ok(Factor(x))
    }
}

/// `minConnections`: connections in one interval below which there is never a rate spike; at
/// least 1, since a key whose mean is 0 would otherwise flag its first connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinConnections(pub u64);

impl FromStr for MinConnections {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(MinConnections(n)),
            _ => Err(format!("minConnections `{s}`: expected a whole number of connections, at least 1")),
        }
    }
}

/// A byte count: a whole number, optionally followed by `B`, `KiB`, `MiB` or `GiB`; at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => (&t[..i], t[i..].trim_start()),
            None => (t, "B"),
        };
        let mult: u64 = match unit {
            "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(format!("bytes `{s}`: expected a number of bytes, or one followed by KiB, MiB or GiB")),
        };
        let n: u64 = num.parse().map_err(|_| format!("bytes `{s}`: expected a number then B, KiB, MiB or GiB"))?;
        match n.checked_mul(mult) {
            Some(b) if b >= 1 => Ok(ByteSize(b)),
            Some(_) => Err(format!("bytes `{s}` must be at least 1: with 0 an idle key's first byte is a spike")),
            None => Err(format!("bytes `{s}` is too large")),
        }
    }
}

/// An offset from UTC, `+HH:MM` or `-HH:MM` (`Z` for UTC), at most 23:59 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(pub time::UtcOffset);

impl FromStr for Offset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "Z" {
            return Ok(Offset(time::UtcOffset::UTC));
        }
        let bad = || format!("utcOffset `{s}`: expected +HH:MM or -HH:MM, such as \"+00:00\" or \"-05:00\"");
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'+') => (1i8, &t[1..]),
            Some(b'-') => (-1i8, &t[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i8 = h.parse().map_err(|_| bad())?;
        let m: i8 = m.parse().map_err(|_| bad())?;
        if !(0..=23).contains(&h) || !(0..=59).contains(&m) {
            return Err(bad());
        }
        time::UtcOffset::from_hms(sign * h, sign * m, 0).map(Offset).map_err(|_| bad())
    }
}
