//! The event stream: one JSON object per line, to stdout or a file. Field names and meanings are a
//! stable interface (README "Event format"); new fields may be added, none renamed or removed.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use agent_common::{event_flags, Event, RULE_DEFAULT};
use serde::Serialize;

use crate::{enrich::Enriched, events, policy::CompiledPolicy};

/// Who made an attempt or a lookup: the fields every record kind shares.
#[derive(Debug, Serialize)]
pub struct Who<'a> {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub exe: Option<&'a str>,
    pub cmdline: Option<&'a [String]>,
    pub cgroup: Option<&'a str>,
    pub cgroup_id: u64,
    pub container: Option<&'a str>,
}

impl<'a> Who<'a> {
    /// The kernel's identity fields, with what enrichment found.
    pub fn new(ids: [u32; 4], comm: &[u8], cgroup_id: u64, who: &'a Enriched) -> Self {
        let [pid, tid, uid, gid] = ids;
        Who {
            pid,
            tid,
            uid,
            gid,
            comm: events::c_str(comm),
            exe: who.proc.exe.as_deref(),
            cmdline: who.proc.cmdline.as_deref(),
            cgroup: who.cgroup.as_deref(),
            cgroup_id,
            container: who.container.as_deref(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub ts: String,
    /// `connect` for these; `dns` for DNS events (see `dns::event`).
    pub kind: &'static str,
    #[serde(flatten)]
    pub who: Who<'a>,
    pub proto: &'static str,
    /// `ipv4` or `ipv6`, as matched (an IPv4-mapped destination is `ipv4`).
    pub family: &'static str,
    pub dst: String,
    pub dport: u16,
    pub verdict: &'static str,
    pub vendor: Option<&'a str>,
    pub rule: &'a str,
    /// Name of the policy (metadata.name) that decided; null if that policy is no longer known.
    pub policy: Option<&'a str>,
    pub hook: &'static str,
    pub cookie: u64,
    /// The application asked for an IPv4-mapped IPv6 address; `dst` is the IPv4 address matched.
    pub v4_mapped: bool,
    /// Why: `rule` (a rule allowed it), `process` (a vendor's destination, from a process the
    /// vendor does not allow; `vendor` and `rule` name that vendor) or `default` (no rule).
    pub reason: &'static str,
    /// The name the process resolved to `dst`, when known.
    pub domain: Option<String>,
    /// The domain pattern whose learnt address decided, if one did.
    pub domain_rule: Option<String>,
}

/// Builds the record of one event. `policy` is the policy of the event's generation, if known.
pub fn record<'a>(
    ev: &Event,
    who: &'a Enriched,
    policy: Option<&'a CompiledPolicy>,
    ts_offset: i128,
    domain: Option<String>,
    domain_rule: Option<String>,
) -> Record<'a> {
    let rule = policy.and_then(|p| p.rule(ev.rule_id));
    Record {
        ts: events::rfc3339(ts_offset + i128::from(ev.ts_ns)),
        kind: "connect",
        who: Who::new([ev.pid, ev.tid, ev.uid, ev.gid], &ev.comm, ev.cgroup_id, who),
        proto: events::proto(ev),
        family: if ev.family == 2 { "ipv4" } else { "ipv6" },
        dst: events::dst(ev).to_string(),
        dport: ev.dport,
        verdict: events::verdict(ev),
        vendor: rule.and_then(|r| r.vendor.as_deref()),
        rule: match rule {
            Some(r) => &r.name,
            None if ev.rule_id == RULE_DEFAULT => "default",
            None => "unknown",
        },
        policy: policy.map(|p| p.name.as_str()),
        hook: events::hook(ev),
        cookie: ev.cookie,
        v4_mapped: ev.flags & event_flags::V4_MAPPED != 0,
        reason: if ev.flags & event_flags::PROCESS_NOT_ALLOWED != 0 {
            "process"
        } else if ev.rule_id == RULE_DEFAULT {
            "default"
        } else {
            "rule"
        },
        domain,
        domain_rule,
    }
}

pub struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Sink {
    /// `-` is stdout; anything else a file, appended to (so a restart does not erase history).
    pub fn open(target: &Path) -> io::Result<Self> {
        let w: Box<dyn Write + Send> = if target == Path::new("-") {
            Box::new(io::stdout())
        } else {
            // Owner-only: events name processes and may carry command lines.
            Box::new(OpenOptions::new().create(true).append(true).mode(0o600).open(target)?)
        };
        Ok(Self { out: BufWriter::with_capacity(64 * 1024, w) })
    }

    pub fn write<T: Serialize>(&mut self, rec: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, rec).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    /// Called after each batch read from the ring buffer, so readers see events promptly.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
