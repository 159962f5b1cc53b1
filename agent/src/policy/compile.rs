//! Compiles a policy into the tables the kernel matches against (see `agent_common::DestValue`):
//! one longest-prefix-match entry per distinct prefix, carrying the rule entries of that prefix and
//! of every enclosing prefix, most specific first. One trie lookup then yields every rule that can
//! apply to an address, and the kernel only has to check ports and protocols.
//!
//! [`CompiledPolicy::decide`] answers from the same tables with the same algorithm as the kernel,
//! so tools (and tests) can ask what the kernel would do.

use std::{collections::HashMap, net::IpAddr};

use agent_common::{
    mode, proto_bits, verdict, DestValue, RuleEntry, MAX_PREFIXES, MAX_RULES_PER_PREFIX,
    MAX_RULE_ENTRIES, RULE_DEFAULT,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    model::{DefaultAction, Mode, PolicyDoc, PortRange, Protocol},
    PolicyError,
};

/// What an event's `rule` and `vendor` fields name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub name: String,
    pub vendor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub name: String,
    pub mode: Mode,
    pub default: DefaultAction,
    /// Indexed by rule id.
    pub rules: Vec<RuleInfo>,
    /// The flattened entries referenced by the tries.
    pub entries: Vec<RuleEntry>,
    pub v4: Vec<(Ipv4Net, DestValue)>,
    pub v6: Vec<(Ipv6Net, DestValue)>,
}

/// The outcome for one attempt, as the kernel would decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: u8,
    pub rule_id: u32,
}

impl CompiledPolicy {
    pub fn mode_bits(&self) -> u8 {
        match self.mode {
            Mode::Monitor => mode::MONITOR,
            Mode::Enforce => mode::ENFORCE,
        }
    }

    pub fn default_verdict_bits(&self) -> u8 {
        match self.default {
            DefaultAction::Deny => verdict::DENY,
            DefaultAction::Alert => verdict::ALERT,
            DefaultAction::Allow => verdict::ALLOW,
        }
    }

    /// The rule an event names, or `None` for [`RULE_DEFAULT`] and unknown ids.
    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(id as usize)
    }

    /// What the kernel decides for a destination (IPv4-mapped IPv6 is matched as IPv4).
    #[cfg_attr(not(test), expect(dead_code, reason = "used by `explain` (next issue) and the unit tests"))]
    pub fn decide(&self, addr: IpAddr, port: u16, proto: Protocol) -> Decision {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let value = match addr {
            IpAddr::V4(a) => longest_match(&self.v4, |n| n.contains(&a), |n| n.prefix_len()),
            IpAddr::V6(a) => longest_match(&self.v6, |n| n.contains(&a), |n| n.prefix_len()),
        };
        let bit = proto_bit(proto);
        if let Some(v) = value {
            let cands = &self.entries[v.first as usize..(v.first + v.count) as usize];
            if let Some(e) = cands.iter().find(|e| e.protocols & bit != 0 && e.port_lo <= port && port <= e.port_hi) {
                return Decision { verdict: verdict::ALLOW, rule_id: e.rule_id };
            }
        }
        let verdict = match (self.default, self.mode) {
            (DefaultAction::Allow, _) => verdict::ALLOW,
            (DefaultAction::Deny, Mode::Enforce) => verdict::DENY,
            _ => verdict::ALERT,
        };
        Decision { verdict, rule_id: RULE_DEFAULT }
    }
}

fn longest_match<N: Copy>(table: &[(N, DestValue)], contains: impl Fn(&N) -> bool, len: impl Fn(&N) -> u8) -> Option<DestValue> {
    table.iter().filter(|(n, _)| contains(n)).max_by_key(|(n, _)| len(n)).map(|(_, v)| *v)
}

fn proto_bit(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => proto_bits::TCP,
        Protocol::Udp => proto_bits::UDP,
    }
}

fn proto_mask(ps: &[Protocol]) -> u8 {
    if ps.is_empty() {
        proto_bits::TCP | proto_bits::UDP
    } else {
        ps.iter().fold(0, |m, p| m | proto_bit(*p))
    }
}

/// Compiles a parsed policy. `file` names it in limit errors.
pub fn compile(file: &str, doc: &PolicyDoc) -> Result<CompiledPolicy, PolicyError> {
    let mut rules = Vec::new();
    // Rule entries per exact prefix, in policy order.
    let mut by_prefix: HashMap<IpNet, Vec<RuleEntry>> = HashMap::new();
    let mut add = |rule_id: u32, net: IpNet, ports: &[PortRange], protocols: u8| {
        let ports = if ports.is_empty() { &[PortRange::ANY][..] } else { ports };
        let list = by_prefix.entry(net).or_default();
        for p in ports {
            list.push(RuleEntry { rule_id, port_lo: p.lo, port_hi: p.hi, protocols, _pad: [0; 3] });
        }
    };
    for (i, a) in doc.spec.allow.iter().enumerate() {
        let name = match &a.name {
            Some(n) => format!("allow/{n}"),
            None => format!("allow/{i}"),
        };
        let id = rules.len() as u32;
        rules.push(RuleInfo { name, vendor: None });
        add(id, a.cidr.0, &a.ports, proto_mask(&a.protocols));
    }
    for v in &doc.spec.vendors.0 {
        let id = rules.len() as u32;
        rules.push(RuleInfo { name: format!("vendor/{}", v.name), vendor: Some(v.name.0.clone()) });
        for d in &v.destinations {
            add(id, d.cidr.0, &v.ports, proto_mask(&v.protocols));
        }
    }

    let limit = |message: String| PolicyError::Limit { file: file.to_owned(), message };
    let mut entries = Vec::new();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    // Deterministic order: the same policy always yields the same tables.
    let mut prefixes: Vec<IpNet> = by_prefix.keys().copied().collect();
    prefixes.sort();
    for net in prefixes {
        let first = entries.len() as u32;
        // Walk from the prefix itself up to /0: most specific rules first.
        for len in (0..=net.prefix_len()).rev() {
            let Ok(up) = IpNet::new(net.addr(), len) else { continue };
            if let Some(list) = by_prefix.get(&up.trunc()) {
                entries.extend_from_slice(list);
            }
        }
        let count = entries.len() as u32 - first;
        if count > MAX_RULES_PER_PREFIX {
            return Err(limit(format!(
                "{count} port/rule entries apply to {net} (its own and those of enclosing prefixes); the kernel checks at most {MAX_RULES_PER_PREFIX} per destination"
            )));
        }
        let value = DestValue { first, count };
        match net {
            IpNet::V4(n) => v4.push((n, value)),
            IpNet::V6(n) => v6.push((n, value)),
        }
    }
    if entries.len() > MAX_RULE_ENTRIES as usize {
        return Err(limit(format!(
            "{} rule entries after expanding prefixes and ports; the kernel holds at most {MAX_RULE_ENTRIES}",
            entries.len()
        )));
    }
    for (family, n) in [("IPv4", v4.len()), ("IPv6", v6.len())] {
        if n > MAX_PREFIXES as usize {
            return Err(limit(format!("{n} distinct {family} prefixes; the kernel holds at most {MAX_PREFIXES}")));
        }
    }
    Ok(CompiledPolicy {
        name: doc.metadata.name.0.clone(),
        mode: doc.spec.mode,
        default: doc.spec.default,
        rules,
        entries,
        v4,
        v6,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::policy::parse;

    fn compiled(spec: &str) -> CompiledPolicy {
        let text = format!("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n{spec}");
        let doc = parse("t.yaml", &text).expect("valid policy");
        compile("t.yaml", &doc).expect("compiles")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn enclosing_prefix_rules_apply_under_a_longer_prefix() {
        let p = compiled(
            "  mode: enforce\n  allow:\n    - {cidr: 10.0.0.0/8, ports: [53], protocols: [udp]}\n  vendors:\n    - {name: s, destinations: [{cidr: 10.1.0.0/16}], ports: [443], protocols: [tcp]}\n",
        );
        // 10.1.2.3 hits the /16 entry, which must still carry the /8's port 53 rule.
        assert_eq!(p.decide(ip("10.1.2.3"), 53, Protocol::Udp).rule_id, 0);
        assert_eq!(p.decide(ip("10.1.2.3"), 443, Protocol::Tcp).rule_id, 1);
        assert_eq!(p.decide(ip("10.1.2.3"), 443, Protocol::Udp).verdict, verdict::DENY);
        assert_eq!(p.decide(ip("10.2.0.1"), 443, Protocol::Tcp).verdict, verdict::DENY);
        assert_eq!(p.rules[1], RuleInfo { name: "vendor/s".into(), vendor: Some("s".into()) });
    }

    #[test]
    fn v4_mapped_is_matched_as_v4() {
        let p = compiled("  mode: enforce\n  allow:\n    - {cidr: 192.0.2.0/24}\n");
        assert_eq!(p.decide(ip("::ffff:192.0.2.7"), 80, Protocol::Tcp).verdict, verdict::ALLOW);
        assert_eq!(p.decide(ip("2001:db8::1"), 80, Protocol::Tcp).verdict, verdict::DENY);
    }

    #[test]
    fn monitor_turns_deny_into_alert_and_default_allow_allows() {
        let p = compiled("  mode: monitor\n");
        assert_eq!(p.decide(ip("1.1.1.1"), 80, Protocol::Tcp), Decision { verdict: verdict::ALERT, rule_id: RULE_DEFAULT });
        let p = compiled("  mode: enforce\n  default: allow\n");
        assert_eq!(p.decide(ip("1.1.1.1"), 80, Protocol::Tcp).verdict, verdict::ALLOW);
        let p = compiled("  mode: enforce\n  default: alert\n");
        assert_eq!(p.decide(ip("1.1.1.1"), 80, Protocol::Tcp).verdict, verdict::ALERT);
    }

    #[test]
    fn too_many_entries_for_one_prefix_is_refused_not_truncated() {
        let ports: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
        let text = format!(
            "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n  allow:\n    - {{cidr: 10.0.0.0/8, ports: [{}]}}\n",
            ports.join(", ")
        );
        let doc = parse("t.yaml", &text).expect("valid");
        let e = compile("t.yaml", &doc).expect_err("over the limit").to_string();
        assert!(e.contains("at most 64"), "{e}");
    }

    /// Reference check: the flattened tables agree with a direct scan of the rules for random
    /// destinations over a nested, overlapping rule set.
    #[test]
    fn flattened_tables_agree_with_a_direct_scan() {
        let nets = ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.1.0/24", "10.1.1.128/25", "192.168.0.0/16", "10.1.1.7"];
        let mut spec = String::from("  mode: enforce\n  allow:\n");
        let mut reference = Vec::new();
        for (i, n) in nets.iter().enumerate() {
            let lo = 100 * (i as u16 + 1);
            let hi = lo + 50;
            spec.push_str(&format!("    - {{cidr: {n}, ports: [\"{lo}-{hi}\"], protocols: [{}]}}\n", if i % 2 == 0 { "tcp" } else { "udp" }));
            let proto = if i % 2 == 0 { Protocol::Tcp } else { Protocol::Udp };
            reference.push((n.parse::<crate::policy::model::Cidr>().expect("cidr").0, lo, hi, proto));
        }
        let p = compiled(&spec);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let r = next();
            let a = Ipv4Addr::from(match r % 4 {
                0 => 0x0a01_0100 | (r >> 8) as u32 & 0xff,
                1 => 0x0a00_0000 | (r >> 8) as u32 & 0x00ff_ffff,
                2 => 0xc0a8_0000 | (r >> 8) as u32 & 0xffff,
                _ => (r >> 8) as u32,
            });
            let port = 100 + (next() % 700) as u16;
            let proto = if next() % 2 == 0 { Protocol::Tcp } else { Protocol::Udp };
            let allowed = reference.iter().any(|(n, lo, hi, pr)| n.contains(&IpAddr::V4(a)) && *lo <= port && port <= *hi && *pr == proto);
            let d = p.decide(IpAddr::V4(a), port, proto);
            assert_eq!(d.verdict == verdict::ALLOW, allowed, "{a}:{port} {proto:?}");
        }
    }
}
