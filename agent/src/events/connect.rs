//! The record of an outbound attempt (`kind: "connect"`) and the process fields every record
//! kind shares. Field names and meanings are a stable interface (README "Event format"): new
//! fields may be added, none renamed or removed.

use agent_common::{event_flags, event_flags2, Event, RULE_DEFAULT};
use serde::Serialize;

use crate::{
    container::{Qos, Runtime},
    events::{self, enrich::Enriched},
    policy::CompiledPolicy,
};

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
    /// Container id (64 hex digits), from the cgroup path.
    pub container: Option<&'a str>,
    /// `docker`, `containerd`, `cri-o`, `podman` or `unknown` (a bare id under a pod).
    pub container_runtime: Option<&'static str>,
    /// Kubernetes pod UID, from the pod's cgroup.
    pub pod_uid: Option<&'a str>,
    /// `guaranteed`, `burstable` or `besteffort`.
    pub pod_qos: Option<&'static str>,
    /// The pod's namespace, name and labels, from this node's pod list (config `kubernetes`);
    /// absent without one, or for a pod the list does not have yet.
    pub pod_namespace: Option<&'a str>,
    pub pod_name: Option<&'a str>,
    pub pod_labels: Option<&'a std::collections::BTreeMap<String, String>>,
}

impl<'a> Who<'a> {
    /// The kernel's identity fields, with what enrichment found.
    pub fn new(ids: [u32; 4], comm: &[u8], cgroup_id: u64, who: &'a Enriched) -> Self {
        let [pid, tid, uid, gid] = ids;
        let id = who.identity.as_deref();
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
            container: id.and_then(|i| i.container.as_deref()),
            container_runtime: id.and_then(|i| i.runtime).map(Runtime::as_str),
            pod_uid: id.and_then(|i| i.pod_uid.as_deref()),
            pod_qos: id.and_then(|i| i.qos).map(Qos::as_str),
            pod_namespace: who.pod.as_deref().map(|p| p.namespace.as_str()),
            pod_name: who.pod.as_deref().map(|p| p.name.as_str()),
            pod_labels: who.pod.as_deref().map(|p| &p.labels),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub ts: String,
    /// `connect` for these; `flow` for flows (see `flows`), which carry these fields too.
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
    /// `dst` is under a NAT64 prefix (64:ff9b::/96 or one of the policy's `nat64Prefixes`) and
    /// was decided as this IPv4 address, the one it embeds; `dst` stays the address on the wire.
    /// Null otherwise.
    pub nat64: Option<String>,
    /// Why: `rule` (a rule allowed it), `process` (a vendor's destination, from a process the
    /// vendor does not allow; `vendor` and `rule` name that vendor), `default` (no rule), or
    /// `kill_switch` (refused by `egress-agent block`; `rule` names the killed vendor's rule, or
    /// the rule that would have decided).
    pub reason: &'static str,
    /// The name the process resolved to `dst`, when known.
    pub domain: Option<String>,
    /// The domain pattern whose learnt address decided, if one did.
    pub domain_rule: Option<String>,
    /// Attempts with the same process, destination, verdict and rule folded into this record by
    /// the per-key rate limit since the previous one (0: none).
    pub suppressed: u64,
    /// An automated response refused it (`verdict` is `deny`).
    pub blocked: bool,
    /// Refused by the operator's kill switch (`egress-agent block`), whatever the policy said.
    pub kill_switch: bool,
    /// The process's executable is not the file it executed (`prctl(PR_SET_MM_MAP)` pointed it
    /// elsewhere): `exe` names the file executed, `exe_now` what its exe link says now; it
    /// matches no `exe` selector.
    pub exe_replaced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_now: Option<String>,
    /// The environment at the process's exec steered its dynamic loader (`LD_PRELOAD`,
    /// `LD_AUDIT`, `LD_LIBRARY_PATH`): it fails `untampered: true` selectors.
    pub loader_env: bool,
    /// The process was traced (ptrace) since its exec: it fails `untampered: true` selectors.
    pub traced: bool,
    /// An MPTCP subflow the kernel's path manager opened (from a kernel worker) for this
    /// process's connection: decided and reported as the process's.
    pub mptcp_subflow: bool,
    /// The agent did not see the process's exec (it ran before the agent started, or joined the
    /// watched cgroup since): it fails `untampered: true` selectors until it execs again.
    pub exec_unseen: bool,
    /// A packet of this socket carried a source route (IPv6 routing header, IPv4 source-route
    /// option): `dst` is the hop it was sent to first. Dropped in enforce mode.
    pub source_route: bool,
    /// A socket refused at creation (enforce mode) or reported (monitor mode) because no hook
    /// decides its sends: its type (`stream`, `dgram`, `seqpacket`, `rdm`, `dccp`, …);
    /// `proto` names its protocol, `dst` is unset (`0.0.0.0`). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_type: Option<&'static str>,
    /// A `flow` record will follow (let through and tracked; false when refused, or when the
    /// flow table was full).
    pub flow: bool,
}

/// What an event's `vendor`, `rule` and `policy` fields say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleNames {
    pub vendor: Option<String>,
    pub rule: String,
    pub policy: Option<String>,
}

impl RuleNames {
    /// Names the rule of `ev` in `policy`, the policy of the event's generation, if known.
    pub fn of(ev: &Event, policy: Option<&CompiledPolicy>) -> Self {
        let rule = policy.and_then(|p| p.rule(ev.rule_id));
        RuleNames {
            vendor: rule.and_then(|r| r.vendor.clone()),
            rule: match rule {
                Some(r) => r.name.clone(),
                None if ev.rule_id == RULE_DEFAULT => "default".to_owned(),
                None => "unknown".to_owned(),
            },
            policy: policy.map(|p| p.name.clone()),
        }
    }
}

/// `SOCK_*` by name.
fn socket_type(t: u32) -> &'static str {
    match t {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        4 => "rdm",
        5 => "seqpacket",
        6 => "dccp",
        10 => "packet",
        _ => "other",
    }
}

/// Builds the record of one event.
pub fn record<'a>(
    ev: &Event,
    who: &'a Enriched,
    names: &'a RuleNames,
    ts_offset: i128,
    domain: Option<String>,
    domain_rule: Option<String>,
) -> Record<'a> {
    Record {
        ts: events::rfc3339(ts_offset + i128::from(ev.ts_ns)),
        kind: "connect",
        who: Who::new([ev.pid, ev.tid, ev.uid, ev.gid], &ev.comm, ev.cgroup_id, who),
        proto: events::proto(ev),
        family: if ev.family == 2 { "ipv4" } else { "ipv6" },
        dst: events::dst(ev).to_string(),
        dport: ev.dport,
        verdict: events::verdict(ev),
        vendor: names.vendor.as_deref(),
        rule: &names.rule,
        policy: names.policy.as_deref(),
        hook: events::hook(ev),
        cookie: ev.cookie,
        v4_mapped: ev.flags & event_flags::V4_MAPPED != 0,
        nat64: (ev.flags & event_flags::NAT64 != 0).then(|| {
            let a = &ev.daddr;
            std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]).to_string()
        }),
        reason: if ev.flags2 & event_flags2::SOURCE_ROUTED != 0 {
            "source_route"
        } else if ev.flags2 & event_flags2::UNDECIDABLE_SOCKET != 0 {
            "socket"
        } else if ev.flags & event_flags::KILLED != 0 {
            "kill_switch"
        } else if ev.flags & event_flags::PROCESS_NOT_ALLOWED != 0 {
            "process"
        } else if ev.rule_id == RULE_DEFAULT {
            "default"
        } else {
            "rule"
        },
        domain,
        domain_rule,
        suppressed: 0,
        blocked: ev.flags & event_flags::BLOCKED != 0,
        kill_switch: ev.flags & event_flags::KILLED != 0,
        exe_replaced: ev.flags2 & event_flags2::EXE_REPLACED != 0,
        exe_now: (ev.flags2 & event_flags2::EXE_REPLACED != 0)
            .then(|| std::fs::read_link(format!("/proc/{}/exe", ev.pid)).ok())
            .flatten()
            .map(|p| p.to_string_lossy().into_owned()),
        loader_env: ev.flags2 & event_flags2::LOADER_ENV != 0,
        traced: ev.flags2 & event_flags2::TRACED != 0,
        mptcp_subflow: ev.flags2 & event_flags2::MPTCP_SUBFLOW != 0,
        exec_unseen: ev.flags2 & event_flags2::EXEC_UNSEEN != 0,
        source_route: ev.flags2 & event_flags2::SOURCE_ROUTED != 0,
        socket_type: (ev.flags2 & event_flags2::UNDECIDABLE_SOCKET != 0).then(|| socket_type(ev.sock_type)),
        flow: ev.verdict != agent_common::verdict::DENY && ev.flags & event_flags::NO_FLOW == 0,
    }
}
