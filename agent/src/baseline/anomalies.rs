//! Baselines of each (process, party) pair, and the anomalies that depart from them.
//!
//! A *key* is a process identity (its executable path, or `comm:NAME` when unknown) and a party
//! (a vendor's name, else a registrable domain, else the address). For each key this keeps, per
//! counting interval (`interval`, 5 minutes by default), the connections made and the bytes sent
//! and received; closed intervals, empty ones included, feed an exponentially weighted mean and
//! variance, overall and per hour of the day (see [`super::stats`]). It also counts connections
//! per hour of the week. Per process it keeps the destinations reached, per party the processes
//! that called it.
//!
//! The anomalies:
//! - `new_destination`: a process watched for at least `warmup` reaches a destination (domain
//!   name, else address) it never reached before, under any party.
//! - `new_process`: a party known for at least `warmup` is called by a process that never called
//!   it before.
//! - `rate_spike`: a key's connections in the current interval reach
//!   `max(minConnections, mean × rateFactor, mean + sigmas × sd)`, flagged the moment the running
//!   total gets there. Needs `warmup` and three closed intervals of history.
//! - `volume_spike`: the same for bytes out, against `minBytes` and `volumeFactor`.
//! - `off_hours`: a connection in an hour of the day (in `utcOffset`) in which the key never made
//!   one. Besides `warmup`, needs a full day watched and evidence that the key's quiet hours are
//!   a rhythm, not chance: were its activity spread over the day at random (at the rate it had),
//!   as many hours of the day as it left quiet would all have stayed quiet on every day watched
//!   with a chance below 1 in 1000. A key busy eight hours a day is judged after three days; one
//!   that calls out now and then at random, practically never.
//!
//! Each kind is reported at most once per key per `cooldown`. Memory is bounded: at most
//! [`MAX_KEYS`] keys, [`MAX_PROCESSES`] processes and [`MAX_PARTIES`] parties, each evicting the
//! least recently active; at most [`MAX_DESTINATIONS`] destinations per process and
//! [`MAX_CALLERS`] processes per party, beyond which new ones are counted but not flagged. An
//! evicted entry that comes back starts its warm-up again: eviction errs on the quiet side.

use std::{
    collections::BTreeSet,
    fmt, io,
    num::NonZeroUsize,
    path::{Path, PathBuf},
};

use lru::LruCache;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    settings::{BaselineSettings, Thresholds},
    stats::{binomial_tail, Rates, Rhythm, SpikeRule},
};
use crate::statefile;

pub const MAX_KEYS: usize = 4096;
pub const MAX_PROCESSES: usize = 1024;
pub const MAX_PARTIES: usize = 1024;
pub const MAX_DESTINATIONS: usize = 256;
pub const MAX_CALLERS: usize = 256;
/// Closed intervals a key needs before its spikes are judged: a mean of one interval is noise.
const MIN_HISTORY: u64 = 3;
/// See the module documentation, `off_hours`.
const OFF_HOURS_CHANCE: f64 = 0.001;
/// Empty intervals are folded into the statistics at most this far back: after a week of
/// silence the weights have decayed to nothing anyway, and the folding is per hour of the gap.
const MAX_GAP_S: i64 = 7 * 86_400;

pub const STATE_FILE: &str = "baselines.json";
const STATE_KIND: &str = "baselines";
const STATE_VERSION: u32 = 1;

/// One connection or flow report, as the baselines see it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Process identity: the executable path, or `comm:NAME` when it is unknown.
    pub process: &'a str,
    /// Vendor name, else registrable domain, else the address.
    pub party: &'a str,
    pub vendor: Option<&'a str>,
    /// Domain name if known, else the address text.
    pub destination: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    NewDestination,
    NewProcess,
    RateSpike,
    VolumeSpike,
    OffHours,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::NewDestination,
        AnomalyKind::NewProcess,
        AnomalyKind::RateSpike,
        AnomalyKind::VolumeSpike,
        AnomalyKind::OffHours,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::NewDestination => "new_destination",
            AnomalyKind::NewProcess => "new_process",
            AnomalyKind::RateSpike => "rate_spike",
            AnomalyKind::VolumeSpike => "volume_spike",
            AnomalyKind::OffHours => "off_hours",
        }
    }

    /// What `baseline`, `observed` and `threshold` of an anomaly of this kind count.
    pub fn unit(self) -> &'static str {
        match self {
            AnomalyKind::NewDestination => "destinations",
            AnomalyKind::NewProcess => "processes",
            AnomalyKind::RateSpike => "connections per interval",
            AnomalyKind::VolumeSpike => "bytes out per interval",
            AnomalyKind::OffHours => "hour of day",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A departure from a key's baseline.
///
/// - spikes: `baseline` is the mean per interval it was judged against, `observed` the running
///   total of the current interval, `threshold` where a spike begins;
/// - `new_destination` / `new_process`: `baseline` and `threshold` are the destinations the
///   process reached (processes that called the party) before, `observed` that plus this one;
/// - `off_hours`: `observed` is the hour of the day, `baseline` the number of hours of the day
///   the key is active in, `threshold` 0 (the connections it had made in this hour).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub process: String,
    pub party: String,
    pub vendor: Option<String>,
    pub destination: String,
    pub baseline: f64,
    pub observed: f64,
    pub threshold: f64,
    pub unit: &'static str,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Counts {
    connections: u64,
    bytes_out: u64,
    bytes_in: u64,
}

/// What is learnt about one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct KeyStats {
    vendor: Option<String>,
    /// Unix seconds; kept so that warm-up survives a restart.
    first_seen: i64,
    last_seen: i64,
    /// The interval length the statistics below count in; when the policy changes it, they
    /// start again (a mean per minute is no mean per five minutes).
    interval_s: u64,
    /// Index (unix seconds / interval) of the interval being counted, and its running totals.
    open_interval: i64,
    open: Counts,
    /// Intervals closed into the statistics.
    closed: u64,
    connections: Rhythm,
    bytes_out: Rhythm,
    bytes_in: Rhythm,
    /// Connections per hour of the week (Monday 00h first, in `utcOffset`).
    hours_of_week: Vec<u32>,
    /// Distinct clock hours with a connection, and the last of them (hours since the epoch).
    active_hours: u64,
    last_active_hour: i64,
    /// When each kind was last reported (unix seconds), by [`AnomalyKind::index`].
    flagged: [Option<i64>; 5],
}

impl KeyStats {
    fn new(t: i64, interval_s: u64, vendor: Option<&str>) -> Self {
        Self {
            vendor: vendor.map(str::to_owned),
            first_seen: t,
            last_seen: t,
            interval_s,
            open_interval: t.div_euclid(interval_len(interval_s)),
            open: Counts::default(),
            closed: 0,
            connections: Rhythm::default(),
            bytes_out: Rhythm::default(),
            bytes_in: Rhythm::default(),
            hours_of_week: vec![0; 168],
            active_hours: 0,
            last_active_hour: i64::MIN,
            flagged: [None; 5],
        }
    }

    fn warmed(&self, t: i64, th: &Thresholds) -> bool {
        age_at_least(self.first_seen, t, th)
    }

    /// Closes the intervals that ended before `t`: the open one with its totals, the empty ones
    /// after it as zeros.
    fn roll(&mut self, t: i64, th: &Thresholds, offset_s: i64) {
        let want = th.interval.as_secs().max(1);
        if self.interval_s != want {
            self.interval_s = want;
            self.open_interval = t.div_euclid(interval_len(want));
            self.open = Counts::default();
            self.closed = 0;
            self.connections = Rhythm::default();
            self.bytes_out = Rhythm::default();
            self.bytes_in = Rhythm::default();
            return;
        }
        let len = interval_len(want);
        let now = t.div_euclid(len);
        // A clock that stepped back keeps counting into the open interval.
        if now <= self.open_interval {
            return;
        }
        let rates = Rates::for_interval(th.interval);
        let hour = hour_of_day(self.open_interval * len, offset_s);
        self.connections.add(hour, self.open.connections as f64, rates);
        self.bytes_out.add(hour, self.open.bytes_out as f64, rates);
        self.bytes_in.add(hour, self.open.bytes_in as f64, rates);
        self.closed = self.closed.saturating_add(1);
        let mut i = (self.open_interval + 1).max(now - MAX_GAP_S / len);
        while i < now {
            // The empty intervals that start in the same hour of the day, at once.
            let start = i * len;
            let local = start + offset_s;
            let next_hour = (local.div_euclid(3600) + 1) * 3600 - offset_s;
            let end = ((next_hour + len - 1).div_euclid(len)).min(now);
            let k = (end - i).unsigned_abs();
            let h = hour_of_day(start, offset_s);
            self.connections.add_zeros(h, k, rates);
            self.bytes_out.add_zeros(h, k, rates);
            self.bytes_in.add_zeros(h, k, rates);
            self.closed = self.closed.saturating_add(k);
            i = end;
        }
        self.open_interval = now;
        self.open = Counts::default();
    }

    /// The hour of the day the open interval started in: the statistics it is judged by.
    fn open_hour(&self, offset_s: i64) -> usize {
        hour_of_day(self.open_interval.saturating_mul(interval_len(self.interval_s)), offset_s)
    }

    /// Whether the key's quiet hours are a rhythm rather than chance (see the module
    /// documentation): under "activity falls in any hour alike", each hour of the day stays
    /// quiet on all `days` watched with chance `q = (1 - p)^days`, `p` the share of the key's
    /// watched clock hours that had a connection; the hours quiet so far must be improbably many.
    fn off_hours_armed(&self, t: i64) -> bool {
        let watched_hours = (t - self.first_seen).max(0) / 3600;
        let days = watched_hours / 24;
        if days < 1 {
            return false;
        }
        let p = (self.active_hours as f64 / watched_hours as f64).min(1.0);
        let q = (1.0 - p).powf(days as f64);
        let quiet = 24 - self.hours_of_day_active() as u32;
        quiet > 0 && binomial_tail(24, q, quiet) <= OFF_HOURS_CHANCE
    }

    fn active_in_hour_of_day(&self, hour: usize) -> bool {
        (0..7).any(|d| self.hours_of_week.get(d * 24 + hour).is_some_and(|&n| n > 0))
    }

    fn hours_of_day_active(&self) -> usize {
        (0..24).filter(|&h| self.active_in_hour_of_day(h)).count()
    }

    fn record_connection(&mut self, t: i64, offset_s: i64) {
        let local_hour = (t + offset_s).div_euclid(3600);
        if local_hour != self.last_active_hour {
            self.active_hours = self.active_hours.saturating_add(1);
            self.last_active_hour = local_hour;
        }
        if let Some(n) = self.hours_of_week.get_mut(hour_of_week(t, offset_s)) {
            *n = n.saturating_add(1);
        }
    }

    /// Whether `kind` may be reported now (and if so, marks it reported).
    fn may_report(&mut self, kind: AnomalyKind, t: i64, th: &Thresholds) -> bool {
        let slot = &mut self.flagged[kind.index()];
        let cooldown = i64::try_from(th.cooldown.as_secs()).unwrap_or(i64::MAX);
        if slot.is_some_and(|last| t.saturating_sub(last) < cooldown && t >= last) {
            return false;
        }
        *slot = Some(t);
        true
    }

    /// Makes a record read from a file safe to use: the right lengths, sane numbers.
    fn repair(&mut self) {
        for r in [&mut self.connections, &mut self.bytes_out, &mut self.bytes_in] {
            if !r.is_sane() {
                *r = Rhythm::default();
            }
        }
        self.hours_of_week.resize(168, 0);
        self.interval_s = self.interval_s.max(1);
    }
}

/// What is known about a process: when it was first seen and the destinations it reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ProcessRecord {
    first_seen: i64,
    destinations: BTreeSet<String>,
    /// New destinations not recorded because the set was full.
    unrecorded: u64,
}

/// What is known about a party: when it was first seen and the processes that called it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PartyRecord {
    first_seen: i64,
    callers: BTreeSet<String>,
    unrecorded: u64,
}

/// Adds `item` to a bounded set: whether it is new, and how many the set held before. A full
/// set counts it in `unrecorded` and says it is not new, so that nothing is flagged for it.
fn remember(set: &mut BTreeSet<String>, unrecorded: &mut u64, item: &str, cap: usize) -> Option<usize> {
    if set.contains(item) {
        return None;
    }
    if set.len() >= cap {
        *unrecorded = unrecorded.saturating_add(1);
        return None;
    }
    let before = set.len();
    set.insert(item.to_owned());
    Some(before)
}

fn age_at_least(first_seen: i64, t: i64, th: &Thresholds) -> bool {
    let warmup = i64::try_from(th.warmup.as_secs()).unwrap_or(i64::MAX);
    t.saturating_sub(first_seen) >= warmup
}

fn interval_len(interval_s: u64) -> i64 {
    i64::try_from(interval_s).unwrap_or(i64::MAX).max(1)
}

fn hour_of_day(unix_s: i64, offset_s: i64) -> usize {
    (unix_s + offset_s).div_euclid(3600).rem_euclid(24) as usize
}

fn hour_of_week(unix_s: i64, offset_s: i64) -> usize {
    // Day 0 of the epoch was a Thursday: 3 days after a Monday.
    let day = (unix_s + offset_s).div_euclid(86_400);
    (day + 3).rem_euclid(7) as usize * 24 + hour_of_day(unix_s, offset_s)
}

fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// An entry of a bounded map in the state file.
#[derive(Serialize, Deserialize)]
struct Entry<K, V> {
    key: K,
    value: V,
}

/// The state file's content; each list runs from least to most recently active.
#[derive(Serialize)]
struct StateOut<'a> {
    keys: Vec<Entry<(&'a str, &'a str), &'a KeyStats>>,
    processes: Vec<Entry<&'a str, &'a ProcessRecord>>,
    parties: Vec<Entry<&'a str, &'a PartyRecord>>,
    evicted: u64,
}

#[derive(Deserialize)]
struct StateIn {
    keys: Vec<Entry<(String, String), KeyStats>>,
    processes: Vec<Entry<String, ProcessRecord>>,
    parties: Vec<Entry<String, PartyRecord>>,
    evicted: u64,
}

/// The learnt baselines of every key, and the settings they are judged by. One owner: the
/// event loop feeds it observations and ticks, and saves it now and then.
pub struct Baselines {
    settings: BaselineSettings,
    keys: LruCache<(String, String), KeyStats>,
    processes: LruCache<String, ProcessRecord>,
    parties: LruCache<String, PartyRecord>,
    evicted: u64,
    /// The state file could not be read at start: it is left for a person to look at rather
    /// than overwritten (see [`statefile::load`]).
    keep_file: Option<PathBuf>,
}

impl Baselines {
    pub fn new(settings: BaselineSettings) -> Self {
        Self {
            settings,
            keys: LruCache::new(capacity(MAX_KEYS)),
            processes: LruCache::new(capacity(MAX_PROCESSES)),
            parties: LruCache::new(capacity(MAX_PARTIES)),
            evicted: 0,
            keep_file: None,
        }
    }

    /// The fill of its tables.
    pub fn fill(&self) -> [crate::memory::CacheFill; 3] {
        use crate::memory::CacheFill;
        [
            CacheFill::new("baseline_keys", self.keys.len(), self.keys.cap().get()),
            CacheFill::new("baseline_processes", self.processes.len(), self.processes.cap().get()),
            CacheFill::new("baseline_parties", self.parties.len(), self.parties.cap().get()),
        ]
    }

    /// New settings after a policy reload. What was learnt is kept; a key whose interval length
    /// changed starts its rate and volume statistics again at its next observation.
    pub fn set_settings(&mut self, s: BaselineSettings) {
        self.settings = s;
    }

    pub fn settings(&self) -> &BaselineSettings {
        &self.settings
    }

    /// A connection: may report `new_destination`, `new_process`, `rate_spike`, `off_hours`.
    pub fn on_connect(&mut self, now: OffsetDateTime, o: &Observation) -> Vec<Anomaly> {
        let t = now.unix_timestamp();
        let th = *self.settings.thresholds(o.vendor);
        let offset_s = i64::from(self.settings.utc_offset.whole_seconds());
        let mut found: Vec<(AnomalyKind, f64, f64, f64)> = Vec::new();

        // A party or process seen for the first time has no callers or destinations to depart
        // from, even with no warm-up.
        let (party, party_new) = self.party(o.party, t);
        let party_warm = !party_new && age_at_least(party.first_seen, t, &th);
        if let Some(before) = remember(&mut party.callers, &mut party.unrecorded, o.process, MAX_CALLERS) {
            if th.new_processes && party_warm {
                let b = before as f64;
                found.push((AnomalyKind::NewProcess, b, b + 1.0, b));
            }
        }
        let (process, process_new) = self.process(o.process, t);
        let process_warm = !process_new && age_at_least(process.first_seen, t, &th);
        if let Some(before) =
            remember(&mut process.destinations, &mut process.unrecorded, o.destination, MAX_DESTINATIONS)
        {
            if th.new_destinations && process_warm {
                let b = before as f64;
                found.push((AnomalyKind::NewDestination, b, b + 1.0, b));
            }
        }

        let key = self.key(o, t, &th);
        key.roll(t, &th, offset_s);
        key.last_seen = t;
        key.vendor = o.vendor.map(str::to_owned);
        let warm = key.warmed(t, &th);
        let hour = hour_of_day(t, offset_s);
        if th.off_hours && warm && !key.active_in_hour_of_day(hour) && key.off_hours_armed(t) {
            found.push((AnomalyKind::OffHours, key.hours_of_day_active() as f64, hour as f64, 0.0));
        }
        key.record_connection(t, offset_s);
        key.open.connections = key.open.connections.saturating_add(1);
        if warm && key.closed >= MIN_HISTORY {
            let hour = key.open_hour(offset_s);
            let (minimum, factor) = (th.min_connections, th.rate_factor);
            found.extend(spike(
                AnomalyKind::RateSpike,
                &key.connections,
                hour,
                &th,
                minimum,
                factor,
                key.open.connections,
            ));
        }
        report(key, o, t, &th, found)
    }

    /// Bytes a flow moved since its last report: may report `volume_spike`.
    pub fn on_bytes(&mut self, now: OffsetDateTime, o: &Observation, bytes_out: u64, bytes_in: u64) -> Vec<Anomaly> {
        let t = now.unix_timestamp();
        let th = *self.settings.thresholds(o.vendor);
        let offset_s = i64::from(self.settings.utc_offset.whole_seconds());
        let key = self.key(o, t, &th);
        key.roll(t, &th, offset_s);
        key.last_seen = t;
        key.open.bytes_out = key.open.bytes_out.saturating_add(bytes_out);
        key.open.bytes_in = key.open.bytes_in.saturating_add(bytes_in);
        let mut found = Vec::new();
        if bytes_out > 0 && key.warmed(t, &th) && key.closed >= MIN_HISTORY {
            let hour = key.open_hour(offset_s);
            let (minimum, factor) = (th.min_bytes, th.volume_factor);
            found.extend(spike(
                AnomalyKind::VolumeSpike,
                &key.bytes_out,
                hour,
                &th,
                minimum,
                factor,
                key.open.bytes_out,
            ));
        }
        report(key, o, t, &th, found)
    }

    /// Closes every key's elapsed intervals, empty ones too, so that a key that went quiet has
    /// its quiet counted before its next burst is judged.
    pub fn tick(&mut self, now: OffsetDateTime) {
        let t = now.unix_timestamp();
        let offset_s = i64::from(self.settings.utc_offset.whole_seconds());
        // `iter_mut` leaves the recency order alone: a tick is no activity.
        for (_, key) in self.keys.iter_mut() {
            let th = self.settings.thresholds(key.vendor.as_deref());
            key.roll(t, th, offset_s);
        }
    }

    /// Writes the learnt state to `dir`/[`STATE_FILE`] atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let path = dir.join(STATE_FILE);
        if let Some(kept) = self.keep_file.as_ref().filter(|k| **k == path) {
            return Err(io::Error::other(format!(
                "{} was unreadable at start and is kept for inspection; move it away to save baselines",
                kept.display()
            )));
        }
        let state = StateOut {
            keys: self.keys.iter().rev().map(|((p, q), v)| Entry { key: (p.as_str(), q.as_str()), value: v }).collect(),
            processes: self.processes.iter().rev().map(|(k, v)| Entry { key: k.as_str(), value: v }).collect(),
            parties: self.parties.iter().rev().map(|(k, v)| Entry { key: k.as_str(), value: v }).collect(),
            evicted: self.evicted,
        };
        statefile::save(&path, STATE_KIND, STATE_VERSION, &state)
    }

    /// Reads the state saved in `dir`. Never fails: an unusable file is set aside (or, when it
    /// cannot even be moved, left alone) and learning starts afresh, with a warning saying so.
    pub fn load(dir: &Path, settings: BaselineSettings) -> (Self, Option<String>) {
        let path = dir.join(STATE_FILE);
        let mut b = Self::new(settings);
        match statefile::load::<StateIn>(&path, STATE_KIND, STATE_VERSION) {
            Ok(statefile::Loaded::Absent) => (b, None),
            Ok(statefile::Loaded::Read(s)) => {
                b.restore(s);
                (b, None)
            }
            Ok(statefile::Loaded::SetAside { reason, moved_to }) => {
                let w = format!(
                    "{}: {reason}; set aside as {}; baselines are learnt afresh",
                    path.display(),
                    moved_to.display()
                );
                (b, Some(w))
            }
            Err(e) => {
                let w = format!(
                    "{}: cannot read: {e}; baselines are learnt afresh and the file is not overwritten",
                    path.display()
                );
                b.keep_file = Some(path);
                (b, Some(w))
            }
        }
    }

    /// Keys held now.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Keys evicted to make room for others, since the state began (saved with it).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn restore(&mut self, s: StateIn) {
        // Oldest first, so that the least recently active is evicted first again.
        for Entry { key, mut value } in s.keys {
            value.repair();
            self.keys.push(key, value);
        }
        for Entry { key, mut value } in s.processes {
            trim(&mut value.destinations, MAX_DESTINATIONS);
            self.processes.push(key, value);
        }
        for Entry { key, mut value } in s.parties {
            trim(&mut value.callers, MAX_CALLERS);
            self.parties.push(key, value);
        }
        self.evicted = s.evicted;
    }

    fn key(&mut self, o: &Observation, t: i64, th: &Thresholds) -> &mut KeyStats {
        let k = (o.process.to_owned(), o.party.to_owned());
        if self.keys.len() >= MAX_KEYS && !self.keys.contains(&k) {
            self.evicted = self.evicted.saturating_add(1);
        }
        self.keys.get_or_insert_mut(k, || KeyStats::new(t, th.interval.as_secs().max(1), o.vendor))
    }

    /// The record of a process, and whether it was just created.
    fn process(&mut self, name: &str, t: i64) -> (&mut ProcessRecord, bool) {
        let new = !self.processes.contains(name);
        (
            self.processes.get_or_insert_mut(name.to_owned(), || ProcessRecord { first_seen: t, ..Default::default() }),
            new,
        )
    }

    fn party(&mut self, name: &str, t: i64) -> (&mut PartyRecord, bool) {
        let new = !self.parties.contains(name);
        (self.parties.get_or_insert_mut(name.to_owned(), || PartyRecord { first_seen: t, ..Default::default() }), new)
    }
}

fn trim(set: &mut BTreeSet<String>, cap: usize) {
    while set.len() > cap {
        set.pop_last();
    }
}

/// The anomalies found for a key that its cooldowns let through.
/// The spike test of one counter: the open interval's running total `observed` against the
/// threshold its rhythm gives for `hour`; (kind, baseline mean, observed, threshold) if reached.
fn spike(
    kind: AnomalyKind,
    rhythm: &Rhythm,
    hour: usize,
    th: &Thresholds,
    minimum: u64,
    factor: f64,
    observed: u64,
) -> Option<(AnomalyKind, f64, f64, f64)> {
    let rule = SpikeRule { minimum: minimum as f64, factor, sigmas: th.sigmas };
    let at = rhythm.threshold(hour, Rates::for_interval(th.interval), rule);
    let observed = observed as f64;
    (observed >= at.threshold).then_some((kind, at.mean, observed, at.threshold))
}

fn report(
    key: &mut KeyStats,
    o: &Observation,
    t: i64,
    th: &Thresholds,
    found: Vec<(AnomalyKind, f64, f64, f64)>,
) -> Vec<Anomaly> {
    found
        .into_iter()
        .filter(|(kind, ..)| key.may_report(*kind, t, th))
        .map(|(kind, baseline, observed, threshold)| Anomaly {
            kind,
            process: o.process.to_owned(),
            party: o.party.to_owned(),
            vendor: o.vendor.map(str::to_owned),
            destination: o.destination.to_owned(),
            baseline,
            observed,
            threshold,
            unit: kind.unit(),
        })
        .collect()
}

#[cfg(test)]
#[path = "anomalies_tests.rs"]
mod tests;
