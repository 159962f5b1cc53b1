//! Tests of the policy compiler and of `CompiledPolicy::decide`.
use std::net::Ipv4Addr;

use super::{super::resolve::ExeFile, *};
use crate::policy::{merge, parse};

/// A host with two executables, one user and one cgroup.
struct FakeHost;

impl Resolver for FakeHost {
    fn exes(&self, pattern: &str) -> Result<Vec<ExeFile>, String> {
        let all = [("/opt/billing/bin/api", 7, 100), ("/usr/bin/curl", 7, 200)];
        Ok(all
            .iter()
            .filter(|(p, ..)| glob::Pattern::new(pattern).is_ok_and(|g| g.matches(p)))
            .map(|(p, dev, ino)| ExeFile { path: (*p).into(), dev: *dev, ino: *ino, gen: None, script: false })
            .collect())
    }
    fn user(&self, name: &str) -> Option<u32> {
        (name == "billing").then_some(1001)
    }
    fn cgroup(&self, path: &str) -> Option<(u64, u32)> {
        (path == "/system.slice/billing.service").then_some((55, 2))
    }
    /// One burstable pod with two containerd containers (ids `aa…`, `ab…`), and a docker
    /// container outside Kubernetes (`ac…`).
    fn containers(&self) -> Vec<crate::container::Found> {
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", POD.replace('-', "_"));
        let mut out = vec![(pod.clone(), 300, 3)];
        out.push((format!("{pod}/cri-containerd-{}.scope", cid('a')), 301, 4));
        out.push((format!("{pod}/cri-containerd-{}.scope", cid('b')), 302, 4));
        out.push((format!("/system.slice/docker-{}.scope", cid('c')), 303, 2));
        out.into_iter()
            .filter_map(|(path, id, depth)| {
                let what = crate::container::own(&path)?;
                let pod_uid = crate::container::parse(&path).pod_uid;
                Some(crate::container::Found { path, id, depth, what, pod_uid })
            })
            .collect()
    }
    /// The pod list has the pod, in namespace `payments`, labelled app=checkout and tier=web.
    fn pod(&self, uid: &str) -> Result<Option<std::sync::Arc<crate::kube::PodMeta>>, String> {
        Ok((uid == POD).then(|| {
            std::sync::Arc::new(crate::kube::PodMeta {
                namespace: "payments".into(),
                name: "checkout-7d9f-x2".into(),
                labels: [("app", "checkout"), ("tier", "web")].into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            })
        }))
    }
}

/// The same host without a pod list.
struct NoPodList;

impl Resolver for NoPodList {
    fn exes(&self, pattern: &str) -> Result<Vec<ExeFile>, String> {
        FakeHost.exes(pattern)
    }
    fn user(&self, name: &str) -> Option<u32> {
        FakeHost.user(name)
    }
    fn cgroup(&self, path: &str) -> Option<(u64, u32)> {
        FakeHost.cgroup(path)
    }
    fn containers(&self) -> Vec<crate::container::Found> {
        FakeHost.containers()
    }
}

const POD: &str = "6f1c2d3e-0a1b-4c5d-8e9f-0123456789ab";

/// A container id starting `a<c>`.
fn cid(c: char) -> String {
    format!("a{c}{}", "0".repeat(62))
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
    ProcIdentity { exe: Some((7, 100)), uid: 1001, comm: "api".into(), cgroup_ancestors: vec![1, 20, 55], tamper: 0 }
}

fn curl() -> ProcIdentity {
    ProcIdentity { exe: Some((7, 200)), uid: 0, comm: "curl".into(), cgroup_ancestors: vec![1, 20, 21], tamper: 0 }
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
fn nat64_forms_are_matched_as_v4() {
    let scoped = "  mode: enforce\n  default: allow\n  nat64Prefixes: [\"64:ff9b:1::/96\"]\n  vendors:\n    - {name: s, destinations: [{cidr: 192.0.2.7}], processes: [{uid: 4242}]}\n";
    let (p, _) = compiled(scoped);
    let (other, owner) = (ProcIdentity::default(), ProcIdentity { uid: 4242, ..ProcIdentity::default() });
    for a in ["192.0.2.7", "64:ff9b::c000:207", "64:ff9b:1::192.0.2.7"] {
        let d = p.decide(ip(a), 443, Protocol::Tcp, &other);
        assert_eq!((d.verdict, d.flags), (verdict::DENY, event_flags::PROCESS_NOT_ALLOWED), "{a}");
        assert_eq!(p.decide(ip(a), 443, Protocol::Tcp, &owner).verdict, verdict::ALLOW, "{a}");
    }
    // Not translated: another /96, IPv4-compatible, 6to4.
    for a in ["64:ff9b:2::c000:207", "::192.0.2.7", "2002:c000:207::1"] {
        assert_eq!(p.decide(ip(a), 443, Protocol::Tcp, &other).verdict, verdict::ALLOW, "{a}");
    }
    let wk = p.nat64("64:ff9b::c000:207".parse().expect("addr")).expect("well-known");
    assert_eq!((wk.0.to_string(), wk.1.to_string(), wk.2), ("192.0.2.7".to_owned(), "64:ff9b::/96".to_owned(), None));
    let listed = p.nat64("64:ff9b:1::c000:207".parse().expect("addr")).expect("listed");
    assert_eq!(listed.2.map(|at| at.field.as_str()), Some("spec.nat64Prefixes[0]"));
    let (p, _) = compiled("  mode: enforce\n  allow:\n    - {cidr: 192.0.2.0/24}\n");
    assert_eq!(p.decide(ip("64:ff9b::c000:207"), 80, Protocol::Tcp, &other).verdict, verdict::ALLOW);
    assert_eq!(p.decide(ip("64:ff9b:1::c000:207"), 80, Protocol::Tcp, &other).verdict, verdict::DENY);
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

#[test]
fn untampered_selectors_refuse_a_steered_or_traced_process() {
    let (p, w) = compiled(&SCOPED.replace("{exe: /opt/billing/bin/*}", "{exe: /opt/billing/bin/*, untampered: true}"));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &api()).verdict, verdict::ALLOW);
    for bit in [agent_common::tamper::LOADER_ENV, agent_common::tamper::TRACED, agent_common::tamper::UNRECORDED] {
        let d = p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &ProcIdentity { tamper: bit, ..api() });
        assert_eq!((d.verdict, d.flags), (verdict::DENY, event_flags::PROCESS_NOT_ALLOWED), "tamper {bit}");
    }
    // Without `untampered`, a preloaded process (an allocator, say) is who it is.
    let (p, _) = compiled(SCOPED);
    let preloaded = ProcIdentity { tamper: agent_common::tamper::LOADER_ENV, ..api() };
    assert_eq!(p.decide(ip("192.0.2.9"), 443, Protocol::Tcp, &preloaded).verdict, verdict::ALLOW);
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
        w[0].to_string()
            .starts_with("t.yaml:10:11: warning: spec.vendors[0].processes[0]: exe `/nowhere/*` matches no executable"),
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
        text.iter().any(|t| t.contains("vendor/stripe to 192.0.2.0/24 is also allowed to every process by allow/wide")
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
    let nets = ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.1.0/24", "10.1.1.128/25", "192.168.0.0/16", "10.1.1.7"];
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
        // IPv4-mapped and well-known NAT64 forms are their IPv4 address.
        let a = match a {
            IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
                IpAddr::V4(Ipv4Addr::from(u128::from(v6) as u32))
            }
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

#[path = "compile_pod_tests.rs"]
mod pods;

/// `icmp` must be named (the default protocols are tcp and udp), and its ports do not apply.
#[test]
fn icmp_is_allowed_only_where_named_and_ports_do_not_apply() {
    let (p, _) = compiled(
        "  mode: enforce\n  allow:\n    - {name: web, cidr: 192.0.2.0/24, ports: [443]}\n  vendors:\n    - {name: probe, destinations: [{cidr: 198.51.100.0/24}], ports: [443], protocols: [tcp, icmp]}\n",
    );
    let any = ProcIdentity::default();
    assert_eq!(p.decide(ip("192.0.2.1"), 443, Protocol::Tcp, &any).verdict, verdict::ALLOW);
    assert_eq!(p.decide(ip("192.0.2.1"), 0, Protocol::Icmp, &any).verdict, verdict::DENY);
    for port in [0, 7, 443] {
        assert_eq!(p.decide(ip("198.51.100.9"), port, Protocol::Icmp, &any).verdict, verdict::ALLOW, "{port}");
    }
    assert_eq!(p.decide(ip("198.51.100.9"), 7, Protocol::Tcp, &any).verdict, verdict::DENY);
    assert_eq!(p.decide(ip("198.51.100.9"), 443, Protocol::Udp, &any).verdict, verdict::DENY);
}
