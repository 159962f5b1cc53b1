//! Central policy: `--policy https://host/bundle.json` (or `http://`, or `file:///path`) names a
//! signed policy bundle (see [`bundle`]) instead of local policy files.
//!
//! At start the last good bundle, cached in the state directory, is enforced at once, so a host
//! boots enforcing without the network; only without a cache is the source fetched before the
//! programs are attached. Then a thread of its own polls the source every `interval` with
//! `If-None-Match`, so the event loop never waits on the network; what it brings is checked and
//! installed by the loop ([`apply`]). With a public key configured, a bundle that is unsigned,
//! wrongly signed, older than the one running (a lower serial, or the same serial with other
//! content) or that does not parse or compile is refused: logged, audited as `reload_refused`,
//! counted in `egress_policy_fetches_total{result="refused"}`, shown by `status`, and the
//! running policy stays. A good one is installed as a reload would install it, then cached
//! (atomically, see `statefile`) with its ETag. A bundle below the serial floor ([`floor`]: the
//! highest serial ever accepted, kept apart from the cache, or `policySource.minSerial`) is
//! refused the same way, at boot too: losing the cache must not let an older release back in.

pub mod bundle;
pub mod fetch;
pub mod floor;
mod poll;

pub use poll::{apply, start_polling};

use std::{
    path::{Path, PathBuf},
    sync::mpsc as std_mpsc,
    time::Duration,
};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{error, info, warn};

use self::{
    bundle::{Admit, Bundle, KeyError},
    fetch::{Fetched, Fetcher, Limits, Location},
    floor::Floor,
};
use crate::{
    control::audit::sha256_hex,
    in_force::log_warnings,
    policy::{self, CompiledPolicy, Merged, PolicyError, Problem},
    statefile,
};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;
/// The cache in the state directory.
pub const CACHE_FILE: &str = "policy-bundle.json";
const CACHE_KIND: &str = "policy-bundle";
const CACHE_VERSION: u32 = 1;

/// `policySource:` in the agent's configuration; each has a `run` flag that overrides it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    /// The Ed25519 public key (PEM) bundles must be signed with (`--policy-key`).
    pub public_key: Option<PathBuf>,
    /// How often the source is polled (`--policy-interval`; default 60s).
    pub interval: Option<Seconds>,
    /// For one whole fetch, body included (`--policy-timeout`; default 10s).
    pub timeout: Option<Seconds>,
    /// The largest bundle read (`--policy-max-bytes`; default 8 MiB).
    pub max_bytes: Option<u64>,
    /// No bundle with a lower serial is accepted (`--policy-min-serial`), whatever the state
    /// directory holds: a floor set centrally, by configuration management.
    pub min_serial: Option<u64>,
}

/// A duration in the configuration: `90s`, `5m`, `1h`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string(),
            Raw::S(s) => s,
        };
        crate::cli::duration(&text).map(Seconds).map_err(serde::de::Error::custom)
    }
}

/// The source's settings, flags over the configuration over the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceOptions {
    pub public_key: Option<PathBuf>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub max_bytes: Option<u64>,
    pub min_serial: Option<u64>,
}

impl SourceOptions {
    /// These (from flags) where set, else the configuration's.
    pub fn or_config(self, c: Option<&SourceConfig>) -> Self {
        let c = c.cloned().unwrap_or_default();
        SourceOptions {
            public_key: self.public_key.or(c.public_key),
            interval: self.interval.or(c.interval.map(|s| s.0)),
            timeout: self.timeout.or(c.timeout.map(|s| s.0)),
            max_bytes: self.max_bytes.or(c.max_bytes),
            min_serial: self.min_serial.or(c.min_serial),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("--policy: {0}")]
    Usage(String),
    #[error("policySource.publicKey: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The policy URL among `--policy` values, if one is: it must then be the only value.
pub fn location(policy: &[PathBuf]) -> Result<Option<Location>, CentralError> {
    let mut found = None;
    for p in policy {
        if let Some(l) = Location::parse(&p.to_string_lossy()) {
            found = Some(l.map_err(CentralError::Usage)?);
        }
    }
    if found.is_some() && policy.len() > 1 {
        return Err(CentralError::Usage(
            "a policy bundle URL is the whole policy: it cannot be combined with other --policy values".into(),
        ));
    }
    Ok(found)
}

/// What the agent starts with: the policy, and the central source if there is one.
pub struct Start {
    pub merged: Merged,
    pub compiled: CompiledPolicy,
    pub warnings: Vec<Problem>,
    pub central: Option<Central>,
    /// No bundle, cached or fetched: `compiled` is the embedded default (monitor mode).
    pub embedded_fallback: bool,
}

/// Loads the policy to start with: local files as `policy::load` does, or a bundle (the cached
/// one, else one fetched now, else the embedded default until one is fetched).
pub fn load(
    policy: &[PathBuf],
    options: &SourceOptions,
    state_dir: Option<&Path>,
    resolver: &policy::resolve::HostResolver,
) -> Result<Start, CentralError> {
    let Some(location) = location(policy)? else {
        let (merged, compiled, warnings) = policy::load(policy, time::OffsetDateTime::now_utc(), resolver)?;
        return Ok(Start { merged, compiled, warnings, central: None, embedded_fallback: false });
    };
    let key = match &options.public_key {
        Some(p) => Some((p.clone(), bundle::read_verifying_key(p)?)),
        None => None,
    };
    if key.is_none() {
        if location.is_plain_http() {
            return Err(CentralError::Usage(format!(
                "{location}: plain http needs a public key (policySource.publicKey or --policy-key): without a signature anyone on the path could rewrite the policy"
            )));
        }
        warn!(source = %location, "no public key configured (policySource.publicKey): policy bundles are NOT verified; whoever controls the source controls this host's egress");
    }
    let limits = Limits {
        timeout: options.timeout.unwrap_or(DEFAULT_TIMEOUT),
        max_bytes: options.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
    };
    let mut c = Central {
        fetcher: Some(Fetcher::new(location.clone(), limits)),
        location,
        key,
        interval: options.interval.unwrap_or(DEFAULT_INTERVAL),
        cache: state_dir.map(|d| d.join(CACHE_FILE)),
        floor: Floor::load(state_dir, options.min_serial),
        running: None,
        poke: None,
        first: FirstPoll { etag: None, seen: None, now: false },
        last: LastCheck::default(),
        pending_audit: Vec::new(),
    };
    if c.cache.is_none() {
        warn!("no state directory (--state): the last good policy bundle is not cached, so without the network at boot the agent runs the embedded default policy");
    }
    if let Some(start) = c.boot_from_cache(resolver) {
        return Ok(finish(start, c));
    }
    if let Some(start) = c.boot_from_source(resolver) {
        return Ok(finish(start, c));
    }
    error!(source = %c.location, "no policy bundle, cached or fetched: running the embedded default policy (monitor mode, it refuses nothing) until one is fetched");
    let (merged, compiled, warnings) = policy::load(&[], time::OffsetDateTime::now_utc(), resolver)?;
    Ok(Start { merged, compiled, warnings, central: Some(c), embedded_fallback: true })
}

/// The central source, owned by the policy state.
pub struct Central {
    location: Location,
    /// The key file and its key.
    key: Option<(PathBuf, VerifyingKey)>,
    interval: Duration,
    /// Given to the poller when it starts.
    fetcher: Option<Fetcher>,
    cache: Option<PathBuf>,
    /// The lowest serial accepted, the running one's included: raised by every release accepted.
    floor: Floor,
    /// The release in force: serial, created, policy digest.
    running: Option<(u64, String, String)>,
    /// Asks the poller to fetch now, or to forget what it saw.
    poke: Option<std_mpsc::Sender<Poke>>,
    first: FirstPoll,
    last: LastCheck,
    /// Refusals at start, before the audit trail is open: written with the first records.
    pending_audit: Vec<(&'static str, Value)>,
}

/// What the poller starts from.
struct FirstPoll {
    etag: Option<String>,
    /// SHA-256 of the last body seen: the same bytes again are not examined again.
    seen: Option<String>,
    /// Fetch at once (the policy in force came from the cache, or from nowhere).
    now: bool,
}

#[derive(Default)]
struct LastCheck {
    at: Option<String>,
    result: &'static str,
    error: Option<String>,
}

pub enum Poke {
    Now,
    /// Fetch the next one whole, even if unchanged (installing the last one failed).
    Forget,
}

/// The cache file's content.
#[derive(Serialize, Deserialize)]
struct Cached {
    source: String,
    etag: Option<String>,
    fetched: String,
    bundle: String,
}

/// A bundle ready to install.
struct Ready {
    bundle: Bundle,
    merged: Merged,
    compiled: CompiledPolicy,
    warnings: Vec<Problem>,
}

/// Why a bundle was refused, and which it was.
struct Refusal {
    serial: Option<u64>,
    sha256: String,
    reason: String,
}

impl Central {
    fn boot_from_cache(&mut self, resolver: &policy::resolve::HostResolver) -> Option<Start> {
        let path = self.cache.clone()?;
        let cached = match statefile::load::<Cached>(&path, CACHE_KIND, CACHE_VERSION) {
            Ok(statefile::Loaded::Read(c)) => c,
            Ok(statefile::Loaded::Absent) => return None,
            Ok(statefile::Loaded::SetAside { reason, moved_to }) => {
                warn!(file = %path.display(), reason, moved_to = %moved_to.display(), "cached policy bundle unusable; set aside");
                return None;
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cached policy bundle unreadable");
                return None;
            }
        };
        if cached.source != self.location.to_string() {
            info!(cached = cached.source, source = %self.location, "the cached policy bundle is from another source: not used");
            return None;
        }
        match self.examine(cached.bundle.as_bytes(), resolver, false) {
            Ok(Some(r)) => {
                info!(
                    serial = r.bundle.serial,
                    created = r.bundle.created,
                    fetched = cached.fetched,
                    "enforcing the cached policy bundle; fetching the source now"
                );
                self.first =
                    FirstPoll { etag: cached.etag, seen: Some(sha256_hex(cached.bundle.as_bytes())), now: true };
                Some(self.started(r))
            }
            Ok(None) => None,
            Err(r) => {
                error!(file = %path.display(), serial = r.serial, error = r.reason, "the cached policy bundle is refused; not used");
                self.pending_audit.push(("reload_refused", self.refusal_record("cached policy bundle", &r)));
                self.checked("refused", Some(r.reason));
                None
            }
        }
    }

    fn boot_from_source(&mut self, resolver: &policy::resolve::HostResolver) -> Option<Start> {
        let fetcher = self.fetcher.as_ref()?;
        let (bytes, etag) = match fetcher.fetch(None) {
            Ok(Fetched::Body { bytes, etag }) => (bytes, etag),
            Ok(Fetched::NotModified) => return None,
            Err(e) => {
                error!(source = %self.location, error = %e, "fetching the policy bundle failed");
                self.checked("error", Some(e.to_string()));
                return None;
            }
        };
        match self.examine(&bytes, resolver, false) {
            Ok(Some(r)) => {
                info!(source = %self.location, serial = r.bundle.serial, created = r.bundle.created, "policy bundle fetched");
                self.save_cache(&bytes, etag.as_deref());
                self.first = FirstPoll { etag, seen: Some(sha256_hex(&bytes)), now: false };
                self.checked("installed", None);
                Some(self.started(r))
            }
            Ok(None) => None,
            Err(r) => {
                error!(source = %self.location, serial = r.serial, error = r.reason, "policy bundle refused");
                self.pending_audit.push(("reload_refused", self.refusal_record("policy bundle fetched", &r)));
                self.checked("refused", Some(r.reason));
                self.first = FirstPoll { etag, seen: Some(sha256_hex(&bytes)), now: false };
                None
            }
        }
    }

    /// Raises the serial floor to an accepted bundle's, if bundles are verified: without a key
    /// whoever serves the source could push the floor out of reach (serial 2^64-1) and no
    /// later release would be accepted.
    fn raise_floor(&mut self, serial: u64, digest: &str) {
        if self.key.is_some() {
            self.floor.accepted(serial, digest, &self.location.to_string());
        }
    }

    fn started(&mut self, r: Ready) -> Start {
        let digest = r.bundle.digest();
        self.raise_floor(r.bundle.serial, &digest);
        self.running = Some((r.bundle.serial, r.bundle.created.clone(), digest));
        log_warnings(&r.warnings);
        Start { merged: r.merged, compiled: r.compiled, warnings: Vec::new(), central: None, embedded_fallback: false }
    }

    /// Parses, verifies, orders (against the floor, and `against_running`) and compiles a
    /// bundle. `Ok(None)`: the release already running.
    fn examine(
        &self,
        bytes: &[u8],
        resolver: &policy::resolve::HostResolver,
        against_running: bool,
    ) -> Result<Option<Ready>, Refusal> {
        let refuse = |serial, sha256: String, reason: String| Refusal { serial, sha256, reason };
        let b = Bundle::parse(bytes).map_err(|e| refuse(None, sha256_hex(bytes), e.to_string()))?;
        let digest = b.digest();
        if let Some((_, key)) = &self.key {
            b.verify(key).map_err(|e| refuse(Some(b.serial), digest.clone(), e.to_string()))?;
        }
        if against_running {
            let running = self.running.as_ref().map(|(s, _, d)| (*s, d.as_str()));
            match b.admit(running) {
                Ok(Admit::Same) => return Ok(None),
                Ok(Admit::Newer) => {}
                Err(e) => return Err(refuse(Some(b.serial), digest, e.to_string())),
            }
        }
        // After the running release: a replay of it, or of one just before, says "older than
        // the running bundle's"; the floor catches what that cannot see (at boot, nothing runs).
        self.floor.admit(&b).map_err(|e| refuse(Some(b.serial), digest.clone(), e.to_string()))?;
        match policy::load_texts(&b.texts(), time::OffsetDateTime::now_utc(), resolver) {
            Ok((merged, compiled, warnings)) => Ok(Some(Ready { bundle: b, merged, compiled, warnings })),
            Err(e) => Err(refuse(Some(b.serial), digest, format!("the policy does not load: {e}"))),
        }
    }

    fn save_cache(&self, bytes: &[u8], etag: Option<&str>) {
        let Some(path) = &self.cache else { return };
        let cached = Cached {
            source: self.location.to_string(),
            etag: etag.map(str::to_owned),
            fetched: now(),
            bundle: String::from_utf8_lossy(bytes).into_owned(),
        };
        if let Err(e) = statefile::save(path, CACHE_KIND, CACHE_VERSION, &cached) {
            warn!(file = %path.display(), error = %e, "the policy bundle could not be cached: without the network at the next boot the agent would not have it");
        }
    }

    fn refusal_record(&self, why: &str, r: &Refusal) -> Value {
        json!({"why": why, "source": self.location.to_string(), "serial": r.serial, "error": r.reason, "sha256": r.sha256})
    }

    fn checked(&mut self, result: &'static str, error: Option<String>) {
        self.last = LastCheck { at: Some(now()), result, error };
    }

    /// Asks the poller to fetch now (SIGHUP, `reload`).
    pub fn poke(&self) {
        if let Some(p) = &self.poke {
            let _ = p.send(Poke::Now);
        }
    }

    /// What `status` shows.
    pub fn status(&self) -> Value {
        json!({
            "source": self.location.to_string(),
            "public_key": self.key.as_ref().map(|(p, k)| json!({"file": p.display().to_string(), "id": bundle::key_id(k)})),
            "interval_s": self.interval.as_secs(),
            "serial": self.running.as_ref().map(|r| r.0),
            "created": self.running.as_ref().map(|r| r.1.clone()),
            "floor": self.floor.serial(),
            "floor_from": self.floor.origin(),
            "last_check": self.last.at,
            "last_result": if self.last.result.is_empty() { None } else { Some(self.last.result) },
            "last_error": self.last.error,
        })
    }
}

fn now() -> String {
    crate::events::rfc3339(time::OffsetDateTime::now_utc().unix_timestamp_nanos())
}

/// Makes `start.central` the source `c` (the Start came from it).
fn finish(mut start: Start, c: Central) -> Start {
    start.central = Some(c);
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_the_whole_policy() {
        assert_eq!(location(&["/etc/p.d".into()]).expect("local"), None);
        assert!(location(&["https://h/b.json".into()]).expect("url").is_some());
        let e = location(&["https://h/b.json".into(), "/etc/p.d".into()]).expect_err("mixed").to_string();
        assert!(e.contains("cannot be combined"), "{e}");
        assert!(location(&["file://b.json".into()]).is_err());
    }

    #[test]
    fn settings_come_from_flags_then_the_configuration() {
        let c: SourceConfig =
            serde_yaml_ng::from_str("publicKey: /k.pub\ninterval: 5m\ntimeout: 3\nmaxBytes: 1024\nminSerial: 42\n")
                .expect("parses");
        assert_eq!(c.interval, Some(Seconds(Duration::from_secs(300))));
        assert_eq!(c.timeout, Some(Seconds(Duration::from_secs(3))));
        let o = SourceOptions { interval: Some(Duration::from_secs(1)), ..Default::default() }.or_config(Some(&c));
        assert_eq!(o.interval, Some(Duration::from_secs(1)));
        assert_eq!(o.public_key, Some(PathBuf::from("/k.pub")));
        assert_eq!((o.max_bytes, o.min_serial), (Some(1024), Some(42)));
        let o = SourceOptions { min_serial: Some(50), ..Default::default() }.or_config(Some(&c));
        assert_eq!(o.min_serial, Some(50));
        assert!(serde_yaml_ng::from_str::<SourceConfig>("min_serial: 1\n").is_err(), "camelCase only");
        assert!(serde_yaml_ng::from_str::<SourceConfig>("interval: soon\n").is_err());
        assert!(serde_yaml_ng::from_str::<SourceConfig>("url: x\n").is_err());
    }

    fn central(key: &ed25519_dalek::SigningKey) -> Central {
        let location = Location::File("/nonexistent".into());
        Central {
            fetcher: None,
            key: Some(("k.pub".into(), key.verifying_key())),
            location,
            interval: DEFAULT_INTERVAL,
            cache: None,
            floor: Floor::load(None, None),
            running: None,
            poke: None,
            first: FirstPoll { etag: None, seen: None, now: false },
            last: LastCheck::default(),
            pending_audit: Vec::new(),
        }
    }

    fn signed(key: &ed25519_dalek::SigningKey, serial: u64, text: &str) -> Vec<u8> {
        let mut b = Bundle::new(
            serial,
            "2026-05-01T12:00:00Z".into(),
            vec![bundle::BundleFile { name: "p.yaml".into(), text: text.into() }],
        );
        b.sign(key);
        b.to_json().into_bytes()
    }

    const GOOD: &str = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: central}\nspec: {mode: enforce, default: deny}\n";

    #[test]
    fn a_signed_bundle_that_does_not_load_or_is_not_newer_is_refused() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let resolver = policy::resolve::HostResolver::new();
        let mut c = central(&key);
        let r = c.examine(&signed(&key, 2, GOOD), &resolver, true).ok().flatten().expect("a good bundle loads");
        assert_eq!((r.merged.name.as_str(), r.compiled.sha256.clone()), ("central", r.bundle.digest()));
        c.running = Some((2, r.bundle.created.clone(), r.bundle.digest()));
        assert!(matches!(c.examine(&signed(&key, 2, GOOD), &resolver, true), Ok(None)), "the same release");
        let bad = signed(&key, 3, "apiVersion: egress-agent/v1\nkind: EgressPolicy\nspec: {mode: enforcing}\n");
        let e = c.examine(&bad, &resolver, true).err().expect("does not load");
        assert!(e.reason.starts_with("the policy does not load: p.yaml:") && e.serial == Some(3), "{}", e.reason);
        let e = c.examine(&signed(&key, 1, GOOD), &resolver, true).err().expect("older");
        assert!(e.reason.contains("older"), "{}", e.reason);
        // At boot (from the cache) nothing runs: only the floor is compared, and without a
        // release accepted there is none.
        assert!(c.examine(&signed(&key, 1, GOOD), &resolver, false).is_ok_and(|r| r.is_some()));
    }

    #[test]
    fn a_release_accepted_once_sets_a_floor_that_outlives_the_cache() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let resolver = policy::resolve::HostResolver::new();
        let dir = std::env::temp_dir().join(format!("ea-central-floor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut c = central(&key);
        (c.cache, c.floor) = (Some(dir.join(CACHE_FILE)), Floor::load(Some(&dir), None));
        let r = c.examine(&signed(&key, 5, GOOD), &resolver, false).ok().flatten().expect("serial 5");
        let _ = c.started(r);
        c.save_cache(&signed(&key, 5, GOOD), None);
        assert_eq!(c.status()["floor"], 5);
        // The cache is lost; a new start has the floor from its own file.
        std::fs::remove_file(dir.join(CACHE_FILE)).expect("cache");
        let mut c = central(&key);
        (c.cache, c.floor) = (Some(dir.join(CACHE_FILE)), Floor::load(Some(&dir), None));
        assert!(c.boot_from_cache(&resolver).is_none(), "no cache");
        let e = c.examine(&signed(&key, 3, GOOD), &resolver, false).err().expect("a replay of serial 3");
        assert!(e.reason.contains("rollback") && e.serial == Some(3), "{}", e.reason);
        assert!(c.examine(&signed(&key, 5, GOOD), &resolver, false).is_ok_and(|r| r.is_some()), "serial 5 again");
        let other = GOOD.replace("central", "other");
        let e = c.examine(&signed(&key, 5, &other), &resolver, false).err().expect("serial 5, other content");
        assert!(e.reason.contains("accepted before with other content"), "{}", e.reason);
        // A cache below the file's floor is refused at boot, and reported.
        c.save_cache(&signed(&key, 4, GOOD), None);
        assert!(c.boot_from_cache(&resolver).is_none(), "the cache is older than the floor");
        let (kind, rec) = c.pending_audit.last().expect("audited");
        assert_eq!((*kind, rec["serial"].as_u64()), ("reload_refused", Some(4)), "{rec}");
        assert!(rec["error"].as_str().is_some_and(|e| e.contains("rollback")), "{rec}");
        // minSerial, over the file.
        let mut c = central(&key);
        c.floor = Floor::load(Some(&dir), Some(8));
        let e = c.examine(&signed(&key, 7, GOOD), &resolver, false).err().expect("below minSerial");
        assert!(e.reason.contains("below policySource.minSerial 8"), "{}", e.reason);
        assert_eq!((c.status()["floor"].as_u64(), c.status()["floor_from"].as_str()), (Some(8), Some("minSerial")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
