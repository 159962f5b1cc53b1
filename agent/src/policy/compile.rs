//! Compiles a merged policy into the tables the kernel matches against (see
//! `agent_common::DestValue`): one longest-prefix-match entry per distinct prefix, carrying the
//! rule entries of that prefix and of every enclosing prefix, most specific first. One trie
//! lookup then yields every rule that can apply to an address, and the kernel only checks ports,
//! protocols and the process.
//!
//! [`CompiledPolicy::decide`] answers from the same tables with the same algorithm as the kernel:
//! `explain` and the tests ask it what the kernel would do.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use agent_common::{
    event_flags, proto_bits, rule_flags, selector_flags, verdict, DestValue, RuleEntry, Selector, MAX_DOMAINS,
    MAX_EXE_KEYS, MAX_PREFIXES, MAX_RESOLVERS, MAX_RULES_PER_PREFIX, MAX_RULE_ENTRIES, MAX_SELECTORS, NAT64_WELL_KNOWN,
    RULE_DEFAULT,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use time::OffsetDateTime;

pub use super::selectors::{comm_bytes, selector_fingerprint, Fingerprint, RESOLVE_EVERY_SECS};
use super::{
    domains::DomainEntry,
    model::{DefaultAction, Dest, DomainPattern, Mode, PortRange, Protocol},
    resolve::Resolver,
    selectors::{compile_selector, fingerprint_entry, Note},
    shadowing::{enclosing, shadowing},
    DnsSettings, Merged, Place, PolicyError, Problem,
};

/// What an event's `rule` and `vendor` fields name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub name: String,
    pub vendor: Option<String>,
    pub place: Option<Place>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tables {
    pub entries: Vec<RuleEntry>,
    pub v4: Vec<(Ipv4Net, DestValue)>,
    pub v6: Vec<(Ipv6Net, DestValue)>,
    /// Index 0 is unused (selector 0 means any process).
    pub selectors: Vec<Selector>,
    /// (selector index within the slot, kernel dev_t, inode, inode generation or
    /// [`agent_common::GEN_ANY`]).
    pub exe_keys: Vec<(u32, u32, u64, u64)>,
    /// Domain patterns, sorted.
    pub domains: Vec<DomainEntry>,
    /// `spec.dns` (the kernel reads grace, unlisted and resolvers from the slot).
    pub dns: DnsSettings,
    /// `spec.nat64Prefixes` (/96 each), with where each was listed; 64:ff9b::/96 is not among
    /// them unless listed: the kernel knows it.
    pub nat64: Vec<(Ipv6Net, Place)>,
}

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub name: String,
    /// SHA-256 of the policy text it was compiled from, as read (audit records, `status`).
    pub sha256: String,
    pub mode: Mode,
    pub default: DefaultAction,
    /// Indexed by rule id.
    pub rules: Vec<RuleInfo>,
    pub tables: Tables,
    /// When the next temporary approval ends: the policy must be compiled again then.
    pub next_expiry: Option<OffsetDateTime>,
    /// Executables each vendor's `exe` selectors resolved to, for summaries.
    pub vendor_exes: HashMap<String, Vec<String>>,
    /// What every selector resolved to for this compilation, as [`selector_fingerprint`] says it.
    pub fingerprint: Fingerprint,
}

/// The process an attempt comes from, as the kernel sees it.
#[derive(Debug, Clone, Default)]
pub struct ProcIdentity {
    /// Kernel dev_t and inode of the executable.
    pub exe: Option<(u32, u64)>,
    pub uid: u32,
    pub comm: String,
    /// Ids of the process's cgroup and its ancestors, indexed by depth (root first).
    pub cgroup_ancestors: Vec<u64>,
    /// [`agent_common::tamper`] bits (0: loader not steered, not traced, exec seen).
    pub tamper: u32,
}

/// The outcome for one attempt, as the kernel would decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: u8,
    pub rule_id: u32,
    /// [`event_flags::PROCESS_NOT_ALLOWED`] when a vendor's destination refused the process.
    pub flags: u8,
}

impl CompiledPolicy {
    /// Verdict bits for `dns.unlisted`.
    pub fn unlisted_verdict_bits(&self) -> u8 {
        match self.tables.dns.unlisted {
            DefaultAction::Deny => verdict::DENY,
            DefaultAction::Alert => verdict::ALERT,
            DefaultAction::Allow => verdict::ALLOW,
        }
    }

    /// The rule entries that apply, in this policy, to the names of `p` (a pattern it has, or
    /// one retired by a reload whose names a wildcard still covers).
    pub fn domain_rules(&self, p: &DomainPattern) -> DestValue {
        super::domains::lookup(&self.tables.domains, p).map_or_else(DestValue::default, |e| e.value)
    }

    /// Makes this policy refuse nothing (for `learn`): monitor mode, and vendors that enforce
    /// their processes in a monitor-mode policy only report them too.
    pub fn monitor_only(&mut self) {
        self.mode = Mode::Monitor;
        for e in &mut self.tables.entries {
            e.flags &= !rule_flags::MODE_ENFORCE;
        }
    }

    pub fn mode_bits(&self) -> u8 {
        match self.mode {
            Mode::Monitor => agent_common::mode::MONITOR,
            Mode::Enforce => agent_common::mode::ENFORCE,
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

    /// The NAT64 prefix `a` is under — the well-known `64:ff9b::/96` (no place), or one the
    /// policy lists (with its place) — and the IPv4 address it embeds, as the kernel reads it.
    pub fn nat64(&self, a: Ipv6Addr) -> Option<(Ipv4Addr, Ipv6Net, Option<&Place>)> {
        let v4 = Ipv4Addr::from(u128::from(a) as u32);
        let top = Ipv6Net::new(a, 96).ok()?.trunc();
        if top.network().octets()[..12] == NAT64_WELL_KNOWN {
            return Some((v4, top, None));
        }
        self.tables.nat64.iter().find(|(n, _)| *n == top).map(|(n, at)| (v4, *n, Some(at)))
    }

    /// What the kernel decides for an attempt (IPv4-mapped IPv6, and IPv6 under a NAT64 prefix,
    /// are matched as the IPv4 address they carry).
    pub fn decide(&self, addr: IpAddr, port: u16, proto: Protocol, proc: &ProcIdentity) -> Decision {
        let t = &self.tables;
        let addr = match addr {
            IpAddr::V6(v6) => {
                v6.to_ipv4_mapped().or_else(|| self.nat64(v6).map(|n| n.0)).map_or(IpAddr::V6(v6), IpAddr::V4)
            }
            v4 => v4,
        };
        let value = match addr {
            IpAddr::V4(a) => {
                t.v4.iter().filter(|(n, _)| n.contains(&a)).max_by_key(|(n, _)| n.prefix_len()).map(|x| x.1)
            }
            IpAddr::V6(a) => {
                t.v6.iter().filter(|(n, _)| n.contains(&a)).max_by_key(|(n, _)| n.prefix_len()).map(|x| x.1)
            }
        };
        let mut wrong: Option<&RuleEntry> = None;
        if let Some(v) = value {
            match self.match_entries(v, port, proto, proc) {
                Ok(e) => return Decision { verdict: verdict::ALLOW, rule_id: e.rule_id, flags: 0 },
                Err(w) => wrong = w,
            }
        }
        self.finish(wrong)
    }

    /// What the kernel decides for an attempt to an address learnt from an answer for `name`
    /// (canonical): the domain entry that covers the name, and the decision. Addresses the
    /// policy also lists as CIDRs are decided by those too; this is the name's part.
    pub fn decide_domain(
        &self,
        name: &str,
        port: u16,
        proto: Protocol,
        proc: &ProcIdentity,
    ) -> (Option<&DomainEntry>, Decision) {
        let Some(entry) = super::domains::for_name(&self.tables.domains, name) else {
            return (None, self.finish(None));
        };
        let d = match self.match_entries(entry.value, port, proto, proc) {
            Ok(e) => Decision { verdict: verdict::ALLOW, rule_id: e.rule_id, flags: event_flags::LEARNT },
            Err(w) => {
                let mut d = self.finish(w);
                if w.is_some() {
                    d.flags |= event_flags::LEARNT;
                }
                d
            }
        };
        (Some(entry), d)
    }

    /// The first entry of `v` that allows the attempt, or the first whose process did not match.
    fn match_entries(
        &self,
        v: DestValue,
        port: u16,
        proto: Protocol,
        proc: &ProcIdentity,
    ) -> Result<&RuleEntry, Option<&RuleEntry>> {
        let bit = proto_bit(proto);
        let mut wrong: Option<&RuleEntry> = None;
        let entries = self.tables.entries.get(v.first as usize..(v.first + v.count) as usize).unwrap_or_default();
        for e in entries {
            // Ports do not apply to ICMP, as in the kernel.
            let port_ok = proto == Protocol::Icmp || (port >= e.port_lo && port <= e.port_hi);
            if e.protocols & bit == 0 || !port_ok {
                continue;
            }
            if e.selector == 0 || self.selector_matches(e.selector, proc) {
                return Ok(e);
            }
            wrong.get_or_insert(e);
        }
        Err(wrong)
    }

    /// The decision when no rule allowed: a vendor's destination from another process, or the
    /// default.
    fn finish(&self, wrong: Option<&RuleEntry>) -> Decision {
        if let Some(e) = wrong {
            let enforce = if e.flags & rule_flags::MODE_MONITOR != 0 {
                false
            } else {
                e.flags & rule_flags::MODE_ENFORCE != 0 || self.mode == Mode::Enforce
            };
            let verdict = if enforce { verdict::DENY } else { verdict::ALERT };
            return Decision { verdict, rule_id: e.rule_id, flags: event_flags::PROCESS_NOT_ALLOWED };
        }
        let verdict = match (self.default, self.mode) {
            (DefaultAction::Allow, _) => verdict::ALLOW,
            (DefaultAction::Deny, Mode::Enforce) => verdict::DENY,
            _ => verdict::ALERT,
        };
        Decision { verdict, rule_id: RULE_DEFAULT, flags: 0 }
    }

    fn selector_matches(&self, index: u32, proc: &ProcIdentity) -> bool {
        let Some(s) = self.tables.selectors.get(index as usize) else { return false };
        if s.flags & selector_flags::NEVER != 0 {
            return false;
        }
        if s.flags & selector_flags::UID != 0 && s.uid != proc.uid {
            return false;
        }
        if s.flags & selector_flags::COMM != 0 && s.comm != comm_bytes(&proc.comm) {
            return false;
        }
        if s.flags & selector_flags::UNTAMPERED != 0 && proc.tamper != 0 {
            return false;
        }
        if s.flags & selector_flags::CGROUP != 0
            && proc.cgroup_ancestors.get(s.cgroup_level as usize) != Some(&s.cgroup_id)
        {
            return false;
        }
        if s.flags & selector_flags::EXE != 0 {
            let Some((dev, ino)) = proc.exe else { return false };
            // The generation is not modelled here: `explain` and `learn` ask about the file at a
            // path now, which is the one resolved.
            if !self.tables.exe_keys.iter().any(|k| (k.0, k.1, k.2) == (index, dev, ino)) {
                return false;
            }
        }
        true
    }
}

fn proto_bit(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => proto_bits::TCP,
        Protocol::Udp => proto_bits::UDP,
        Protocol::Icmp => proto_bits::ICMP,
    }
}

fn proto_mask(ps: &[Protocol]) -> u8 {
    if ps.is_empty() {
        proto_bits::TCP | proto_bits::UDP
    } else {
        ps.iter().fold(0, |m, p| m | proto_bit(*p))
    }
}

/// Compiles a merged policy at time `now`, resolving selectors with `resolver`.
pub fn compile(
    m: &Merged,
    resolver: &dyn Resolver,
    now: OffsetDateTime,
) -> Result<(CompiledPolicy, Vec<Problem>), PolicyError> {
    let mut warnings = Vec::new();
    let mut refused = Vec::new();
    let mut rules = Vec::new();
    let mut selectors = vec![Selector::default()];
    let mut exe_keys = Vec::new();
    let mut vendor_exes = HashMap::new();
    let mut fingerprint = Vec::new();
    let mut next_expiry: Option<OffsetDateTime> = None;
    // Rule entries per exact prefix, in policy order.
    let mut by_prefix: HashMap<IpNet, Vec<RuleEntry>> = HashMap::new();
    // Rule entries per domain pattern, in policy order.
    let mut by_pattern: BTreeMap<DomainPattern, Vec<RuleEntry>> = BTreeMap::new();
    let mut add = |dest: Dest, ports: &[PortRange], template: RuleEntry| {
        let ports = if ports.is_empty() { &[PortRange::ANY][..] } else { ports };
        let list = match dest {
            Dest::Cidr(net) => by_prefix.entry(net).or_default(),
            Dest::Domain(d) => by_pattern.entry(d).or_default(),
        };
        for p in ports {
            list.push(RuleEntry { port_lo: p.lo, port_hi: p.hi, ..template });
        }
    };

    for (i, (a, place)) in m.allow.iter().enumerate() {
        let name = match &a.name {
            Some(n) => format!("allow/{n}"),
            None => format!("allow/{i}"),
        };
        let rule_id = rules.len() as u32;
        rules.push(RuleInfo { name, vendor: None, place: Some(place.clone()) });
        let template = RuleEntry { rule_id, protocols: proto_mask(&a.protocols), ..Default::default() };
        // merge() refused destinations that are neither or both.
        if let Ok(dest) = a.dest() {
            add(dest, &a.ports, template);
        }
    }

    for (v, places) in &m.vendors {
        let place = &places.name;
        let mut expired = false;
        if let Some(exp) = v.expires {
            if exp.0 <= now {
                // An ended approval keeps its destinations reserved, to no process: under
                // `default: allow`, dropping the rules would open them to everyone instead.
                warnings.push(Problem::warning(
                    place.clone(),
                    format!("vendor `{}` expired at {}: its destinations are refused to every process", v.name, exp.0),
                ));
                expired = true;
            } else {
                next_expiry = Some(next_expiry.map_or(exp.0, |n| n.min(exp.0)));
            }
        }
        let rule_id = rules.len() as u32;
        rules.push(RuleInfo {
            name: format!("vendor/{}", v.name),
            vendor: Some(v.name.0.clone()),
            place: Some(place.clone()),
        });
        let flags = match v.mode {
            Some(Mode::Monitor) => rule_flags::MODE_MONITOR,
            Some(Mode::Enforce) => rule_flags::MODE_ENFORCE,
            None => 0,
        };
        let mut sel_indexes = Vec::new();
        let mut exes = Vec::new();
        if expired {
            sel_indexes.push(selectors.len() as u32);
            selectors.push(Selector { flags: selector_flags::NEVER, ..Default::default() });
        }
        for (j, sel) in v.processes.iter().enumerate() {
            let (compiled, files, problem) = compile_selector(sel, resolver);
            // Expired vendors' selectors count too: the fingerprint covers every selector, so a
            // recompilation is not triggered just because a vendor expired.
            fingerprint.extend(compiled.iter().map(|c| fingerprint_entry(c, &files)));
            if expired {
                continue;
            }
            let at = places.processes.get(j).cloned().unwrap_or_else(|| place.clone());
            match problem {
                Some(Note::Warning(msg)) => warnings.push(Problem::warning(at, msg)),
                Some(Note::Refused(msg)) => refused.push(Problem::error(at, msg)),
                None => {}
            }
            exes.extend(files.iter().map(|f| f.path.clone()));
            // A selector naming several cgroups (a container glob) is several kernel selectors.
            for c in compiled {
                let index = selectors.len() as u32;
                exe_keys.extend(
                    files.iter().map(|f| (index, f.dev, f.ino, f.gen.map_or(agent_common::GEN_ANY, u64::from))),
                );
                selectors.push(c);
                sel_indexes.push(index);
            }
        }
        vendor_exes.insert(v.name.0.clone(), exes);
        if sel_indexes.is_empty() {
            sel_indexes.push(0);
        }
        for d in v.destinations.iter().filter_map(|d| d.dest().ok()) {
            for &selector in &sel_indexes {
                add(
                    d.clone(),
                    &v.ports,
                    RuleEntry { rule_id, protocols: proto_mask(&v.protocols), flags, selector, ..Default::default() },
                );
            }
        }
    }

    if !refused.is_empty() {
        return Err(PolicyError::Invalid(refused));
    }
    warnings.extend(shadowing(&by_prefix, &rules));

    let limit = |message: String| PolicyError::Limit { message };
    if selectors.len() > MAX_SELECTORS as usize {
        return Err(limit(format!(
            "{} process selectors; the kernel holds at most {}",
            selectors.len() - 1,
            MAX_SELECTORS - 1
        )));
    }
    // Both slots share one hash map, so each may use half of it.
    if exe_keys.len() > (MAX_EXE_KEYS / 2) as usize {
        return Err(limit(format!(
            "{} executables matched by `exe` selectors; the kernel holds at most {}",
            exe_keys.len(),
            MAX_EXE_KEYS / 2
        )));
    }
    let mut entries = Vec::new();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    // Deterministic order: the same policy always yields the same tables.
    let mut prefixes: Vec<IpNet> = by_prefix.keys().copied().collect();
    prefixes.sort();
    for net in prefixes {
        let first = entries.len() as u32;
        for up in enclosing(net) {
            if let Some(list) = by_prefix.get(&up) {
                entries.extend_from_slice(list);
            }
        }
        let count = entries.len() as u32 - first;
        if count > MAX_RULES_PER_PREFIX {
            let mut ids: Vec<u32> = entries[first as usize..].iter().map(|e| e.rule_id).collect();
            ids.dedup();
            let at: Vec<String> = ids
                .iter()
                .filter_map(|id| rules.get(*id as usize))
                .map(|r| r.place.as_ref().map_or_else(|| r.name.clone(), |p| format!("{} at {p}", r.name)))
                .collect();
            return Err(limit(format!(
                "{count} rule entries (ports x process selectors) apply to {net}, its own and those of enclosing prefixes; the kernel checks at most {MAX_RULES_PER_PREFIX} per destination. Rules involved: {}",
                at.join("; ")
            )));
        }
        let value = DestValue { first, count };
        match net {
            IpNet::V4(n) => v4.push((n, value)),
            IpNet::V6(n) => v6.push((n, value)),
        }
    }
    let domains = super::domains::build(&by_pattern, &mut entries).map_err(|(p, count)| {
        limit(format!(
            "{count} rule entries (ports x process selectors) apply to the names of `{p}`, its own and those of enclosing wildcards; the kernel checks at most {MAX_RULES_PER_PREFIX} per destination"
        ))
    })?;
    if domains.len() > MAX_DOMAINS as usize {
        return Err(limit(format!("{} domain patterns; the kernel holds at most {MAX_DOMAINS}", domains.len())));
    }
    if m.dns.resolvers.len() > (MAX_RESOLVERS / 2) as usize {
        return Err(limit(format!(
            "{} resolvers; the kernel holds at most {}",
            m.dns.resolvers.len(),
            MAX_RESOLVERS / 2
        )));
    }
    if entries.len() > MAX_RULE_ENTRIES as usize {
        return Err(limit(format!("{} rule entries after expanding prefixes, ports and selectors; the kernel holds at most {MAX_RULE_ENTRIES}", entries.len())));
    }
    for (family, n) in [("IPv4", v4.len()), ("IPv6", v6.len())] {
        if n > MAX_PREFIXES as usize {
            return Err(limit(format!("{n} distinct {family} prefixes; the kernel holds at most {MAX_PREFIXES}")));
        }
    }
    let policy = CompiledPolicy {
        sha256: m.sha256.clone(),
        name: m.name.clone(),
        mode: m.mode,
        default: m.default,
        rules,
        tables: Tables { entries, v4, v6, selectors, exe_keys, domains, dns: m.dns.clone(), nat64: m.nat64.clone() },
        next_expiry,
        vendor_exes,
        fingerprint,
    };
    Ok((policy, warnings))
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
