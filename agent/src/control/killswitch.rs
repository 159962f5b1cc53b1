//! The incident kill switch (`egress-agent block VENDOR | --all`): a vendor's destinations (its
//! CIDRs and the addresses learnt for its domains) refused to every process, or all egress but the
//! policy's infrastructure `allow` rules, whatever the policy and its mode say.
//!
//! Kills are kept by vendor name in `<state>/kills.json`, so they survive an agent restart (ids
//! are the agent's own and change across restarts) and apply again as soon as the policy names
//! the vendor. The kernel compares the end times itself (`bpf_ktime_get_ns`), so a kill ends on
//! time; the agent only tidies up and reports the end. Kill switch records have no `verdict`.
#![expect(
    clippy::result_large_err,
    reason = "DatapathError wraps aya's large errors (see datapath.rs); these fail rarely and are logged"
)]

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::warn;

use crate::{
    events,
    kernel::{Datapath, DatapathError},
    statefile::{self, Loaded},
};

const FILE: &str = "kills.json";
const KIND: &str = "egress-agent kills";
const VERSION: u32 = 1;
/// The key `block --all` is kept under (not a valid vendor name).
const ALL: &str = "*";
/// Reasons are free text from the operator: bounded, since they go to events and the audit trail.
const MAX_REASON: usize = 512;
/// The longest `--for`: a year. Longer is "until lifted", said so.
pub const MAX_FOR: Duration = Duration::from_secs(366 * 86_400);

/// One kill in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// The vendor, or null for `block --all`.
    pub vendor: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Null: until lifted.
    #[serde(with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    pub reason: Option<String>,
    /// Who asked: the uid on the admin socket.
    pub by_uid: u32,
}

impl Kill {
    fn key(&self) -> String {
        self.vendor.clone().unwrap_or_else(|| ALL.to_owned())
    }

    /// The record written to the event sinks and, as detail, to the audit trail.
    pub fn record(&self, action: &str) -> serde_json::Value {
        serde_json::json!({
            "ts": events::rfc3339(OffsetDateTime::now_utc().unix_timestamp_nanos()),
            "kind": "kill_switch",
            "action": action,
            "vendor": self.vendor,
            "all": self.vendor.is_none(),
            "since": self.since.format(&time::format_description::well_known::Rfc3339).ok(),
            "until": self.until.and_then(|u| u.format(&time::format_description::well_known::Rfc3339).ok()),
            "reason": self.reason,
            "by_uid": self.by_uid,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KillError {
    #[error("no vendor `{vendor}` in the policy in force (vendors: {known})")]
    UnknownVendor { vendor: String, known: String },
    #[error("`{0}` is not blocked")]
    NotBlocked(String),
    #[error("the reason is longer than {MAX_REASON} bytes")]
    ReasonTooLong,
    #[error("--for is at most 366 days (leave it out to block until `unblock`)")]
    TooLong,
    #[error("the kill switch could not be saved to {path}: {error}; it is in force until the agent stops")]
    NotSaved { path: String, error: String },
}

#[derive(Default, Clone)]
pub struct KillSwitch {
    /// `<state>/kills.json`, if there is a state directory.
    path: Option<PathBuf>,
    kills: BTreeMap<String, Kill>,
}

impl KillSwitch {
    /// Loads the kills kept in `state` (those that ran out while the agent was down are
    /// dropped, and reported as ended).
    /// The third value says why kept kills could not be read (the file was set aside or is
    /// unreadable): the caller audits it, since kills may have been lost.
    pub fn load(state: Option<&Path>) -> (Self, Vec<Kill>, Option<String>) {
        let path = state.map(|d| d.join(FILE));
        let mut kills = BTreeMap::new();
        let mut problem = None;
        if let Some(p) = &path {
            match statefile::load::<Vec<Kill>>(p, KIND, VERSION) {
                Ok(Loaded::Read(list)) => kills = list.into_iter().map(|k| (k.key(), k)).collect(),
                Ok(Loaded::Absent) => {}
                Ok(Loaded::SetAside { reason, moved_to }) => {
                    problem = Some(format!("{} unusable ({reason}), set aside as {}", p.display(), moved_to.display()));
                }
                Err(e) => problem = Some(format!("{} unreadable: {e}", p.display())),
            }
        }
        if let Some(why) = &problem {
            warn!(problem = %why, "kill switch state lost: kills kept before this start are not in force");
        }
        let mut ks = KillSwitch { path, kills };
        let ended = ks.expire(OffsetDateTime::now_utc());
        (ks, ended, problem)
    }

    /// Kills in force, `--all` first.
    pub fn active(&self) -> impl Iterator<Item = &Kill> {
        self.kills.values()
    }

    /// Blocks `vendor` (None: everything but the infrastructure rules) for `duration` (None:
    /// until lifted). `vendors`: the policy's vendor names. A second block replaces the first.
    pub fn block(
        &mut self,
        vendor: Option<&str>,
        duration: Option<Duration>,
        reason: Option<String>,
        by_uid: u32,
        vendors: &[String],
    ) -> Result<Kill, KillError> {
        if let Some(v) = vendor {
            if !vendors.iter().any(|n| n == v) {
                return Err(KillError::UnknownVendor { vendor: v.to_owned(), known: vendors.join(", ") });
            }
        }
        if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
            return Err(KillError::ReasonTooLong);
        }
        if duration.is_some_and(|d| d > MAX_FOR) {
            return Err(KillError::TooLong);
        }
        let since = OffsetDateTime::now_utc();
        let until = duration.map(|d| since + d);
        let kill = Kill { vendor: vendor.map(str::to_owned), since, until, reason, by_uid };
        self.kills.insert(kill.key(), kill.clone());
        Ok(kill)
    }

    /// Takes in a kill the kernel has in force that this switch does not know (an adopted
    /// datapath whose kill list was not kept: no `--state`, or an unreadable file): a restart
    /// never lifts a kill. `until_ns`: `bpf_ktime_get_ns`, `u64::MAX` for until lifted; one
    /// that already ended is ignored.
    pub fn import(&mut self, vendor: Option<String>, until_ns: u64) -> Option<Kill> {
        let key = vendor.clone().unwrap_or_else(|| ALL.to_owned());
        let now_mono = events::monotonic_now_ns();
        if self.kills.contains_key(&key) || until_ns <= now_mono {
            return None;
        }
        let now = OffsetDateTime::now_utc();
        let until = (until_ns != u64::MAX).then(|| now + Duration::from_nanos(until_ns - now_mono));
        let kill = Kill {
            vendor,
            since: now,
            until,
            reason: Some("in force in the pinned datapath when this agent started".into()),
            by_uid: 0,
        };
        self.kills.insert(key, kill.clone());
        Some(kill)
    }

    /// Lifts the kill of `vendor` (None: `--all`).
    pub fn unblock(&mut self, vendor: Option<&str>) -> Result<Kill, KillError> {
        let not_blocked = || KillError::NotBlocked(vendor.unwrap_or("--all").to_owned());
        // `*` is the key of `--all`, not a vendor: `unblock '*'` must not lift `block --all`.
        if vendor == Some(ALL) {
            return Err(not_blocked());
        }
        self.kills.remove(vendor.unwrap_or(ALL)).ok_or_else(not_blocked)
    }

    /// Removes and returns the kills that ran out by `now`.
    pub fn expire(&mut self, now: OffsetDateTime) -> Vec<Kill> {
        let (ended, kept): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.kills).into_iter().partition(|(_, k)| k.until.is_some_and(|u| u <= now));
        self.kills = kept;
        ended.into_values().collect()
    }

    /// Writes the kills to the state directory.
    pub fn save(&self) -> Result<(), KillError> {
        let Some(p) = &self.path else {
            return Err(KillError::NotSaved {
                path: "(no --state directory)".into(),
                error: "nowhere to keep it".into(),
            });
        };
        let list: Vec<&Kill> = self.kills.values().collect();
        statefile::save(p, KIND, VERSION, &list)
            .map_err(|e| KillError::NotSaved { path: p.display().to_string(), error: e.to_string() })
    }

    /// Puts the kills in the kernel: the vendors the policy in force names (by their ids), and
    /// `--all`. A kill of a vendor the policy no longer names waits until it does again.
    pub fn apply(&self, dp: &mut Datapath) -> Result<(), DatapathError> {
        let now_wall = OffsetDateTime::now_utc();
        let now_mono = events::monotonic_now_ns();
        let until_ns = |k: &Kill| match k.until {
            None => u64::MAX,
            Some(u) => {
                let left = Duration::try_from(u - now_wall).unwrap_or(Duration::ZERO);
                let left_ns = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
                // At least 1: 0 means "no kill" to the kernel, and a kill that just ran out is
                // tidied on the next tick.
                now_mono.saturating_add(left_ns).max(1)
            }
        };
        let mut vendors = HashMap::new();
        let mut all_until = 0;
        for k in self.kills.values() {
            match &k.vendor {
                None => all_until = until_ns(k),
                Some(v) => {
                    if let Some(id) = dp.vendor_id(v).filter(|&id| id != 0) {
                        vendors.insert(id, until_ns(k));
                    }
                }
            }
        }
        dp.set_kills(&vendors, all_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendors() -> Vec<String> {
        vec!["stripe".into(), "twilio".into()]
    }

    #[test]
    fn blocks_known_vendors_and_all_and_lifts_them() {
        let mut ks = KillSwitch::default();
        let e = ks.block(Some("nope"), None, None, 0, &vendors()).expect_err("unknown");
        assert!(e.to_string().contains("no vendor `nope`") && e.to_string().contains("stripe, twilio"), "{e}");
        ks.block(Some("stripe"), Some(Duration::from_secs(60)), Some("key leaked".into()), 0, &vendors()).expect("ok");
        ks.block(None, None, None, 0, &vendors()).expect("all");
        assert_eq!(ks.active().count(), 2);
        assert_eq!(ks.unblock(None).expect("lift all").vendor, None);
        assert_eq!(ks.unblock(Some("twilio")), Err(KillError::NotBlocked("twilio".into())));
        ks.block(None, None, None, 0, &vendors()).expect("all again");
        assert_eq!(ks.unblock(Some("*")), Err(KillError::NotBlocked("*".into())), "`*` is not --all");
        assert_eq!(ks.unblock(None).expect("lift all").vendor, None);
        let year = Duration::from_secs(367 * 86_400);
        assert_eq!(ks.block(Some("stripe"), Some(year), None, 0, &vendors()), Err(KillError::TooLong));
        let r = ks.active().next().expect("stripe").record("block");
        assert_eq!(
            (r["kind"].as_str(), r["vendor"].as_str(), r["all"].as_bool()),
            (Some("kill_switch"), Some("stripe"), Some(false))
        );
        assert_eq!(r["reason"], "key leaked");
    }

    #[test]
    fn expires_on_time_and_survives_a_reload_from_disk() {
        let dir = std::env::temp_dir().join(format!("ea-kills-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (mut ks, ended, problem) = KillSwitch::load(Some(&dir));
        assert!(ended.is_empty() && ks.active().count() == 0 && problem.is_none());
        ks.block(Some("stripe"), Some(Duration::from_secs(30)), None, 0, &vendors()).expect("ok");
        ks.block(Some("twilio"), None, None, 0, &vendors()).expect("ok");
        ks.save().expect("save");
        let (again, ended, _) = KillSwitch::load(Some(&dir));
        assert!(ended.is_empty());
        assert_eq!(again.active().cloned().collect::<Vec<_>>(), ks.active().cloned().collect::<Vec<_>>());
        std::fs::write(dir.join(FILE), b"{not json").expect("corrupt");
        let (none, _, problem) = KillSwitch::load(Some(&dir));
        assert!(none.active().count() == 0 && problem.is_some_and(|p| p.contains("set aside")), "a lost kill is said");
        let later = OffsetDateTime::now_utc() + Duration::from_secs(31);
        let gone = ks.expire(later);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].vendor.as_deref(), Some("stripe"));
        assert_eq!(ks.active().count(), 1, "a kill without an end stays");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_an_overlong_reason_and_says_when_it_cannot_persist() {
        let mut ks = KillSwitch::default();
        assert_eq!(ks.block(None, None, Some("x".repeat(600)), 0, &vendors()), Err(KillError::ReasonTooLong));
        ks.block(None, None, None, 0, &vendors()).expect("ok");
        assert!(matches!(ks.save(), Err(KillError::NotSaved { .. })));
    }
}
