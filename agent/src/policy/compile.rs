//! Compiles a merged policy into the tables the kernel matches against (see
//! `agent_common::DestValue`): one longest-prefix-match entry per distinct prefix, carrying the
//! rule entries of that prefix and of every enclosing prefix, most specific first. One trie
//! lookup then yields every rule that can apply to an address, and the kernel only checks ports,
//! protocols and the process.
//!
//! [`CompiledPolicy::decide`] answers from the same tables with the same algorithm as the kernel:
//! `explain` and the tests ask it what the kernel would do.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use agent_common::{
    event_flags, proto_bits, rule_flags, selector_flags, verdict, DestValue, RuleEntry, Selector, MAX_DOMAINS,
    MAX_EXE_KEYS, MAX_PREFIXES, MAX_RESOLVERS, MAX_RULES_PER_PREFIX, MAX_RULE_ENTRIES, MAX_SELECTORS, RULE_DEFAULT,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use time::OffsetDateTime;

use super::{
    domains::DomainEntry,
    model::{DefaultAction, Dest, DomainPattern, Mode, PortRange, ProcessSelector, Protocol},
    resolve::Resolver,
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
    /// (selector index within the slot, kernel dev_t, inode).
    pub exe_keys: Vec<(u32, u32, u64)>,
    /// Domain patterns, sorted.
    pub domains: Vec<DomainEntry>,
    /// `spec.dns` (the kernel reads grace, unlisted and resolvers from the slot).
    pub dns: DnsSettings,
}

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub name: String,
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

/// What each process selector of a policy resolves to: the selector as the kernel sees it and
/// the executables (dev, inode) its `exe` matched, in policy order.
pub type Fingerprint = Vec<(Selector, Vec<(u32, u64)>)>;

fn fingerprint_entry(s: &Selector, files: &[super::resolve::ExeFile]) -> (Selector, Vec<(u32, u64)>) {
    (*s, files.iter().map(|f| (f.dev, f.ino)).collect())
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

    /// What the kernel decides for an attempt (IPv4-mapped IPv6 is matched as IPv4).
    pub fn decide(&self, addr: IpAddr, port: u16, proto: Protocol, proc: &ProcIdentity) -> Decision {
        let t = &self.tables;
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
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
            if e.protocols & bit == 0 || port < e.port_lo || port > e.port_hi {
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
        if s.flags & selector_flags::CGROUP != 0
            && proc.cgroup_ancestors.get(s.cgroup_level as usize) != Some(&s.cgroup_id)
        {
            return false;
        }
        if s.flags & selector_flags::EXE != 0 {
            let Some((dev, ino)) = proc.exe else { return false };
            if !self.tables.exe_keys.contains(&(index, dev, ino)) {
                return false;
            }
        }
        true
    }
}

/// A task name as the kernel stores it: at most 15 bytes, NUL-padded.
pub fn comm_bytes(comm: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let b = comm.as_bytes();
    let n = b.len().min(15);
    out[..n].copy_from_slice(&b[..n]);
    out
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

/// How often the agent resolves selectors again (see run.rs), for messages.
pub const RESOLVE_EVERY_SECS: u64 = 5;

/// At most this many shadowing warnings are listed; the rest are counted.
const MAX_SHADOW_WARNINGS: usize = 20;

/// Compiles a merged policy at time `now`, resolving selectors with `resolver`.
pub fn compile(
    m: &Merged,
    resolver: &dyn Resolver,
    now: OffsetDateTime,
) -> Result<(CompiledPolicy, Vec<Problem>), PolicyError> {
    let mut warnings = Vec::new();
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
            fingerprint.push(fingerprint_entry(&compiled, &files));
            if expired {
                continue;
            }
            let at = places.processes.get(j).cloned().unwrap_or_else(|| place.clone());
            if let Some(msg) = problem {
                warnings.push(Problem::warning(at, msg));
            }
            exes.extend(files.iter().map(|f| f.path.clone()));
            let index = selectors.len() as u32;
            exe_keys.extend(files.iter().map(|f| (index, f.dev, f.ino)));
            selectors.push(compiled);
            sel_indexes.push(index);
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
        name: m.name.clone(),
        mode: m.mode,
        default: m.default,
        rules,
        tables: Tables { entries, v4, v6, selectors, exe_keys, domains, dns: m.dns.clone() },
        next_expiry,
        vendor_exes,
        fingerprint,
    };
    Ok((policy, warnings))
}

/// What every process selector of `m` resolves to on this host now: compared between runs, it
/// tells whether the policy must be compiled again (a new binary, a recreated cgroup, a user)
/// without compiling it.
pub fn selector_fingerprint(m: &Merged, resolver: &dyn Resolver) -> Fingerprint {
    m.vendors
        .iter()
        .flat_map(|(v, _)| v.processes.iter())
        .map(|sel| {
            let (s, files, _) = compile_selector(sel, resolver);
            fingerprint_entry(&s, &files)
        })
        .collect()
}

/// The prefix itself and every enclosing prefix, most specific first.
fn enclosing(net: IpNet) -> impl Iterator<Item = IpNet> {
    (0..=net.prefix_len()).rev().filter_map(move |len| IpNet::new(net.addr(), len).ok().map(|n| n.trunc()))
}

/// Resolves one selector. Parts that resolve to nothing make it match nothing (and say why):
/// an unknown user, no executable matching the glob, a cgroup that does not exist yet.
fn compile_selector(
    sel: &ProcessSelector,
    r: &dyn Resolver,
) -> (Selector, Vec<super::resolve::ExeFile>, Option<String>) {
    let mut s = Selector::default();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    let mut script_note: Option<String> = None;
    if let Some(exe) = &sel.exe {
        s.flags |= selector_flags::EXE;
        files = r.exes(&exe.0);
        if files.is_empty() {
            problems.push(format!("exe `{}` matches no executable file on this host", exe.0));
        }
        // Scripts never match (the kernel runs, and sees, their interpreter); say so, but keep
        // the binaries the same glob matched.
        let (scripts, binaries): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| f.script);
        files = binaries;
        if !scripts.is_empty() {
            let names: Vec<&str> = scripts.iter().map(|f| f.path.as_str()).collect();
            script_note = Some(format!(
                "{} {} a `#!` script: the kernel sees its interpreter, never the script, so it cannot match; name the interpreter and narrow it with `user` or `cgroup`",
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" }
            ));
            if files.is_empty() {
                problems.push("no executable it matches can be seen by the kernel".into());
            }
        }
    }
    if let Some(c) = &sel.comm {
        s.flags |= selector_flags::COMM;
        s.comm = comm_bytes(&c.0);
    }
    if let Some(uid) = sel.uid {
        s.flags |= selector_flags::UID;
        s.uid = uid;
    }
    if let Some(user) = &sel.user {
        s.flags |= selector_flags::UID;
        match r.user(user) {
            Some(uid) => s.uid = uid,
            None => problems.push(format!("user `{user}` does not exist on this host")),
        }
    }
    if let Some(cg) = &sel.cgroup {
        s.flags |= selector_flags::CGROUP;
        match r.cgroup(&cg.0) {
            Some((id, level)) => {
                s.cgroup_id = id;
                s.cgroup_level = level;
            }
            None => problems.push(format!("cgroup `{}` does not exist (yet)", cg.0)),
        }
    }
    if problems.is_empty() {
        return (s, files, script_note);
    }
    s.flags |= selector_flags::NEVER;
    let mut msg = format!(
        "{}: this selector matches no process until it resolves (the agent retries every {} s and on reload)",
        problems.join("; "),
        RESOLVE_EVERY_SECS
    );
    if let Some(n) = script_note {
        msg = format!("{n}; {msg}");
    }
    (s, files, Some(msg))
}

/// Rules that allow to every process what another rule allows: an `allow` rule that covers a
/// scoped vendor's destination and port makes the vendor's `processes` meaningless, and an
/// `allow` rule covered by another is redundant. Each warning names both places.
fn shadowing(by_prefix: &HashMap<IpNet, Vec<RuleEntry>>, rules: &[RuleInfo]) -> Vec<Problem> {
    let mut found = BTreeSet::new();
    for (net, list) in by_prefix {
        for e in list {
            for up in enclosing(*net) {
                let Some(cover) = by_prefix.get(&up) else { continue };
                for f in cover {
                    let covers = f.selector == 0
                        && f.rule_id != e.rule_id
                        && f.protocols & e.protocols == e.protocols
                        && f.port_lo <= e.port_lo
                        && e.port_hi <= f.port_hi
                        // Between two any-process rules, report the later one as redundant.
                        && (e.selector != 0 || f.rule_id < e.rule_id);
                    if covers {
                        found.insert((e.rule_id, f.rule_id, *net, up));
                    }
                }
            }
        }
    }
    let total = found.len();
    let mut out: Vec<Problem> = found
        .into_iter()
        .take(MAX_SHADOW_WARNINGS)
        .filter_map(|(shadowed, by, net, up)| {
            let (s, b) = (rules.get(shadowed as usize)?, rules.get(by as usize)?);
            let place = s.place.clone()?;
            let by_place = b.place.as_ref().map_or_else(String::new, |p| format!(" at {p}"));
            let what = if s.vendor.is_some() { "its `processes` do not restrict it" } else { "this rule is redundant" };
            Some(Problem::warning(
                place,
                format!("{} to {net} is also allowed to every process by {} ({up}){by_place}: {what}", s.name, b.name),
            ))
        })
        .collect();
    if total > MAX_SHADOW_WARNINGS {
        if let Some(first) = out.first().map(|p| p.place.clone()) {
            out.push(Problem::warning(first, format!("... and {} more shadowed rules", total - MAX_SHADOW_WARNINGS)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::{super::resolve::ExeFile, *};
    use crate::policy::{merge, parse};

    /// A host with two executables, one user and one cgroup.
    struct FakeHost;

    impl Resolver for FakeHost {
        fn exes(&self, pattern: &str) -> Vec<ExeFile> {
            let all = [("/opt/billing/bin/api", 7, 100), ("/usr/bin/curl", 7, 200)];
            all.iter()
                .filter(|(p, ..)| glob::Pattern::new(pattern).is_ok_and(|g| g.matches(p)))
                .map(|(p, dev, ino)| ExeFile { path: (*p).into(), dev: *dev, ino: *ino, script: false })
                .collect()
        }
        fn user(&self, name: &str) -> Option<u32> {
            (name == "billing").then_some(1001)
        }
        fn cgroup(&self, path: &str) -> Option<(u64, u32)> {
            (path == "/system.slice/billing.service").then_some((55, 2))
        }
    }

    fn compiled(spec: &str) -> (CompiledPolicy, Vec<Problem>) {
        let text = format!("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n{spec}");
        let docs = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e:?}"));
        let (m, _) = merge(&docs).unwrap_or_else(|e| panic!("{e}"));
        compile(&m, &FakeHost, time::macros::datetime!(2026-11-23 12:00 UTC)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn domain_decisions_follow_patterns_scopes_and_unlisted() {
        let (p, _) = compiled(
            "  mode: enforce\n  dns: {unlisted: deny}\n  allow:\n    - {name: mirror, domain: \"*.debian.org\", ports: [80]}\n  vendors:\n    - name: stripe\n      destinations: [{domain: \"*.stripe.com\"}]\n      ports: [443]\n      processes: [{exe: /usr/bin/curl}]\n",
        );
        let curl = ProcIdentity { exe: Some((7, 200)), ..Default::default() };
        let other = ProcIdentity { exe: Some((7, 100)), ..Default::default() };
        let (e, d) = p.decide_domain("api.stripe.com", 443, Protocol::Tcp, &curl);
        assert_eq!(e.map(|e| e.pattern.to_string()).as_deref(), Some("*.stripe.com"));
        assert_eq!(d.verdict, verdict::ALLOW);
        assert_eq!(p.rule(d.rule_id).map(|r| r.name.as_str()), Some("vendor/stripe"));
        let (_, d) = p.decide_domain("api.stripe.com", 443, Protocol::Tcp, &other);
        assert_eq!((d.verdict, d.flags & event_flags::PROCESS_NOT_ALLOWED != 0), (verdict::DENY, true));
        // The suffix itself is not below the wildcard; an unlisted name gets the default.
        let (e, d) = p.decide_domain("stripe.com", 443, Protocol::Tcp, &curl);
        assert!(e.is_none());
        assert_eq!(d.verdict, verdict::DENY);
        let (_, d) = p.decide_domain("deb.debian.org", 80, Protocol::Tcp, &other);
        assert_eq!(d.verdict, verdict::ALLOW);
        assert_eq!(p.unlisted_verdict_bits(), verdict::DENY);
    }

    /// The error a valid policy text is refused with when compiled.
    fn refused(text: &str) -> String {
        let docs = parse("t.yaml", text).expect("valid");
        let (m, _) = merge(&docs).expect("merges");
        compile(&m, &FakeHost, OffsetDateTime::UNIX_EPOCH).expect_err("over the limit").to_string()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn api() -> ProcIdentity {
        ProcIdentity { exe: Some((7, 100)), uid: 1001, comm: "api".into(), cgroup_ancestors: vec![1, 20, 55] }
    }

    fn curl() -> ProcIdentity {
        ProcIdentity { exe: Some((7, 200)), uid: 0, comm: "curl".into(), cgroup_ancestors: vec![1, 20, 21] }
    }

    #[test]
    fn enclosing_prefix_rules_apply_under_a_longer_prefix() {
        let (p, _) = compiled(
            "  mode: enforce\n  allow:\n    - {cidr: 10.0.0.0/8, ports: [53], protocols: [udp]}\n  vendors:\n    - {name: s, destinations: [{cidr: 10.1.0.0/16}], ports: [443], protocols: [tcp]}\n",
        );
        let any = ProcIdentity::default();
        assert_eq!(p.decide(ip("10.1.2.3"), 53, Protocol::Udp, &any).rule_id, 0);
        assert_eq!(p.decide(ip("10.1.2.3"), 443, Protocol::Tcp, &any).rule_id, 1);
        assert_eq!(p.decide(ip("10.1.2.3"), 443, Protocol::Udp, &any).verdict, verdict::DENY);
        assert_eq!(p.decide(ip("10.2.0.1"), 443, Protocol::Tcp, &any).verdict, verdict::DENY);
        assert_eq!(p.rules[1].vendor.as_deref(), Some("s"));
    }

    #[test]
    fn v4_mapped_is_matched_as_v4() {
        let (p, _) = compiled("  mode: enforce\n  allow:\n    - {cidr: 192.0.2.0/24}\n");
        let any = ProcIdentity::default();
        assert_eq!(p.decide(ip("::ffff:192.0.2.7"), 80, Protocol::Tcp, &any).verdict, verdict::ALLOW);
        assert_eq!(p.decide(ip("2001:db8::1"), 80, Protocol::Tcp, &any).verdict, verdict::DENY);
    }

    #[test]
    fn monitor_turns_deny_into_alert_and_default_allow_allows() {
        let any = ProcIdentity::default();
        let (p, _) = compiled("  mode: monitor\n");
        assert_eq!(
            p.decide(ip("1.1.1.1"), 80, Protocol::Tcp, &any),
            Decision { verdict: verdict::ALERT, rule_id: RULE_DEFAULT, flags: 0 }
        );
        let (p, _) = compiled("  mode: enforce\n  default: allow\n");
        assert_eq!(p.decide(ip("1.1.1.1"), 80, Protocol::Tcp, &any).verdict, verdict::ALLOW);
        let (p, _) = compiled("  mode: enforce\n  default: alert\n");
        assert_eq!(p.decide(ip("1.1.1.1"), 80, Protocol::Tcp, &any).verdict, verdict::ALERT);
    }

    const SCOPED: &str = "  mode: enforce\n  default: allow\n  vendors:\n    - name: stripe\n      destinations: [{cidr: 192.0.2.0/24}]\n      ports: [443]\n      processes:\n        - {exe: /opt/billing/bin/*}\n        - {comm: curl, user: billing}\n";

    #[test]
    fn a_vendor_is_reserved_to_its_processes() {
        let (p, w) = compiled(SCOPED);
        assert!(w.is_empty(), "{w:?}");
        let d = p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &api());
        assert_eq!((d.verdict, d.rule_id), (verdict::ALLOW, 0));
        // curl as root: comm matches, uid does not (selector fields are and-ed).
        let d = p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &curl());
        assert_eq!(d, Decision { verdict: verdict::DENY, rule_id: 0, flags: event_flags::PROCESS_NOT_ALLOWED });
        // ... even though `default: allow` lets everything else through.
        assert_eq!(p.decide(ip("198.51.100.1"), 443, Protocol::Tcp, &curl()).verdict, verdict::ALLOW);
        // curl as the billing user matches the second selector (alternatives are or-ed).
        let billing_curl = ProcIdentity { uid: 1001, ..curl() };
        assert_eq!(p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &billing_curl).verdict, verdict::ALLOW);
        // A copy of the binary elsewhere (another inode) does not pass, whatever its name.
        let copy = ProcIdentity { exe: Some((7, 999)), ..api() };
        assert_eq!(p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &copy).verdict, verdict::DENY);
        assert_eq!(p.vendor_exes["stripe"], vec!["/opt/billing/bin/api".to_owned()]);
    }

    /// The agent compares a fresh resolution with the one of the last compilation to decide
    /// whether to compile again: both must be said the same way, expired vendors included.
    #[test]
    fn the_compiled_fingerprint_is_the_resolution_fingerprint() {
        let text = format!(
            "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n{SCOPED}    - {{name: old, destinations: [{{cidr: 192.0.2.1}}], expires: 2026-01-31, processes: [{{uid: 7}}]}}\n"
        );
        let (m, _) = merge(&parse("t.yaml", &text).expect("valid")).expect("merges");
        let (p, _) = compile(&m, &FakeHost, time::macros::datetime!(2026-11-23 12:00 UTC)).expect("compiles");
        assert_eq!(p.fingerprint.len(), 3);
        assert_eq!(p.fingerprint, selector_fingerprint(&m, &FakeHost));
    }

    #[test]
    fn vendor_mode_overrides_the_policy_mode_for_its_mismatches() {
        let (p, _) = compiled(&SCOPED.replace("      ports: [443]\n", "      ports: [443]\n      mode: monitor\n"));
        assert_eq!(p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &curl()).verdict, verdict::ALERT);
        let (p, _) = compiled(
            &SCOPED
                .replace("mode: enforce", "mode: monitor")
                .replace("      ports: [443]\n", "      ports: [443]\n      mode: enforce\n"),
        );
        assert_eq!(p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &curl()).verdict, verdict::DENY);
        // Unscoped egress still follows the policy's monitor mode.
        assert_eq!(p.mode, Mode::Monitor);
    }

    #[test]
    fn cgroup_selectors_match_descendants() {
        let (p, _) = compiled("  mode: enforce\n  vendors:\n    - name: s\n      destinations: [{cidr: 192.0.2.1}]\n      processes: [{cgroup: /system.slice/billing.service}]\n");
        assert_eq!(p.decide(ip("192.0.2.1"), 1, Protocol::Udp, &api()).verdict, verdict::ALLOW);
        let child = ProcIdentity { cgroup_ancestors: vec![1, 20, 55, 56], ..curl() };
        assert_eq!(p.decide(ip("192.0.2.1"), 1, Protocol::Udp, &child).verdict, verdict::ALLOW);
        assert_eq!(p.decide(ip("192.0.2.1"), 1, Protocol::Udp, &curl()).verdict, verdict::DENY);
    }

    #[test]
    fn unresolvable_selectors_match_nothing_and_warn() {
        let (p, w) = compiled("  mode: enforce\n  vendors:\n    - name: s\n      destinations: [{cidr: 192.0.2.1}]\n      processes:\n        - {exe: /nowhere/*}\n        - {user: nobody-here}\n        - {cgroup: /missing}\n");
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].to_string().starts_with(
                "t.yaml:10:11: warning: spec.vendors[0].processes[0]: exe `/nowhere/*` matches no executable"
            ),
            "{}",
            w[0]
        );
        assert!(w[1].message.contains("user `nobody-here` does not exist"), "{}", w[1]);
        assert_eq!(p.decide(ip("192.0.2.1"), 1, Protocol::Udp, &api()).verdict, verdict::DENY);
    }

    #[test]
    fn expired_vendors_are_refused_to_everyone_and_the_next_expiry_is_known() {
        let (p, w) = compiled("  mode: enforce\n  vendors:\n    - {name: old, destinations: [{cidr: 192.0.2.1}], expires: 2026-01-31}\n    - {name: new, destinations: [{cidr: 192.0.2.2}], expires: \"2026-12-01T00:00:00Z\"}\n");
        assert!(w.iter().any(|x| x.message.contains("vendor `old` expired")), "{w:?}");
        let d = p.decide(ip("192.0.2.1"), 1, Protocol::Tcp, &api());
        assert_eq!((d.verdict, d.flags), (verdict::DENY, event_flags::PROCESS_NOT_ALLOWED));
        // ... also under `default: allow`: an ended approval does not open the destination.
        let (open, _) = compiled("  mode: enforce\n  default: allow\n  vendors:\n    - {name: old, destinations: [{cidr: 192.0.2.1}], expires: 2026-01-31}\n");
        assert_eq!(open.decide(ip("192.0.2.1"), 1, Protocol::Tcp, &api()).verdict, verdict::DENY);
        assert_eq!(p.decide(ip("192.0.2.2"), 1, Protocol::Tcp, &api()).verdict, verdict::ALLOW);
        assert_eq!(p.next_expiry, Some(time::macros::datetime!(2026-12-01 0:00 UTC)));
    }

    #[test]
    fn shadowing_rules_are_reported_with_both_places() {
        let (_, w) = compiled(&format!("{SCOPED}  allow:\n    - {{name: wide, cidr: 192.0.0.0/16, ports: [443]}}\n    - {{name: narrow, cidr: 192.0.5.0/24, ports: [443]}}\n"));
        let text: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t
                .contains("vendor/stripe to 192.0.2.0/24 is also allowed to every process by allow/wide")
                && t.contains("its `processes` do not restrict it")
                && t.starts_with("t.yaml:8:13:")
                && t.contains("at t.yaml:15:7")),
            "{text:#?}"
        );
        assert!(text.iter().any(|t| t.contains("allow/narrow") && t.contains("redundant")), "{text:#?}");
    }

    #[test]
    fn too_many_entries_for_one_prefix_is_refused_not_truncated() {
        let ports: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
        let text = format!(
            "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n  allow:\n    - {{cidr: 10.0.0.0/8, ports: [{}]}}\n",
            ports.join(", ")
        );
        let e = refused(&text);
        assert!(e.contains("at most 64") && e.contains("allow/0 at t.yaml:6:7 (spec.allow[0])"), "{e}");
    }

    #[test]
    fn too_many_selectors_is_refused_naming_the_limit() {
        let sels: Vec<String> = (0..MAX_SELECTORS).map(|u| format!("{{uid: {u}}}")).collect();
        let text = format!(
            "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n  vendors:\n    - {{name: v, destinations: [{{cidr: 10.0.0.0/8}}], processes: [{}]}}\n",
            sels.join(", ")
        );
        let e = refused(&text);
        assert!(e.contains("4096 process selectors; the kernel holds at most 4095"), "{e}");
    }

    /// Reference check: the flattened tables agree with a direct scan of the rules for random
    /// destinations over a nested, overlapping rule set.
    #[test]
    fn flattened_tables_agree_with_a_direct_scan() {
        let nets =
            ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.1.0/24", "10.1.1.128/25", "192.168.0.0/16", "10.1.1.7"];
        let mut spec = String::from("  mode: enforce\n  allow:\n");
        let mut reference = Vec::new();
        for (i, n) in nets.iter().enumerate() {
            let lo = 100 * (i as u16 + 1);
            let hi = lo + 50;
            spec.push_str(&format!(
                "    - {{cidr: {n}, ports: [\"{lo}-{hi}\"], protocols: [{}]}}\n",
                if i % 2 == 0 { "tcp" } else { "udp" }
            ));
            let proto = if i % 2 == 0 { Protocol::Tcp } else { Protocol::Udp };
            reference.push((n.parse::<crate::policy::model::Cidr>().expect("cidr").0, lo, hi, proto));
        }
        let (p, _) = compiled(&spec);
        let any = ProcIdentity::default();
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
            let allowed = reference
                .iter()
                .any(|(n, lo, hi, pr)| n.contains(&IpAddr::V4(a)) && *lo <= port && port <= *hi && *pr == proto);
            let d = p.decide(IpAddr::V4(a), port, proto, &any);
            assert_eq!(d.verdict == verdict::ALLOW, allowed, "{a}:{port} {proto:?}");
        }
    }

    /// Property: for any rule set (IPv4 and IPv6, nested prefixes, port ranges, protocols,
    /// scoped and unscoped vendors, vendor modes) and any attempt, the compiled tables decide
    /// exactly what a direct reading of the documented semantics decides.
    mod property {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        struct R {
            net: IpNet,
            lo: u16,
            hi: u16,
            tcp: bool,
            udp: bool,
            /// None: an `allow` rule; Some(scoped, mode override): a vendor.
            vendor: Option<(bool, Option<Mode>)>,
        }

        /// Prefixes under two bases per family, so that rules overlap and nest often.
        fn net() -> impl Strategy<Value = IpNet> {
            prop_oneof![
                (any::<u16>(), 8u8..=32).prop_map(|(x, len)| IpNet::new(
                    IpAddr::from([10, 1, (x >> 8) as u8, x as u8]),
                    len
                )
                .expect("len")
                .trunc()),
                (any::<u16>(), 96u8..=128).prop_map(|(x, len)| {
                    let a = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x);
                    IpNet::new(IpAddr::V6(a), len).expect("len").trunc()
                }),
                Just("0.0.0.0/0".parse::<IpNet>().expect("net")),
            ]
        }

        fn rule() -> impl Strategy<Value = R> {
            let mode = prop_oneof![Just(None), Just(Some(Mode::Monitor)), Just(Some(Mode::Enforce))];
            (net(), 1u16..60, 0u16..20, any::<bool>(), any::<bool>(), proptest::option::of((any::<bool>(), mode)))
                .prop_map(|(net, lo, len, tcp, udp, vendor)| R { net, lo, hi: lo + len, tcp, udp: udp || !tcp, vendor })
        }

        fn probe() -> impl Strategy<Value = (IpAddr, u16, bool, bool)> {
            let addr = prop_oneof![
                any::<u16>().prop_map(|x| IpAddr::from([10, 1, (x >> 8) as u8, x as u8])),
                any::<u16>().prop_map(|x| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x))),
                any::<u32>().prop_map(|x| IpAddr::from(x.to_be_bytes())),
            ];
            (addr, 1u16..90, any::<bool>(), any::<bool>())
        }

        fn policy_text(rules: &[R], mode: &str, default: &str) -> String {
            let protos = |r: &R| match (r.tcp, r.udp) {
                (true, true) => "[tcp, udp]",
                (true, false) => "[tcp]",
                _ => "[udp]",
            };
            let mut allow = String::new();
            let mut vendors = String::new();
            for (i, r) in rules.iter().enumerate() {
                let common = format!("ports: [\"{}-{}\"], protocols: {}", r.lo, r.hi, protos(r));
                match r.vendor {
                    None => allow.push_str(&format!("    - {{cidr: \"{}\", {common}}}\n", r.net)),
                    Some((scoped, m)) => {
                        let procs = if scoped { ", processes: [{exe: /opt/billing/bin/api}]" } else { "" };
                        let mode = m.map_or(String::new(), |m| {
                            format!(", mode: {}", if m == Mode::Monitor { "monitor" } else { "enforce" })
                        });
                        vendors.push_str(&format!(
                            "    - {{name: v{i}, destinations: [{{cidr: \"{}\"}}], {common}{procs}{mode}}}\n",
                            r.net
                        ));
                    }
                }
            }
            format!("  mode: {mode}\n  default: {default}\n  allow:\n{allow}  vendors:\n{vendors}")
                .replace("  allow:\n  vendors:", "  vendors:")
                .replace("  vendors:\n\n", "")
        }

        /// The documented semantics, read directly: allowed if a rule covers the destination,
        /// port, protocol and process; else, if a vendor's destination matched but not the
        /// process, refused per the vendor's (or the policy's) mode; else `default`.
        fn reference(
            rules: &[R],
            enforce: bool,
            default: DefaultAction,
            a: IpAddr,
            port: u16,
            tcp: bool,
            is_api: bool,
        ) -> (u8, u8) {
            let a = match a {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
                v4 => v4,
            };
            // The kernel checks the longest matching prefix's entries: those of every rule whose
            // prefix contains the destination.
            let hits: Vec<&R> = rules
                .iter()
                .filter(|r| r.net.contains(&a) && r.lo <= port && port <= r.hi && if tcp { r.tcp } else { r.udp })
                .collect();
            if hits.iter().any(|r| matches!(r.vendor, None | Some((false, _))) || (is_api && r.vendor.is_some())) {
                return (verdict::ALLOW, 0);
            }
            // The first mismatching entry, most specific prefix first, policy order within it.
            let mut scoped: Vec<&&R> = hits.iter().filter(|r| matches!(r.vendor, Some((true, _)))).collect();
            scoped.sort_by_key(|r| std::cmp::Reverse(r.net.prefix_len()));
            if let Some(r) = scoped.first() {
                let e = match r.vendor {
                    Some((_, Some(Mode::Monitor))) => false,
                    Some((_, Some(Mode::Enforce))) => true,
                    _ => enforce,
                };
                return (if e { verdict::DENY } else { verdict::ALERT }, event_flags::PROCESS_NOT_ALLOWED);
            }
            let v = match (default, enforce) {
                (DefaultAction::Allow, _) => verdict::ALLOW,
                (DefaultAction::Deny, true) => verdict::DENY,
                _ => verdict::ALERT,
            };
            (v, 0)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn tables_agree_with_the_semantics(
                rules in proptest::collection::vec(rule(), 1..12),
                probes in proptest::collection::vec(probe(), 1..40),
                enforce in any::<bool>(),
                default in prop_oneof![Just(DefaultAction::Deny), Just(DefaultAction::Alert), Just(DefaultAction::Allow)],
            ) {
                let d = match default { DefaultAction::Deny => "deny", DefaultAction::Alert => "alert", DefaultAction::Allow => "allow" };
                let (p, _) = compiled(&policy_text(&rules, if enforce { "enforce" } else { "monitor" }, d));
                for (addr, port, tcp, is_api) in probes {
                    let proc = if is_api { api() } else { curl() };
                    let got = p.decide(addr, port, if tcp { Protocol::Tcp } else { Protocol::Udp }, &proc);
                    let want = reference(&rules, enforce, default, addr, port, tcp, is_api);
                    prop_assert_eq!((got.verdict, got.flags), want, "{} port {} tcp {} api {}", addr, port, tcp, is_api);
                }
            }
        }
    }
}
