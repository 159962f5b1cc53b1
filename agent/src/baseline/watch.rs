//! What the run loop feeds connections and flows to: the inventory (always, so `learn` and
//! `inventory` have something to read), the baselines (with `--state`), and the automated
//! responses the policy opts into. Writes `kind: "anomaly"` and `kind: "response"` records.

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use agent_common::{BlockKey, Event};

/// IPPROTO_TCP.
const IPPROTO_TCP: u32 = 6;
use serde::Serialize;
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{
    anomalies::{Anomaly, AnomalyKind, Baselines, Observation},
    blocks::{self, ActiveBlock},
    inventory::{party_key, Contact, Inventory},
    settings::BaselineSettings,
};
use crate::{
    control::audit::AuditLog,
    events::{self, connect::Who, enrich::Enriched, flows::FlowReport},
    kernel::Datapath,
    policy::Merged,
};

/// State is written this often (and when the agent stops).
const SAVE_EVERY: Duration = Duration::from_secs(60);

pub struct Watch {
    pub inventory: Inventory,
    baselines: Option<Baselines>,
    state: Option<PathBuf>,
    blocks: Vec<ActiveBlock>,
    last_save: Instant,
    /// The policy is in enforce mode: responses are carried out (in monitor mode, reported).
    enforce: bool,
    /// The audit trail, kept with the state.
    audit: Option<AuditLog>,
    /// Audit records for the sinks (`kind: "audit"`), until the pipeline takes them.
    audit_out: Vec<serde_json::Value>,
}

/// One connection or flow as the watchers see it.
struct Seen<'a> {
    ev: &'a Event,
    who: &'a Enriched,
    vendor: Option<&'a str>,
    domain: Option<&'a str>,
}

impl Watch {
    /// `state`: the directory inventory and baselines are kept in (`--state`), loaded now;
    /// without one, only an in-memory inventory is kept (for `learn`).
    pub fn new(state: Option<PathBuf>, merged: &Merged) -> Self {
        let settings = BaselineSettings::from_merged(merged);
        let (inventory, baselines) = match &state {
            Some(dir) => {
                let (inv, w1) = Inventory::load(dir);
                let (b, w2) = Baselines::load(dir, settings);
                for w in [w1, w2].into_iter().flatten() {
                    warn!(state = %dir.display(), problem = %w, "state set aside; starting it afresh");
                }
                info!(state = %dir.display(), keys = b.keys(), "baselines loaded");
                (inv, Some(b))
            }
            None => (Inventory::default(), None),
        };
        let audit = state.as_deref().and_then(|dir| match AuditLog::open(dir) {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(state = %dir.display(), error = %e, "the audit trail cannot be opened: nothing is audited");
                None
            }
        });
        Watch {
            inventory,
            baselines,
            state,
            blocks: Vec::new(),
            last_save: Instant::now(),
            enforce: enforcing(merged),
            audit,
            audit_out: Vec::new(),
        }
    }

    /// A new policy: new thresholds and responses; what was learnt stays.
    pub fn set_policy(&mut self, merged: &Merged) {
        self.enforce = enforcing(merged);
        if let Some(b) = &mut self.baselines {
            b.set_settings(BaselineSettings::from_merged(merged));
        }
    }

    /// An attempt the kernel let through. A UDP (or ICMP) socket counts once it carries data
    /// (see [`Self::on_flow`]): glibc connects a UDP socket to every address a lookup returns,
    /// to sort them, and sends nothing; those are not contacts.
    pub fn on_connect(
        &mut self,
        dp: &mut Datapath,
        ev: &Event,
        who: &Enriched,
        vendor: Option<&str>,
        domain: Option<&str>,
    ) -> Vec<serde_json::Value> {
        if u32::from(ev.proto) != IPPROTO_TCP {
            return Vec::new();
        }
        self.contacted(dp, &Seen { ev, who, vendor, domain })
    }

    fn contacted(&mut self, dp: &mut Datapath, seen: &Seen<'_>) -> Vec<serde_json::Value> {
        let process = identity(seen.ev, seen.who);
        let now = OffsetDateTime::now_utc();
        let contact = contact(seen, &process);
        self.inventory.record_connect(now, &contact);
        let Some(b) = &mut self.baselines else { return Vec::new() };
        let party = party_key(&contact).1;
        let destination = destination(seen);
        let obs = Observation { process: &process, party: &party, vendor: seen.vendor, destination: &destination };
        let found = b.on_connect(now, &obs);
        self.respond(dp, seen, found)
    }

    /// Bytes a flow carried since it was last reported.
    pub fn on_flow(&mut self, dp: &mut Datapath, r: &FlowReport) -> Vec<serde_json::Value> {
        if r.delta_out == 0 && r.delta_in == 0 {
            return Vec::new();
        }
        let f = &r.flow;
        let seen = Seen { ev: &r.ev, who: &f.proc.who, vendor: f.names.vendor.as_deref(), domain: f.domain.as_deref() };
        // The first bytes of a UDP or ICMP flow: the contact its connect did not count.
        let mut out = if u32::from(r.ev.proto) != IPPROTO_TCP && f.reported_out == 0 && f.reported_in == 0 {
            self.contacted(dp, &seen)
        } else {
            Vec::new()
        };
        let process = identity(&r.ev, &f.proc.who);
        let now = OffsetDateTime::now_utc();
        let contact = contact(&seen, &process);
        self.inventory.record_bytes(now, &contact, r.delta_out, r.delta_in);
        let Some(b) = &mut self.baselines else { return out };
        let party = party_key(&contact).1;
        let destination = destination(&seen);
        let obs = Observation { process: &process, party: &party, vendor: seen.vendor, destination: &destination };
        let found = b.on_bytes(now, &obs, r.delta_out, r.delta_in);
        out.extend(self.respond(dp, &seen, found));
        out
    }

    /// Anomaly records, and the blocks the policy asks for.
    fn respond(&mut self, dp: &mut Datapath, seen: &Seen<'_>, found: Vec<Anomaly>) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let ts_offset = events::monotonic_to_realtime_offset();
        for a in found {
            let block = self.block_for(dp, seen, &a);
            let action = match block {
                Some(_) if self.enforce => "block",
                Some(_) => "would_block",
                None => "none",
            };
            let rec = AnomalyRecord {
                ts: events::rfc3339(ts_offset + i128::from(events::monotonic_now_ns())),
                kind: "anomaly",
                who: who(seen),
                anomaly: a.kind,
                process: &a.process,
                party: &a.party,
                vendor: a.vendor.as_deref(),
                destination: &a.destination,
                dst: events::dst(seen.ev),
                dport: seen.ev.dport,
                proto: events::proto(seen.ev),
                cookie: seen.ev.cookie,
                baseline: a.baseline,
                observed: a.observed,
                threshold: a.threshold,
                unit: a.unit,
                action,
                block_seconds: block,
            };
            warn!(anomaly = %a.kind, process = %a.process, party = %a.party, observed = a.observed, threshold = a.threshold, "anomaly");
            out.extend(serde_json::to_value(&rec).ok());
            if let (Some(seconds), true) = (block, self.enforce) {
                let detail = serde_json::json!({
                    "vendor": a.vendor, "process": a.process, "anomaly": a.kind, "seconds": seconds,
                    "observed": a.observed, "threshold": a.threshold,
                });
                self.audit("block_start", detail);
                out.extend(
                    serde_json::to_value(response_record(
                        &a.vendor.unwrap_or_default(),
                        &a.process,
                        a.kind,
                        seconds,
                        "start",
                    ))
                    .ok(),
                );
            }
        }
        out
    }

    /// Blocks the process–vendor pair if the vendor's `response` covers this anomaly; returns
    /// the block's length in seconds.
    fn block_for(&mut self, dp: &mut Datapath, seen: &Seen<'_>, a: &Anomaly) -> Option<u64> {
        let vendor = a.vendor.as_deref()?;
        let dur = self.baselines.as_ref()?.settings().response(vendor, a.kind)?;
        if !self.enforce {
            // Monitor mode refuses nothing: the anomaly says what enforce mode would have done.
            return Some(dur.as_secs());
        }
        if seen.ev.exe_ino == 0 {
            warn!(vendor, process = %a.process, "cannot block: the executable's identity is unknown");
            return None;
        }
        let Some(id) = dp.vendor_id(vendor) else {
            warn!(vendor, "cannot block: the vendor is not installed");
            return None;
        };
        let key = BlockKey { vendor: u32::from(id), exe_dev: seen.ev.exe_dev, exe_ino: seen.ev.exe_ino };
        let until_ns = events::monotonic_now_ns().saturating_add(dur.as_nanos() as u64);
        if let Err(e) = dp.set_block(key, until_ns) {
            warn!(error = %e, vendor, "blocking failed");
            return None;
        }
        // One block per key: a second anomaly extends it.
        self.blocks.retain(|b| b.key() != key);
        let seconds = dur.as_secs();
        self.blocks.push(ActiveBlock {
            vendor_id: key.vendor,
            exe_dev: key.exe_dev,
            exe_ino: key.exe_ino,
            until_ns,
            vendor: vendor.to_owned(),
            process: a.process.clone(),
            anomaly: a.kind,
            seconds,
        });
        warn!(vendor, process = %a.process, anomaly = %a.kind, seconds, "automated response: vendor blocked for this executable");
        self.save_blocks();
        Some(seconds)
    }

    /// Every second: intervals close, blocks that ran out are lifted, state is saved now and then.
    pub fn tick(&mut self, dp: &mut Datapath) -> Vec<serde_json::Value> {
        if let Some(b) = &mut self.baselines {
            b.tick(OffsetDateTime::now_utc());
        }
        let now = events::monotonic_now_ns();
        let mut out = Vec::new();
        let (ended, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.blocks).into_iter().partition(|b| b.until_ns <= now);
        self.blocks = kept;
        if !ended.is_empty() {
            self.save_blocks();
        }
        for b in ended {
            // The kernel stopped refusing at `until_ns` by itself; the entry is only tidied.
            if let Err(e) = dp.remove_block(&b.key()) {
                warn!(error = %e, "removing an expired block failed");
            }
            info!(vendor = %b.vendor, process = %b.process, "automated response ended");
            self.audit(
                "block_end",
                serde_json::json!({"vendor": b.vendor, "process": b.process, "anomaly": b.anomaly}),
            );
            out.extend(serde_json::to_value(response_record(&b.vendor, &b.process, b.anomaly, b.seconds, "end")).ok());
        }
        if self.last_save.elapsed() >= SAVE_EVERY {
            self.save();
        }
        out
    }

    /// Appends a record to the audit trail, if there is one (`--state`). A failure to write is
    /// logged, never fatal: enforcement must not stop because a disk is full. The record is also
    /// kept for the sinks (with or without a trail): `kind: "audit"`, `audit` the trail's kind,
    /// and its `detail`; the hash chain stays in the trail.
    pub fn audit(&mut self, kind: &str, detail: serde_json::Value) {
        let ts = events::rfc3339(OffsetDateTime::now_utc().unix_timestamp_nanos());
        let mut copy = serde_json::json!({"ts": ts, "kind": "audit", "audit": kind, "detail": detail.clone()});
        if let Some(a) = &mut self.audit {
            match a.append(kind, detail) {
                // The sinks' copy carries the record's place in the chain: the last hash a
                // sink received anchors the file's end (`audit verify --last`).
                Ok((seq, hash)) => {
                    copy["seq"] = seq.into();
                    copy["hash"] = hash.into();
                }
                Err(e) => warn!(kind, error = %e, "writing the audit trail failed"),
            }
        }
        self.audit_out.push(copy);
    }

    /// The audit records written since the last call, for the sinks.
    pub fn take_audit(&mut self) -> Vec<serde_json::Value> {
        std::mem::take(&mut self.audit_out)
    }

    /// The fill of the inventory and of the baselines (when kept).
    pub fn fill(&self) -> Vec<crate::memory::CacheFill> {
        let mut out = self.inventory.fill().to_vec();
        out.extend(self.baselines.iter().flat_map(Baselines::fill));
        out
    }

    /// Automated blocks in force.
    pub fn blocks_active(&self) -> usize {
        self.blocks.len()
    }

    /// The automated blocks in force, for `status`: vendor, process, anomaly, seconds left.
    pub fn blocks(&self) -> Vec<serde_json::Value> {
        let now = events::monotonic_now_ns();
        self.blocks
            .iter()
            .map(|b| {
                serde_json::json!({
                    "vendor": b.vendor, "process": b.process, "anomaly": b.anomaly,
                    "seconds_left": b.until_ns.saturating_sub(now) / 1_000_000_000,
                })
            })
            .collect()
    }

    /// The blocks in force, for the agent that adopts the datapath (see `blocks`).
    fn save_blocks(&self) {
        let Some(dir) = &self.state else { return };
        if let Err(e) = blocks::save(dir, &self.blocks) {
            warn!(state = %dir.display(), error = %e, "saving the automated blocks failed: their end will not be reported after a restart");
        }
    }

    /// An adopted datapath: the blocks an earlier agent started, still in force in the kernel,
    /// are tracked again, so that their end is reported. Returns how many.
    pub fn resume_blocks(&mut self, dp: &mut Datapath) -> usize {
        let Some(dir) = &self.state else { return 0 };
        let kept = match blocks::load(dir) {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "the automated blocks an earlier agent kept cannot be read: they stay in force, their end is not reported");
                return 0;
            }
        };
        // The vendor's id must still be its own: ids are renumbered when names are lost.
        let kept = kept.into_iter().filter(|b| dp.vendor_id(&b.vendor).map(u32::from) == Some(b.vendor_id)).collect();
        let resumed = blocks::still_in_force(kept, |k| dp.block_until(k).ok().flatten());
        let n = resumed.len();
        self.blocks = resumed;
        self.save_blocks();
        n
    }

    pub fn save(&mut self) {
        self.last_save = Instant::now();
        let Some(dir) = &self.state else { return };
        if let Err(e) = self.inventory.save(dir) {
            warn!(state = %dir.display(), error = %e, "saving the inventory failed");
        }
        if let Some(b) = &self.baselines {
            info!(keys = b.keys(), evicted = b.evicted(), "baselines saved");
            if let Err(e) = b.save(dir) {
                warn!(state = %dir.display(), error = %e, "saving the baselines failed");
            }
        }
    }
}

/// The process identity baselines and the inventory key on: the executable, else the name.
fn identity(ev: &Event, who: &Enriched) -> String {
    match &who.proc.exe {
        Some(exe) => exe.clone(),
        None => format!("comm:{}", events::c_str(&ev.comm)),
    }
}

fn contact<'a>(s: &Seen<'a>, process: &'a str) -> Contact<'a> {
    Contact {
        process,
        uid: s.ev.uid,
        vendor: s.vendor,
        domain: s.domain,
        dst: events::dst(s.ev),
        dport: s.ev.dport,
        proto: events::proto(s.ev),
    }
}

fn destination(s: &Seen<'_>) -> String {
    s.domain.map_or_else(|| events::dst(s.ev).to_string(), str::to_owned)
}

fn who<'a>(s: &Seen<'a>) -> Who<'a> {
    let ev = s.ev;
    Who::new([ev.pid, ev.tid, ev.uid, ev.gid], &ev.comm, ev.cgroup_id, s.who)
}

/// `kind: "anomaly"`.
#[derive(Serialize)]
struct AnomalyRecord<'a> {
    ts: String,
    kind: &'static str,
    #[serde(flatten)]
    who: Who<'a>,
    anomaly: AnomalyKind,
    /// The process identity the baseline is for (executable, or `comm:NAME`).
    process: &'a str,
    /// Vendor, else registrable domain, else address.
    party: &'a str,
    vendor: Option<&'a str>,
    destination: &'a str,
    dst: IpAddr,
    dport: u16,
    proto: &'static str,
    /// The socket of the connection or flow that triggered it.
    cookie: u64,
    baseline: f64,
    observed: f64,
    threshold: f64,
    unit: &'static str,
    /// `block` when the vendor's `response` blocked the process–vendor pair, else `none`.
    action: &'static str,
    block_seconds: Option<u64>,
}

/// `kind: "response"`: an automated block starting or ending.
#[derive(Serialize)]
struct ResponseRecord<'a> {
    ts: String,
    kind: &'static str,
    state: &'static str,
    action: &'static str,
    vendor: &'a str,
    process: &'a str,
    anomaly: AnomalyKind,
    seconds: u64,
}

fn response_record<'a>(
    vendor: &'a str,
    process: &'a str,
    anomaly: AnomalyKind,
    seconds: u64,
    state: &'static str,
) -> ResponseRecord<'a> {
    let ts = events::rfc3339(events::monotonic_to_realtime_offset() + i128::from(events::monotonic_now_ns()));
    ResponseRecord { ts, kind: "response", state, action: "block", vendor, process, anomaly, seconds }
}

fn enforcing(m: &Merged) -> bool {
    m.mode == crate::policy::model::Mode::Enforce
}
