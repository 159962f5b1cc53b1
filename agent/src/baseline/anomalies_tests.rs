//! Tests of the baseline engine: synthetic series with an injected clock.
use std::time::Duration;

use super::*;

/// Monday 2026-11-23 00:00 UTC.
const T0: i64 = 1_795_392_000;
const DAY: i64 = 86_400;
const STEP: i64 = 300;
/// Noise tests run on several series, so that passing is not one lucky draw.
const SEEDS: [u64; 5] = [1, 2, 3, 42, 1234];

fn at(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).expect("valid time")
}

fn obs<'a>(process: &'a str, party: &'a str, destination: &'a str) -> Observation<'a> {
    Observation { process, party, vendor: Some(party), destination }
}

/// A small deterministic generator (xorshift), so that noise tests do not flake.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // A small seed's first outputs are near 0: spread it over the word first.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Poisson sample (Knuth): connections in an interval of ordinary traffic.
    fn poisson(&mut self, mean: f64) -> u64 {
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = self.unit();
        while p > limit {
            k += 1;
            p *= self.unit();
        }
        k
    }
}

/// Feeds `per_interval(t)` connections in each interval from `from` to `to`, spread over the
/// interval, each with `bytes(rng)` out, ticking at every interval; returns every anomaly.
fn feed(
    b: &mut Baselines,
    o: &Observation,
    from: i64,
    to: i64,
    rng: &mut Rng,
    mut per_interval: impl FnMut(i64, &mut Rng) -> u64,
    mut bytes: impl FnMut(&mut Rng) -> u64,
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        b.tick(at(t));
        let n = per_interval(t, rng);
        for i in 0..n {
            let when = at(t + (i as i64 * STEP) / n as i64);
            out.extend(b.on_connect(when, o));
            out.extend(b.on_bytes(when, o, bytes(rng), 1000));
        }
        t += STEP;
    }
    out
}

fn assert_close(a: &serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{x} != {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).for_each(|(x, y)| assert_close(x, y));
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            x.iter().zip(y.values()).for_each(|((_, x), y)| assert_close(x, y));
        }
        _ => assert_eq!(a, b),
    }
}

fn kinds(a: &[Anomaly]) -> Vec<AnomalyKind> {
    a.iter().map(|a| a.kind).collect()
}

#[test]
fn a_rate_spike_is_flagged_at_once_and_folded() {
    let mut b = Baselines::new(BaselineSettings::default());
    let o = obs("/opt/billing/bin/api", "stripe", "api.stripe.com");
    let mut rng = Rng::new(7);
    let quiet = feed(&mut b, &o, T0, T0 + 3 * DAY, &mut rng, |_, r| r.poisson(10.0), |_| 2000);
    assert!(quiet.is_empty(), "{quiet:?}");
    // A burst of 200 connections in one interval: flagged once it crosses the threshold.
    let t = T0 + 3 * DAY;
    b.tick(at(t));
    let mut found = Vec::new();
    for i in 0..200 {
        found.extend(b.on_connect(at(t + i), &o));
    }
    assert_eq!(kinds(&found), [AnomalyKind::RateSpike], "{found:?}");
    let a = &found[0];
    assert!(a.threshold >= 4.0 * a.baseline && a.observed >= a.threshold && a.observed < 60.0, "{a:?}");
    assert!((8.0..12.0).contains(&a.baseline), "{a:?}");
    assert_eq!(
        (a.unit, a.vendor.as_deref(), a.destination.as_str()),
        ("connections per interval", Some("stripe"), "api.stripe.com")
    );
    // The next interval's burst falls in the cooldown; one after it is reported again.
    let again: Vec<_> = (0..200).flat_map(|i| b.on_connect(at(t + STEP + i), &o)).collect();
    assert!(again.is_empty(), "{again:?}");
    let later: Vec<_> = (0..200).flat_map(|i| b.on_connect(at(t + 3600 + STEP + i), &o)).collect();
    assert_eq!(kinds(&later), [AnomalyKind::RateSpike]);
}

#[test]
fn a_volume_spike_is_flagged() {
    let mut b = Baselines::new(BaselineSettings::default());
    let o = obs("/usr/bin/rclone", "backblaze", "s3.us-west-000.backblazeb2.com");
    let mut rng = Rng::new(11);
    // About 20 MiB out per interval, ±50%.
    let quiet = feed(
        &mut b,
        &o,
        T0,
        T0 + 3 * DAY,
        &mut rng,
        |_, _| 4,
        |r| (5 << 20) / 2 + (r.unit() * f64::from(5 << 20)) as u64,
    );
    assert!(quiet.is_empty(), "{quiet:?}");
    let t = T0 + 3 * DAY + 10;
    b.tick(at(t));
    let mut found = Vec::new();
    for i in 0..40 {
        found.extend(b.on_bytes(at(t + i), &o, 10 << 20, 0));
    }
    assert_eq!(kinds(&found), [AnomalyKind::VolumeSpike], "{found:?}");
    let a = &found[0];
    assert_eq!(a.unit, "bytes out per interval");
    assert!(a.threshold >= 4.0 * a.baseline && a.observed >= a.threshold, "{a:?}");
}

#[test]
fn ordinary_noise_and_a_daily_rhythm_stay_quiet() {
    for seed in SEEDS {
        let mut b = Baselines::new(BaselineSettings::default());
        let mut rng = Rng::new(seed);
        let busy = |t: i64| (8..20).contains(&hour_of_day(t, 0));
        let dests = ["api.segment.io", "cdn.segment.com", "events.segment.io"];
        let mut found = Vec::new();
        let mut t = T0;
        while t < T0 + 8 * DAY {
            b.tick(at(t));
            // Busy by day, quiet by night, Poisson jitter on both; up to 200 KiB a call.
            let web = rng.poisson(if busy(t) { 30.0 } else { 2.0 });
            for i in 0..web {
                let when = at(t + (i as i64 * STEP) / web as i64);
                let o = obs("/srv/web/bin/app", "segment", dests[(rng.unit() * 3.0) as usize]);
                found.extend(b.on_connect(when, &o));
                found.extend(b.on_bytes(when, &o, (rng.unit() * f64::from(200 << 10)) as u64, 4096));
            }
            // A bulk uploader with the same rhythm: about 20 MiB per interval by day, ±50%.
            let o = obs("/usr/bin/rclone", "backblaze", "s3.backblazeb2.com");
            let mib = if busy(t) { 20.0 } else { 1.0 };
            let bytes = (mib * (0.5 + rng.unit()) * f64::from(1 << 20)) as u64;
            found.extend(b.on_connect(at(t), &o));
            found.extend(b.on_bytes(at(t), &o, bytes, 4096));
            // A sparse caller with no rhythm at all: about one connection every two hours.
            if rng.unit() < STEP as f64 / 7200.0 {
                let o = obs("/usr/sbin/ntpd-check", "pool.ntp.org", "pool.ntp.org");
                found.extend(b.on_connect(at(t), &o));
                found.extend(b.on_bytes(at(t), &o, 200, 200));
            }
            t += STEP;
        }
        assert!(found.is_empty(), "seed {seed}: {found:#?}");
        assert_eq!(b.keys(), 3);
    }
}

#[test]
fn activity_in_a_never_active_hour_is_flagged_once_the_rhythm_is_clear() {
    let mut b = Baselines::new(BaselineSettings::default());
    let o = obs("/opt/reports/bin/export", "salesforce", "login.salesforce.com");
    let mut rng = Rng::new(3);
    let office = |t: i64, r: &mut Rng| if (9..17).contains(&hour_of_day(t, 0)) { r.poisson(3.0) } else { 0 };
    // Two days: not yet evidence that the night is never busy.
    let quiet = feed(&mut b, &o, T0, T0 + 2 * DAY, &mut rng, office, |_| 100);
    assert!(quiet.is_empty(), "{quiet:?}");
    assert!(b.on_connect(at(T0 + 2 * DAY + 3 * 3600), &o).is_empty());
    let mut b = Baselines::new(BaselineSettings::default());
    let quiet = feed(&mut b, &o, T0, T0 + 5 * DAY, &mut rng, office, |_| 100);
    assert!(quiet.is_empty(), "{quiet:?}");
    let found = b.on_connect(at(T0 + 5 * DAY + 2 * 3600 + 60), &o);
    assert_eq!(kinds(&found), [AnomalyKind::OffHours], "{found:?}");
    assert_eq!((found[0].observed, found[0].baseline, found[0].unit), (2.0, 8.0, "hour of day"));
    // The hour is now one the key was active in.
    assert!(b.on_connect(at(T0 + 5 * DAY + 2 * 3600 + 7200 + 60), &o).iter().all(|a| a.observed != 2.0));
}

#[test]
fn hours_follow_the_policy_offset() {
    let s = BaselineSettings { utc_offset: time::macros::offset!(+5:30), ..Default::default() };
    let mut b = Baselines::new(s);
    let o = obs("/bin/app", "p", "p.example");
    // 03:30 UTC is 09:00 at +05:30.
    let _ = b.on_connect(at(T0 + 3 * 3600 + 1800), &o);
    let key = b.keys.peek(&("/bin/app".to_owned(), "p".to_owned())).expect("key");
    assert!(key.active_in_hour_of_day(9) && !key.active_in_hour_of_day(3));
    assert_eq!(hour_of_week(T0 + 3 * 3600 + 1800, 19_800), 9);
}

#[test]
fn warm_up_suppresses_and_new_processes_and_destinations_are_flagged_after_it() {
    let mut b = Baselines::new(BaselineSettings::default());
    let api = obs("/opt/billing/bin/api", "stripe", "api.stripe.com");
    let mut rng = Rng::new(5);
    // Within the first day nothing is flagged: not a burst, not a new destination.
    let mut found = feed(&mut b, &api, T0, T0 + DAY / 2, &mut rng, |_, r| r.poisson(5.0), |_| 1000);
    found.extend((0..500).flat_map(|i| b.on_connect(at(T0 + DAY / 2 + i), &api)));
    found.extend(b.on_connect(at(T0 + DAY / 2), &obs("/opt/billing/bin/api", "stripe", "files.stripe.com")));
    found.extend(b.on_connect(at(T0 + DAY / 2), &obs("/usr/bin/curl", "stripe", "api.stripe.com")));
    assert!(found.is_empty(), "{found:?}");
    // After it, curl is known (it called during warm-up) but python is new; so is a
    // destination the billing API never reached.
    let t = T0 + DAY + 60;
    let found = b.on_connect(at(t), &obs("/usr/bin/python3", "stripe", "api.stripe.com"));
    assert_eq!(kinds(&found), [AnomalyKind::NewProcess], "{found:?}");
    assert_eq!((found[0].baseline, found[0].observed, found[0].unit), (2.0, 3.0, "processes"));
    assert!(b.on_connect(at(t), &obs("/usr/bin/curl", "stripe", "api.stripe.com")).is_empty());
    let found = b.on_connect(at(t), &obs("/opt/billing/bin/api", "stripe", "uploads.stripe.com"));
    assert_eq!(kinds(&found), [AnomalyKind::NewDestination], "{found:?}");
    assert_eq!(found[0].unit, "destinations");
    // A new destination under another party counts too; a known one under another does not.
    let found = b.on_connect(at(t), &obs("/opt/billing/bin/api", "evil.example", "x.evil.example"));
    assert_eq!(kinds(&found), [AnomalyKind::NewDestination], "{found:?}");
    assert!(b.on_connect(at(t), &obs("/opt/billing/bin/api", "other", "api.stripe.com")).is_empty());
    // Settings that turn a kind off are obeyed.
    let mut s = BaselineSettings::default();
    s.global.new_destinations = false;
    b.set_settings(s);
    assert!(b.on_connect(at(t), &obs("/opt/billing/bin/api", "stripe", "dl.stripe.com")).is_empty());
}

#[test]
fn zero_warm_up_still_needs_history() {
    let mut s = BaselineSettings::default();
    s.global.warmup = Duration::ZERO;
    let o = obs("/bin/app", "p", "p.example");
    // Two closed intervals are not enough history to call 100 connections a spike.
    let mut b = Baselines::new(s.clone());
    let mut found: Vec<_> = (0..2).flat_map(|i| b.on_connect(at(T0 + i), &o)).collect();
    found.extend((0..2).flat_map(|i| b.on_connect(at(T0 + STEP + i), &o)));
    found.extend((0..100).flat_map(|i| b.on_connect(at(T0 + 2 * STEP + i), &o)));
    assert!(found.is_empty(), "{found:?}");
    // With a third, it is one.
    let mut b = Baselines::new(s);
    for k in 0..3 {
        assert!((0..2).flat_map(|i| b.on_connect(at(T0 + k * STEP + i), &o)).next().is_none());
    }
    let found: Vec<_> = (0..100).flat_map(|i| b.on_connect(at(T0 + 3 * STEP + i), &o)).collect();
    assert_eq!(kinds(&found), [AnomalyKind::RateSpike], "{found:?}");
    assert_eq!(found[0].observed, 20.0);
}

#[test]
fn state_round_trips_and_warm_up_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("ea-baselines-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut b = Baselines::new(BaselineSettings::default());
    let o = obs("/bin/app", "p", "p.example");
    let mut rng = Rng::new(9);
    let _ = feed(&mut b, &o, T0, T0 + DAY + 3600, &mut rng, |_, r| r.poisson(4.0), |_| 100);
    let _ = b.on_connect(at(T0), &obs("/bin/other", "q", "q.example"));
    b.save(&dir).expect("save");
    let (c, warning) = Baselines::load(&dir, BaselineSettings::default());
    assert!(warning.is_none(), "{warning:?}");
    assert_eq!((c.keys(), c.evicted()), (2, 0));
    // serde_json reads floats back to within an ulp, not always to the bit.
    let order = |b: &Baselines| {
        serde_json::to_value(b.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>())
            .expect("serializes")
    };
    assert_close(&order(&b), &order(&c));
    assert_eq!(b.processes.iter().collect::<Vec<_>>(), c.processes.iter().collect::<Vec<_>>());
    assert_eq!(b.parties.iter().collect::<Vec<_>>(), c.parties.iter().collect::<Vec<_>>());
    // Warmed up before the restart, so a new destination is flagged at once.
    let mut c = c;
    let found = c.on_connect(at(T0 + DAY + 3700), &obs("/bin/app", "p", "new.example"));
    assert_eq!(kinds(&found), [AnomalyKind::NewDestination]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_state_file_is_set_aside_with_a_warning() {
    let dir = std::env::temp_dir().join(format!("ea-baselines-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join(STATE_FILE), b"{\"kind\":\"baselines\",\"version\":1,\"data\":{\"keys\":[").expect("write");
    let (b, warning) = Baselines::load(&dir, BaselineSettings::default());
    let w = warning.expect("a warning");
    assert!(w.contains("set aside") && w.contains("learnt afresh"), "{w}");
    assert_eq!(b.keys(), 0);
    assert!(!dir.join(STATE_FILE).exists());
    // A fresh state saves over nothing.
    b.save(&dir).expect("save");
    let (_, warning) = Baselines::load(&dir, BaselineSettings::default());
    assert!(warning.is_none(), "{warning:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_are_bounded_and_the_least_recently_active_evicted() {
    let mut b = Baselines::new(BaselineSettings::default());
    let name = |i: usize| format!("/bin/p{i}");
    for i in 0..MAX_KEYS {
        let p = name(i);
        let _ = b.on_connect(at(T0 + i as i64), &obs(&p, "party", "d"));
    }
    // Key 0 is active again, so key 1 is now the least recent.
    let _ = b.on_bytes(at(T0 + 5000), &obs(&name(0), "party", "d"), 10, 10);
    for i in MAX_KEYS..MAX_KEYS + 10 {
        let p = name(i);
        let _ = b.on_connect(at(T0 + 5000 + i as i64), &obs(&p, "party", "d"));
    }
    assert_eq!((b.keys(), b.evicted()), (MAX_KEYS, 10));
    assert!(b.keys.contains(&(name(0), "party".to_owned())));
    assert!(!b.keys.contains(&(name(1), "party".to_owned())));
    // Per-party callers and per-process destinations are bounded too.
    let party = b.parties.peek("party").expect("party");
    assert_eq!(party.callers.len(), MAX_CALLERS);
    assert!(party.unrecorded > 0);
    assert!(b.processes.len() <= MAX_PROCESSES && b.parties.len() <= MAX_PARTIES);
    for i in 0..MAX_DESTINATIONS + 5 {
        let _ = b.on_connect(at(T0 + 9000), &obs("/bin/crawler", "web", &format!("h{i}.example")));
    }
    let crawler = b.processes.peek("/bin/crawler").expect("process");
    assert_eq!((crawler.destinations.len(), crawler.unrecorded), (MAX_DESTINATIONS, 5));
}

#[test]
fn a_policy_reload_keeps_what_was_learnt_but_restarts_rates_of_a_new_interval() {
    let mut b = Baselines::new(BaselineSettings::default());
    let o = obs("/bin/app", "p", "p.example");
    let mut rng = Rng::new(1);
    let _ = feed(&mut b, &o, T0, T0 + DAY, &mut rng, |_, r| r.poisson(4.0), |_| 100);
    let k = ("/bin/app".to_owned(), "p".to_owned());
    let (closed, first_seen) = b.keys.peek(&k).map(|k| (k.closed, k.first_seen)).expect("key");
    assert!(closed > 200, "{closed}");
    b.set_settings(BaselineSettings::default());
    b.tick(at(T0 + DAY + STEP));
    assert!(b.keys.peek(&k).expect("key").closed > closed);
    let mut s = BaselineSettings::default();
    s.global.interval = Duration::from_secs(60);
    b.set_settings(s);
    b.tick(at(T0 + DAY + 2 * STEP));
    let key = b.keys.peek(&k).expect("key");
    assert_eq!((key.closed, key.interval_s, key.first_seen), (0, 60, first_seen));
    assert!(b.settings().global.interval == Duration::from_secs(60));
    assert!(AnomalyKind::ALL.iter().all(|k| k.to_string() == k.as_str()));
}
