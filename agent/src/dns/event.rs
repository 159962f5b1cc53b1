//! The JSON record of a kernel DNS event (`kind: "dns"`). The kernel reports what it decided and
//! learnt; the message itself (its first bytes) is decoded here with hickory-proto, so names,
//! types and CNAME chains are read by a well-kept parser, not by hand.

use std::net::IpAddr;

use agent_common::{dns_flags, dns_phase, verdict, DnsEvent, DNS_EVENT_ADDRS, DNS_EVENT_MSG};
use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};
use serde::Serialize;

use crate::{
    dns::name::name_from_wire,
    events::{self, addr, connect::Who, enrich::Enriched},
    policy::CompiledPolicy,
};

#[derive(Debug, Serialize)]
pub struct Answer {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    pub data: String,
}

#[derive(Debug, Serialize)]
pub struct DnsRecord<'a> {
    pub ts: String,
    pub kind: &'static str,
    /// `query` (refused or reported when sent), `answer` (matched and parsed), `rejected` (an
    /// answer that was not trusted), `spoof` (an answer forged from a raw socket).
    pub phase: &'static str,
    #[serde(flatten)]
    pub who: Who<'a>,
    pub proto: &'static str,
    pub family: &'static str,
    /// The resolver: where the query went, or where the answer came from.
    pub server: String,
    pub server_port: u16,
    /// The name asked for (lowercase, A-labels); what rules match.
    pub query: String,
    pub qtype: String,
    pub rcode: Option<String>,
    /// The answer section as decoded (null when the message was too long to copy whole).
    pub answers: Option<Vec<Answer>>,
    /// Addresses the kernel learnt from this answer (allowed until TTL + grace).
    pub addresses: Vec<String>,
    /// How many it learnt (`addresses` lists the first 16).
    pub learnt: u32,
    pub ttl: Option<u32>,
    /// Verdict of the lookup: `allow` (a rule covers the name) or `dns.unlisted`'s.
    pub verdict: &'static str,
    /// The domain pattern the name matched.
    pub domain_rule: Option<String>,
    /// Vendors (and allow rules) whose rules the learnt addresses carry.
    pub rules: Vec<String>,
    pub policy: Option<&'a str>,
    /// Why an answer was not trusted, or what limited it.
    pub problems: Vec<&'static str>,
    pub cookie: u64,
}

const FLAG_NAMES: [(u16, &str); 9] = [
    (dns_flags::NO_QUERY, "no_matching_query"),
    (dns_flags::WRONG_SOURCE, "wrong_source"),
    (dns_flags::BAD_CHECKSUM, "bad_checksum"),
    (dns_flags::WRONG_QUESTION, "wrong_question"),
    (dns_flags::MALFORMED, "malformed"),
    (dns_flags::PARSE_LIMIT, "parse_limit"),
    (dns_flags::LEARN_FULL, "learnt_table_full"),
    (dns_flags::SLOT_EVICTED, "pattern_evicted"),
    (dns_flags::MSG_CUT, "message_cut"),
];

/// The addresses the kernel learnt, as listed in the event.
pub fn learnt_addrs(ev: &DnsEvent) -> Vec<IpAddr> {
    let n = (ev.n_addrs as usize).min(DNS_EVENT_ADDRS);
    (0..n).map(|i| addr(ev.addr_family[i], &ev.addrs[i])).collect()
}

/// Every address an answer event names: those the kernel learnt, and — when the message was
/// copied whole — the A/AAAA records of its answer section (an unlisted name's answer teaches
/// the kernel nothing, but its flows are still named). IPv4-mapped addresses as IPv4, as
/// connect events show them.
pub fn answer_addrs(ev: &DnsEvent) -> Vec<IpAddr> {
    let mut out = learnt_addrs(ev);
    if ev.msg_len as usize <= DNS_EVENT_MSG {
        if let Ok(m) = Message::from_vec(&ev.msg[..ev.msg_len as usize]) {
            for r in &m.answers {
                match &r.data {
                    RData::A(a) => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
    }
    let mut out: Vec<IpAddr> = out
        .into_iter()
        .map(|a| match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The query name of an event.
pub fn query_name(ev: &DnsEvent) -> String {
    name_from_wire(&ev.name[..(ev.name_len as usize).min(ev.name.len())])
}

pub fn record<'a>(
    ev: &DnsEvent,
    who: &'a Enriched,
    policy: Option<&'a CompiledPolicy>,
    pattern: Option<String>,
    ts_offset: i128,
) -> DnsRecord<'a> {
    let copied = (ev.msg_len as usize).min(DNS_EVENT_MSG);
    let message = (ev.msg_len as usize <= DNS_EVENT_MSG).then(|| Message::from_vec(&ev.msg[..copied]).ok()).flatten();
    let answers = message.as_ref().map(|m| {
        m.answers
            .iter()
            .map(|r| Answer {
                name: r.name.to_ascii().trim_end_matches('.').to_lowercase(),
                rtype: r.record_type().to_string(),
                ttl: r.ttl,
                data: match &r.data {
                    RData::A(a) => a.0.to_string(),
                    RData::AAAA(a) => a.0.to_string(),
                    RData::CNAME(c) => c.0.to_ascii().trim_end_matches('.').to_lowercase(),
                    other => other.to_string(),
                },
            })
            .collect()
    });
    let rules = match (policy, &pattern) {
        (Some(p), Some(pat)) => pat.parse().map_or_else(
            |_| Vec::new(),
            |pat| {
                let v = p.domain_rules(&pat);
                let mut names: Vec<String> = p.tables.entries[v.first as usize..(v.first + v.count) as usize]
                    .iter()
                    .filter_map(|e| p.rule(e.rule_id).map(|r| r.name.clone()))
                    .collect();
                names.dedup();
                names
            },
        ),
        _ => Vec::new(),
    };
    let answered = ev.phase == dns_phase::ANSWER;
    DnsRecord {
        ts: events::rfc3339(ts_offset + i128::from(ev.ts_ns)),
        kind: "dns",
        phase: match ev.phase {
            dns_phase::QUERY => "query",
            dns_phase::ANSWER => "answer",
            dns_phase::REJECTED => "rejected",
            _ => "spoof",
        },
        who: Who::new([ev.pid, ev.tid, ev.uid, ev.gid], &ev.comm, ev.cgroup_id, who),
        proto: if ev.proto == 6 { "tcp" } else { "udp" },
        family: if ev.family == 2 { "ipv4" } else { "ipv6" },
        server: addr(ev.family, &ev.server).to_string(),
        server_port: ev.server_port,
        query: query_name(ev),
        qtype: RecordType::from(ev.qtype).to_string(),
        rcode: answered.then(|| {
            match ev.rcode {
                0 => "NOERROR",
                1 => "FORMERR",
                2 => "SERVFAIL",
                3 => "NXDOMAIN",
                4 => "NOTIMP",
                5 => "REFUSED",
                _ => "OTHER",
            }
            .to_owned()
        }),
        answers,
        addresses: learnt_addrs(ev).iter().map(ToString::to_string).collect(),
        learnt: ev.n_addrs,
        ttl: (answered && ev.n_addrs > 0).then_some(ev.ttl_min),
        verdict: match ev.verdict {
            verdict::ALLOW => "allow",
            verdict::DENY => "deny",
            _ => "alert",
        },
        domain_rule: pattern,
        rules,
        policy: policy.map(|p| p.name.as_str()),
        problems: FLAG_NAMES.iter().filter(|(b, _)| ev.flags & b != 0).map(|(_, n)| *n).collect(),
        cookie: ev.cookie,
    }
}

/// The process identity of a DNS event, as the enricher reads it from connect events.
pub fn identity(d: &agent_common::DnsEvent) -> agent_common::Event {
    agent_common::Event {
        kind: agent_common::record::CONNECT,
        pid: d.pid,
        tid: d.tid,
        uid: d.uid,
        gid: d.gid,
        exe_dev: d.exe_dev,
        rule_id: agent_common::RULE_DEFAULT,
        generation: d.generation,
        ts_ns: d.ts_ns,
        cookie: d.cookie,
        cgroup_id: d.cgroup_id,
        exe_ino: d.exe_ino,
        start_ns: d.start_ns,
        daddr: d.server,
        comm: d.comm,
        dport: d.server_port,
        family: d.family,
        proto: d.proto,
        verdict: d.verdict,
        hook: 0,
        flags: 0,
        flags2: 0,
        domain_id: d.domain_id,
        sock_type: 0,
    }
}
