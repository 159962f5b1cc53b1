//! `learn`: a policy proposed from what the inventory saw, for a person to review. It is written
//! to be pruned, not trusted: monitor mode, every vendor without an owner, and comments with
//! when and how much each destination and process was used.
//!
//! Everything the inventory holds came from processes on the host, so none of it is written
//! into the YAML unchecked: values go through the policy's own parsers and are quoted, and text
//! in comments has its control characters replaced (a process name with a newline must not be
//! able to add a rule).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt::Write as _,
    net::IpAddr,
    str::FromStr as _,
};

use agent_common::{verdict, MAX_RULES_PER_PREFIX, RULE_DEFAULT};
use ipnet::IpNet;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::inventory::{Inventory, Usage};
use crate::{
    dns::registrable::{registrable, vendor_name},
    policy::{
        compile::{comm_bytes, CompiledPolicy, ProcIdentity},
        model::{Comm, DomainPattern, ExePattern, Protocol},
        resolve::Resolver,
    },
};

/// More names than this under one registrable domain are written as its wildcard.
const WILDCARD_AFTER: usize = 4;
/// Rule entries (ports x process selectors) one learned vendor may put on a destination; the
/// rest of the kernel's per-destination budget is left for the base policy's enclosing rules.
const ENTRY_BUDGET: usize = MAX_RULES_PER_PREFIX as usize * 3 / 4;
/// The port that makes a destination a resolver (infrastructure, not a vendor).
const DNS_PORT: u16 = 53;

/// A policy already in force: what it allows is not proposed again.
pub struct Base<'a> {
    policy: &'a CompiledPolicy,
    resolver: &'a dyn Resolver,
    /// Executable path → kernel file identity, looked up once per path.
    ids: std::cell::RefCell<HashMap<String, Option<(u32, u64)>>>,
}

impl<'a> Base<'a> {
    /// `policy` as `policy::load` compiled it; `resolver` finds the executables the inventory
    /// names (the host's, or a fake in tests), as the compiler found those of `exe` selectors.
    pub fn new(policy: &'a CompiledPolicy, resolver: &'a dyn Resolver) -> Self {
        Base { policy, resolver, ids: std::cell::RefCell::default() }
    }

    /// The process as the kernel would see it. Cgroups are not in the inventory, so a base rule
    /// that needs one does not count as allowing (the safe direction: it is proposed again).
    fn identity(&self, process: &str, uid: u32) -> ProcIdentity {
        if let Some(comm) = process.strip_prefix("comm:") {
            return ProcIdentity { exe: None, uid, comm: comm.to_owned(), cgroup_ancestors: Vec::new(), tamper: 0 };
        }
        let exe = *self.ids.borrow_mut().entry(process.to_owned()).or_insert_with(|| {
            self.resolver.exes(&glob::Pattern::escape(process)).ok()?.first().map(|f| (f.dev, f.ino))
        });
        let name = process.rsplit('/').next().unwrap_or(process);
        let comm = String::from_utf8_lossy(&comm_bytes(name)).trim_end_matches('\0').to_owned();
        ProcIdentity { exe, uid, comm, cgroup_ancestors: Vec::new(), tamper: 0 }
    }

    /// Whether a rule of the base allows it; `default: allow` does not count, or a base that
    /// allows everything would leave nothing to review.
    fn allows(&self, dest: &Dest, port: u16, proto: Protocol, proc: &ProcIdentity) -> bool {
        let d = match dest {
            Dest::Name(n) => self.policy.decide_domain(n, port, proto, proc).1,
            Dest::Addr(a) => self.policy.decide(*a, port, proto, proc),
        };
        d.verdict == verdict::ALLOW && d.rule_id != RULE_DEFAULT
    }

    fn vendor_names(&self) -> HashSet<String> {
        self.policy.rules.iter().filter_map(|r| r.vendor.clone()).collect()
    }
}

enum Dest {
    Name(String),
    Addr(IpAddr),
}

/// One proposed vendor (or resolver): destinations with their usage, processes with theirs.
#[derive(Default)]
struct Group {
    dests: BTreeMap<String, Usage>,
    processes: BTreeMap<(String, u32), Usage>,
}

impl Group {
    fn add_processes(&mut self, procs: &[super::inventory::ProcessUsage]) {
        for p in procs {
            let u = self.processes.entry((p.process.clone(), p.uid)).or_insert_with(|| p.usage.clone());
            if u != &p.usage {
                fold(u, &p.usage);
            }
        }
    }
}

/// Adds `u` to `into`. Ports past the inventory's bound per entry are left out, as the
/// inventory left them out (and counted them, which the proposal's header reports).
fn fold(into: &mut Usage, u: &Usage) {
    let _ = into.merge(u);
}

fn protocols(u: &Usage) -> Vec<Protocol> {
    u.protocols
        .iter()
        .filter_map(|p| match p.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp),
            _ => None,
        })
        .collect()
}

/// The policy YAML proposed from `inv`, named `name` (made a valid policy name if it is not);
/// with `base`, leaving out what it already allows.
pub fn generate(inv: &Inventory, name: &str, base: Option<&Base>) -> String {
    let (mut domains, mut addrs, mut resolvers) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for p in inv.parties.values() {
        for (n, u) in &p.names {
            let g: &mut Group = domains.entry(registrable(n)).or_default();
            g.dests.insert(n.clone(), u.clone());
            g.add_processes(&p.processes);
        }
        for (a, u) in &p.addrs {
            if u.ports.contains(&DNS_PORT) {
                let g: &mut Group = resolvers.entry(*a).or_default();
                let mut only53 = u.clone();
                only53.ports = vec![DNS_PORT];
                g.dests.insert(a.to_string(), only53);
                g.add_processes(&p.processes);
                if u.ports.len() == 1 {
                    continue;
                }
            }
            let g: &mut Group = addrs.entry(*a).or_default();
            let mut rest = u.clone();
            rest.ports.retain(|p| *p != DNS_PORT);
            g.dests.insert(a.to_string(), rest);
            g.add_processes(&p.processes);
        }
    }
    if let Some(b) = base {
        domains.values_mut().for_each(|g| prune(g, b, |n| Dest::Name(n.to_owned())));
        addrs.values_mut().for_each(|g| prune(g, b, |a| Dest::Addr(a.parse().unwrap_or(IpAddr::from([0u8; 4])))));
        resolvers.values_mut().for_each(|g| prune(g, b, |a| Dest::Addr(a.parse().unwrap_or(IpAddr::from([0u8; 4])))));
    }

    let mut out = String::new();
    let policy_name = vendor_name(name);
    let _ = writeln!(out, "# Proposed by `egress-agent learn` from what the agent observed; review every entry.");
    if let Some((contacts, d)) = Some(inv.dropped()).filter(|(c, d)| *c > 0 || d.any()) {
        let _ = writeln!(
            out,
            "# The inventory was full in places ({contacts} contacts with further parties, {} names, {} addresses, {} process contacts, {} ports not listed): traffic is missing below.",
            d.names, d.addrs, d.processes, d.ports
        );
    }
    if base.is_some() {
        let _ = writeln!(out, "# What the base policy already allows is left out. To use this file next to it, delete");
        let _ = writeln!(out, "# `mode` and `default` below: they may be given by one document only.");
    }
    let _ = writeln!(out, "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata:\n  name: {}", q(&policy_name));
    let _ = writeln!(out, "spec:");
    let _ =
        writeln!(out, "  # Monitor and alert while this is reviewed: nothing is refused. Once every vendor below has");
    let _ = writeln!(out, "  # an owner and only what it should have, switch to `mode: enforce` and `default: deny`.");
    let _ = writeln!(out, "  mode: monitor\n  default: alert");

    let live_resolvers: Vec<_> = resolvers.iter().filter(|(_, g)| !g.dests.is_empty()).collect();
    if live_resolvers.is_empty() {
        let _ = writeln!(out, "  allow: []");
    } else {
        let _ =
            writeln!(out, "  # Resolvers the host used (port {DNS_PORT}): infrastructure, allowed to every process.");
        let _ = writeln!(out, "  allow:");
        for (a, g) in live_resolvers {
            let u = g.dests.values().next().cloned().unwrap_or_default();
            let protos = protocols(&u);
            let _ = writeln!(out, "    # {}", stats(&u));
            let _ = writeln!(
                out,
                "    - {{name: {}, cidr: {}, ports: [{DNS_PORT}], protocols: [{}]}}",
                q(&format!("resolver-{}", vendor_name(&a.to_string()))),
                q(&IpNet::from(*a).to_string()),
                proto_list(if protos.is_empty() { &[Protocol::Udp, Protocol::Tcp][..] } else { &protos })
            );
        }
    }

    let mut taken = base.map(Base::vendor_names).unwrap_or_default();
    let mut vendors = String::new();
    for (reg, g) in &domains {
        vendor(&mut vendors, &mut taken, reg, g, true);
    }
    for (a, g) in &addrs {
        vendor(&mut vendors, &mut taken, &a.to_string(), g, false);
    }
    if vendors.is_empty() {
        let _ = writeln!(out, "  vendors: []");
    } else {
        let _ = writeln!(out, "  vendors:");
        out.push_str(&vendors);
    }
    out
}

/// Removes from `g` the destinations and processes for which the base allows every port and
/// protocol seen.
fn prune(g: &mut Group, b: &Base, dest: impl Fn(&str) -> Dest) {
    let mut needed_procs = BTreeSet::new();
    g.dests.retain(|d, u| {
        let target = dest(d);
        let mut needed = false;
        for (process, uid) in g.processes.keys() {
            let id = b.identity(process, *uid);
            let protos = protocols(u);
            // ICMP has no ports: it is asked about once, whatever ports other protocols used.
            let allowed = u.ports.iter().all(|port| {
                protos.iter().filter(|p| **p != Protocol::Icmp).all(|pr| b.allows(&target, *port, *pr, &id))
            }) && (!protos.contains(&Protocol::Icmp) || b.allows(&target, 0, Protocol::Icmp, &id));
            if !allowed {
                needed_procs.insert((process.clone(), *uid));
                needed = true;
            }
        }
        needed
    });
    g.processes.retain(|k, _| needed_procs.contains(k));
}

/// A selector's process, and the uids it ran as with their usage.
type Selected<'a> = (String, Vec<(u32, &'a Usage)>);

/// Writes one vendor for `g` (nothing if nothing in it can be expressed).
fn vendor(out: &mut String, taken: &mut HashSet<String>, party: &str, g: &Group, named: bool) {
    if g.dests.is_empty() {
        return;
    }
    let mut total = Usage::default();
    let mut first = true;
    for u in g.dests.values() {
        if first {
            total = u.clone();
            first = false;
        } else {
            fold(&mut total, u);
        }
    }
    let protos = protocols(&total);
    let mut s = String::new();
    let _ = writeln!(s, "    # {}: {}", clean(party), stats(&total));
    if protos.is_empty() {
        // The policy format has no ICMP rules: such a destination cannot be listed.
        let _ = writeln!(
            s,
            "    # not proposed: only {} seen, which a policy cannot allow",
            clean(&total.protocols.join(", "))
        );
        out.push_str(&s);
        return;
    }
    let mut dests = String::new();
    let mut skipped = String::new();
    let names: Vec<(&String, &Usage)> = g.dests.iter().collect();
    if named && names.len() > WILDCARD_AFTER {
        let _ = writeln!(dests, "        # {} names seen under {}:", names.len(), clean(party));
        for (n, u) in &names {
            let _ = writeln!(dests, "        #   {}: {}", clean(n), stats(u));
        }
        let wildcard = format!("*.{party}");
        if wildcard.parse::<DomainPattern>().is_ok() {
            let _ = writeln!(dests, "        - {{domain: {}}}", q(&wildcard));
        } else {
            let _ = writeln!(skipped, "    # not expressible as a domain: {}", clean(&wildcard));
        }
        if g.dests.contains_key(party) && party.parse::<DomainPattern>().is_ok() {
            let _ = writeln!(dests, "        - {{domain: {}}}", q(party));
        }
    } else {
        for (d, u) in &names {
            let (key, value) = if named {
                ("domain", d.parse::<DomainPattern>().map(|p| p.to_string()).map_err(|e| e.to_string()))
            } else {
                ("cidr", d.parse::<IpAddr>().map(|a| IpNet::from(a).to_string()).map_err(|e| e.to_string()))
            };
            match value {
                Ok(v) => {
                    let _ = writeln!(dests, "        # {}", stats(u));
                    let _ = writeln!(dests, "        - {{{key}: {}}}", q(&v));
                }
                Err(e) => {
                    let _ = writeln!(skipped, "    # not expressible as a {key}: {} ({})", clean(d), clean(&e));
                }
            }
        }
    }
    if dests.is_empty() {
        out.push_str(&s);
        out.push_str(&skipped);
        return;
    }

    let mut name = vendor_name(party);
    if name.len() > 60 || taken.contains(&name) {
        name.truncate(58);
        let stem = name.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{stem}-{n}");
            n += 1;
        }
    }
    taken.insert(name.clone());

    // Process selectors, one per executable (uids in the comment), or by comm.
    let mut selectors: BTreeMap<String, Selected> = BTreeMap::new();
    let mut bad_procs = String::new();
    for ((process, uid), u) in &g.processes {
        let sel = if let Some(c) = process.strip_prefix("comm:") {
            Comm::from_str(c).map(|c| format!("{{comm: {}}}", q(&c.0)))
        } else {
            ExePattern::from_str(&glob::Pattern::escape(process)).map(|e| format!("{{exe: {}}}", q(&e.0)))
        };
        match sel {
            Ok(sel) => selectors.entry(sel).or_insert_with(|| (process.clone(), Vec::new())).1.push((*uid, u)),
            Err(e) => {
                let _ =
                    writeln!(bad_procs, "        # not expressible as a selector: {} ({})", clean(process), clean(&e));
            }
        }
    }
    let mut ports: Vec<u16> = total.ports.clone();
    let mut port_note = None;
    let sel_count = selectors.len().max(1);
    if ports.len() * sel_count > ENTRY_BUDGET {
        // The kernel checks a bounded number of rule entries per destination.
        if let (Some(lo), Some(hi)) = (ports.first().copied(), ports.last().copied()) {
            port_note = Some(format!(
                "      # {} ports seen ({}); written as one range to fit the kernel's per-destination rule limit",
                ports.len(),
                ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
            ports = vec![lo, hi];
        }
    }
    let port_text = if port_note.is_some() {
        format!("[{}]", q(&format!("{}-{}", ports[0], ports[ports.len() - 1])))
    } else {
        format!("[{}]", ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
    };

    out.push_str(&s);
    out.push_str(&skipped);
    let _ = writeln!(out, "    - name: {}", q(&name));
    let _ = writeln!(out, "      # Fill in before approving: the accountable team, why, and the data it receives.");
    let _ = writeln!(out, "      owner: \"\"\n      purpose: \"\"\n      data: []");
    let _ = writeln!(out, "      destinations:");
    out.push_str(&dests);
    if let Some(n) = port_note {
        let _ = writeln!(out, "{n}");
    }
    if !total.ports.is_empty() {
        let _ = writeln!(out, "      ports: {port_text}");
    }
    let _ = writeln!(out, "      protocols: [{}]", proto_list(&protos));
    if total.protocols.iter().any(|p| p != "tcp" && p != "udp" && p != "icmp") {
        let _ = writeln!(out, "      # also seen: {}, which a policy cannot allow", clean(&total.protocols.join(", ")));
    }
    if selectors.len() > ENTRY_BUDGET {
        let _ = writeln!(
            out,
            "      # {} processes seen, more than one destination can carry rules for: `processes` is left out, so\n      # any process may call this vendor; narrow it (a cgroup or a user) by hand.",
            selectors.len()
        );
        for sel in selectors.keys() {
            let _ = writeln!(out, "      #   {}", clean(sel));
        }
    } else if selectors.is_empty() {
        let _ = writeln!(out, "      # no process could be named: as written any process may call this vendor.");
        out.push_str(&bad_procs);
    } else {
        let _ = writeln!(out, "      processes:");
        out.push_str(&bad_procs);
        for (sel, (process, uses)) in &selectors {
            for (uid, u) in uses {
                let _ = writeln!(out, "        # uid {uid}: {}", stats(u));
            }
            if process.starts_with("comm:") {
                let _ = writeln!(out, "        # comm only (the executable was unknown): any process can take this name; add an exe, uid or cgroup.");
            }
            let _ = writeln!(out, "        - {sel}");
        }
    }
}

fn proto_list(ps: &[Protocol]) -> String {
    ps.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
}

fn stats(u: &Usage) -> String {
    format!(
        "first seen {}, last seen {}, {} connection{}, {} bytes out, {} bytes in",
        rfc3339(u.first()),
        rfc3339(u.last()),
        u.connections,
        if u.connections == 1 { "" } else { "s" },
        u.bytes_out,
        u.bytes_in
    )
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A YAML scalar for any text: a JSON string is a valid YAML double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Text safe inside a comment: one line, printable.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        baseline::inventory::tests::{contact, sample, T0},
        policy::{compile::compile, merge, parse, resolve::ExeFile, Problem, Severity},
    };

    /// A host with the sample's executables.
    struct FakeHost;

    impl Resolver for FakeHost {
        fn exes(&self, pattern: &str) -> Result<Vec<ExeFile>, String> {
            let all = [("/opt/billing/bin/api", 7, 100), ("/usr/lib/systemd/systemd-resolved", 7, 200)];
            Ok(all
                .iter()
                .filter(|(p, ..)| glob::Pattern::new(pattern).is_ok_and(|g| g.matches(p)))
                .map(|(p, dev, ino)| ExeFile { path: (*p).into(), dev: *dev, ino: *ino, gen: None, script: false })
                .collect())
        }
        fn user(&self, _: &str) -> Option<u32> {
            None
        }
        fn cgroup(&self, _: &str) -> Option<(u64, u32)> {
            None
        }
    }

    /// Parses, merges and compiles like `check`; panics on any error.
    fn checked(text: &str) -> (CompiledPolicy, Vec<Problem>) {
        let docs = parse("learned.yaml", text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let (m, mut warnings) = merge(&docs).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let (c, w) = compile(&m, &FakeHost, T0).unwrap_or_else(|e| panic!("{e}\n{text}"));
        warnings.extend(w);
        assert!(warnings.iter().all(|w| w.severity == Severity::Warning));
        (c, warnings)
    }

    fn vendors(c: &CompiledPolicy) -> Vec<String> {
        c.rules.iter().filter_map(|r| r.vendor.clone()).collect()
    }

    #[test]
    fn learned_policy_checks_and_lists_every_party() {
        let text = generate(&sample(), "Learned host", None);
        let (c, _) = checked(&text);
        assert_eq!(c.name, "learned-host");
        assert_eq!(vendors(&c), ["s3-amazonaws-com", "stripe-com", "203-0-113-7"], "{text}");
        assert!(c.rules.iter().any(|r| r.name == "allow/resolver-10-0-0-2"), "{text}");
        for want in [
            "mode: monitor\n  default: alert",
            "- {domain: \"api.stripe.com\"}",
            "- {domain: \"files.stripe.com\"}",
            "- {cidr: \"203.0.113.7/32\"}",
            "ports: [8443]",
            "- {exe: \"/opt/billing/bin/api\"}",
            "- {comm: \"backup\"}",
            "comm only",
            "cidr: \"10.0.0.2/32\", ports: [53], protocols: [udp]",
            "owner: \"\"",
            "first seen 2026-11-01T09:00:00Z",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
        // What it proposes is what was seen: the api may reach Stripe, on 443, and nothing else.
        let api = ProcIdentity { exe: Some((7, 100)), uid: 1000, ..Default::default() };
        let (_, d) = c.decide_domain("api.stripe.com", 443, Protocol::Tcp, &api);
        assert_eq!(d.verdict, verdict::ALLOW);
        let other = ProcIdentity { exe: Some((7, 200)), ..Default::default() };
        let (_, d) = c.decide_domain("api.stripe.com", 443, Protocol::Tcp, &other);
        assert_ne!(d.verdict, verdict::ALLOW);
    }

    #[test]
    fn many_names_become_a_wildcard_and_the_bare_name() {
        let mut inv = Inventory::default();
        for n in ["example.com", "a.example.com", "b.example.com", "c.example.com", "d.example.com"] {
            inv.record_connect(T0, &contact("/opt/billing/bin/api", Some(n), "192.0.2.1", 443, "tcp"));
        }
        let text = generate(&inv, "w", None);
        checked(&text);
        assert!(
            text.contains("- {domain: \"*.example.com\"}") && text.contains("- {domain: \"example.com\"}"),
            "{text}"
        );
        assert!(!text.contains("{domain: \"a.example.com\"}"), "{text}");
        assert!(text.contains("#   a.example.com: first seen"), "{text}");
    }

    #[test]
    fn what_the_base_allows_is_left_out() {
        let base = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: base}\nspec:\n  mode: enforce\n  allow:\n    - {name: dns, cidr: 10.0.0.0/8, ports: [53]}\n  vendors:\n    - name: stripe\n      destinations: [{domain: \"*.stripe.com\"}]\n      ports: [443]\n      processes: [{exe: /opt/billing/bin/api}]\n";
        let (c, _) = checked(base);
        let b = Base::new(&c, &FakeHost);
        let text = generate(&sample(), "delta", Some(&b));
        let (learned, _) = checked(&text);
        assert_eq!(vendors(&learned), ["s3-amazonaws-com", "203-0-113-7"], "{text}");
        assert!(!text.contains("resolver-10-0-0-2") && !text.contains("stripe.com\""), "{text}");
        // Stripe from another process is not allowed by the base: proposed, for that process.
        let mut inv = sample();
        let resolved = "/usr/lib/systemd/systemd-resolved";
        inv.record_connect(T0, &contact(resolved, Some("api.stripe.com"), "54.187.174.169", 443, "tcp"));
        let text = generate(&inv, "delta", Some(&b));
        let (learned, _) = checked(&text);
        assert_eq!(vendors(&learned), ["s3-amazonaws-com", "stripe-com", "203-0-113-7"], "{text}");
        let stripe = &text[text.find("name: \"stripe-com\"").unwrap()..text.find("name: \"203-0-113-7\"").unwrap()];
        assert!(stripe.contains("- {exe: \"/usr/lib/systemd/systemd-resolved\"}"), "{text}");
        assert!(!stripe.contains("/opt/billing/bin/api"), "{text}");
        assert!(text.contains("base policy already allows"), "{text}");
    }

    /// ICMP is proposed as `icmp` (no ports), and a base that allows the address for TCP only
    /// does not take the ping out of the proposal.
    #[test]
    fn icmp_is_proposed_unless_the_base_allows_it() {
        let mut inv = Inventory::default();
        inv.record_connect(T0, &contact("/opt/billing/bin/api", None, "192.0.2.9", 0, "icmp"));
        let text = generate(&inv, "p", None);
        let (c, _) = checked(&text);
        assert!(text.contains("protocols: [icmp]") && !text.contains("ports:"), "{text}");
        let api = ProcIdentity { exe: Some((7, 100)), uid: 1000, ..Default::default() };
        assert_eq!(c.decide("192.0.2.9".parse().unwrap(), 0, Protocol::Icmp, &api).verdict, verdict::ALLOW);
        let tcp_only = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: base}\nspec:\n  allow:\n    - {cidr: 192.0.2.0/24}\n";
        let (base, _) = checked(tcp_only);
        let text = generate(&inv, "p", Some(&Base::new(&base, &FakeHost)));
        assert!(text.contains("protocols: [icmp]"), "the ping was taken out: {text}");
        let icmp_too = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: base}\nspec:\n  allow:\n    - {cidr: 192.0.2.0/24, protocols: [icmp]}\n";
        let (base, _) = checked(icmp_too);
        let text = generate(&inv, "p", Some(&Base::new(&base, &FakeHost)));
        assert!(!text.contains("protocols: [icmp]"), "allowed by the base: {text}");
    }

    #[test]
    fn hostile_text_stays_in_its_comment() {
        let mut inv = Inventory::default();
        let evil = "/tmp/x\n  vendors: [{name: evil, destinations: [{cidr: 0.0.0.0/0}]}]";
        inv.record_connect(T0, &contact(evil, Some("api.example.com"), "192.0.2.1", 443, "tcp"));
        inv.record_connect(T0, &contact("relative/path", Some("x_y.example.org"), "192.0.2.2", 443, "tcp"));
        let text = generate(&inv, "h", None);
        let (c, _) = checked(&text);
        assert!(!vendors(&c).contains(&"evil".to_owned()), "{text}");
        assert!(text.contains("not expressible as a selector: relative/path"), "{text}");
    }
}
