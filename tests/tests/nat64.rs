//! Kernel tests of IPv6 forms of IPv4 destinations: an address under a NAT64 prefix
//! (`64:ff9b::/96`, RFC 6052, or one the policy lists in `nat64Prefixes`) is the IPv4 address it
//! embeds, and is decided as that address — allowed by its IPv4 rules, reserved by them, learnt
//! as it from DNS64 answers — while events keep the address on the wire. IPv4-compatible
//! (`::a.b.c.d`) and 6to4 (`2002::/16`) addresses are not translated by the kernel and stay
//! ordinary IPv6 destinations. A server on the NAT64 address in the test namespace stands in
//! for the NAT64 gateway.

use std::{fs, path::Path, process::Command, time::Duration};

use egress_agent_tests::{policy, realpath_of, wait_for, write_atomic, TestEnv, ADDR4, DNS4};
use serde_json::Value;

const WEB: u16 = 8080;
/// ADDR4 (198.18.0.10) under the well-known prefix.
const WK: &str = "64:ff9b::c612:a";
/// ADDR4 under the prefix the policies list.
const LISTED: &str = "64:ff9b:1::c612:a";
const LISTED_PREFIX: &str = "64:ff9b:1::/96";
/// ADDR4 as an IPv4-compatible address (deprecated, RFC 4291) and as a 6to4 address (RFC 3056).
const COMPAT: &str = "::c612:a";
const SIX_TO_FOUR: &str = "2002:c612:a::1";

/// A namespace whose loopback owns the IPv6 forms of ADDR4.
fn env_with_forms(name: &str) -> TestEnv {
    let env = TestEnv::new(name);
    for a in [WK, LISTED, SIX_TO_FOUR] {
        env.ip(&["-6", "addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"]);
    }
    env
}

/// Enforce mode, default `default`, vendor `web` on ADDR4:WEB (TCP and UDP) with `vendor_extra`
/// lines, and `spec_extra` lines at the top of the spec.
fn web_policy(default: &str, spec_extra: &str, vendor_extra: &str) -> String {
    policy(&format!(
        "  mode: enforce\n  default: {default}\n{spec_extra}  vendors:\n    - name: web\n      owner: test\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      protocols: [tcp, udp]\n{vendor_extra}"
    ))
}

fn errno(r: &Value) -> i64 {
    r["errno"].as_i64().unwrap_or_else(|| panic!("no errno: {r}"))
}

fn pid(r: &Value) -> u64 {
    r["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {r}"))
}

/// (verdict, vendor, reason, nat64) of an event.
fn decided(ev: &Value) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    (ev["verdict"].as_str(), ev["vendor"].as_str(), ev["reason"].as_str(), ev["nat64"].as_str())
}

#[test]
fn the_well_known_nat64_form_of_an_allowed_address_is_allowed() {
    let mut env = env_with_forms("nat64-allow");
    let server = env.server("tcp", WK, WEB);
    let agent = env.agent(&web_policy("deny", "", ""));
    let r = env.client("tcp", WK, WEB);
    assert_eq!(errno(&r), 0, "{r}\n{}", agent.log());
    assert_eq!(server.wait_received(1).len(), 1);
    let ev = agent.event_of(pid(&r), WK, WEB);
    assert_eq!(decided(&ev), (Some("allow"), Some("web"), Some("rule"), Some(ADDR4)), "{ev}");
    assert_eq!((ev["family"].as_str(), ev["v4_mapped"].as_bool()), (Some("ipv6"), Some(false)), "{ev}");
    // The flow is the wire's: its bytes are counted under the IPv6 address.
    let flow = agent.wait_event("the flow", |e| e["kind"] == "flow" && e["pid"] == pid(&r) && e["dst"] == WK);
    assert!(flow["packets_out"].as_u64().is_some_and(|n| n > 0), "{flow}");
}

#[test]
fn a_vendor_reserved_to_one_executable_is_not_reachable_through_its_nat64_form() {
    let mut env = env_with_forms("nat64-reserved");
    let server = env.server("http", WK, WEB);
    let udp = env.server("udp", WK, WEB + 1);
    let allowed = env.path("curl-billing");
    fs::copy(realpath_of("curl"), &allowed).expect("copy curl");
    let agent =
        env.agent(&web_policy("allow", "", &format!("      processes: [{{exe: \"{}\"}}]\n", allowed.display())));
    // Another process: refused, though `default: allow`, as for the IPv4 address itself.
    let r = env.client("tcp", WK, WEB);
    assert_eq!(errno(&r), i64::from(libc::EPERM), "the NAT64 form bypassed the reservation: {r}\n{}", agent.log());
    let ev = agent.event_of(pid(&r), WK, WEB);
    assert_eq!(decided(&ev), (Some("deny"), Some("web"), Some("process"), Some(ADDR4)), "{ev}");
    // The vendor's own executable gets through.
    let out = env
        .in_cgroup(
            &allowed.display().to_string(),
            &["-sS", "-g", "-o", "/dev/null", "--max-time", "3", &format!("http://[{WK}]:{WEB}/")],
        )
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}\n{}", agent.log());
    assert_eq!(server.wait_received(1).len(), 1);
    // A port the vendor does not list is no one's: `default: allow` lets it through.
    assert_eq!(errno(&env.client("udp-sendto", WK, WEB + 1)), 0);
    assert_eq!(udp.wait_received(1).len(), 1);
}

#[test]
fn unconnected_udp_through_a_nat64_form_is_decided_as_ipv4() {
    let mut env = env_with_forms("nat64-udp");
    let server = env.server("udp", WK, WEB);
    let agent = env.agent(&web_policy("deny", "", ""));
    let r = env.client("udp-sendto", WK, WEB);
    assert_eq!(errno(&r), 0, "{r}\n{}", agent.log());
    assert_eq!(server.wait_received(1).len(), 1);
    let ev = agent.event_of(pid(&r), WK, WEB);
    assert_eq!(decided(&ev), (Some("allow"), Some("web"), Some("rule"), Some(ADDR4)), "{ev}");
    assert_eq!(ev["hook"], "sendmsg6", "{ev}");
    // The IPv4 rule's port still counts.
    let r = env.client("udp-sendto", WK, WEB + 2);
    assert_eq!(errno(&r), i64::from(libc::EPERM), "{r}");
    let ev = agent.event_of(pid(&r), WK, WEB + 2);
    assert_eq!(decided(&ev), (Some("deny"), None, Some("default"), Some(ADDR4)), "{ev}");
}

#[test]
fn a_listed_prefix_is_decided_as_ipv4_until_a_reload_removes_it() {
    let mut env = env_with_forms("nat64-listed");
    let server = env.server("tcp", LISTED, WEB);
    let listed = format!("  nat64Prefixes: [\"{LISTED_PREFIX}\"]\n");
    let agent = env.agent(&web_policy("deny", &listed, ""));
    let r = env.client("tcp", LISTED, WEB);
    assert_eq!(errno(&r), 0, "{r}\n{}", agent.log());
    assert_eq!(server.wait_received(1).len(), 1);
    let ev = agent.event_of(pid(&r), LISTED, WEB);
    assert_eq!(decided(&ev), (Some("allow"), Some("web"), Some("rule"), Some(ADDR4)), "{ev}");
    // Reloaded without the prefix: an ordinary IPv6 address again, which no rule allows.
    write_atomic(&env.path("policy.yaml"), &web_policy("deny", "", ""));
    wait_for(
        Duration::from_secs(10),
        || agent.log().contains("policy installed"),
        || format!("no reload:\n{}", agent.log()),
    );
    let r = env.client("tcp", LISTED, WEB);
    assert_eq!(errno(&r), i64::from(libc::EPERM), "{r}\n{}", agent.log());
    let ev = agent.event_of(pid(&r), LISTED, WEB);
    assert_eq!(decided(&ev), (Some("deny"), None, Some("default"), None), "{ev}");
    assert_eq!(server.received().len(), 1);
    // And back.
    write_atomic(&env.path("policy.yaml"), &web_policy("deny", &listed, ""));
    wait_for(
        Duration::from_secs(10),
        || agent.log().matches("policy installed").count() >= 2,
        || format!("no reload:\n{}", agent.log()),
    );
    assert_eq!(errno(&env.client("tcp", LISTED, WEB)), 0);
}

#[test]
fn ipv4_compatible_and_6to4_addresses_are_ordinary_ipv6_destinations() {
    let mut env = env_with_forms("nat64-compat");
    let server = env.server("tcp", SIX_TO_FOUR, WEB);
    let agent = env.agent(&web_policy("deny", "", ""));
    for dst in [COMPAT, SIX_TO_FOUR] {
        let r = env.client("tcp", dst, WEB);
        assert_eq!(errno(&r), i64::from(libc::EPERM), "{dst}: {r}\n{}", agent.log());
        let ev = agent.wait_event(&format!("of {dst}"), |e| e["pid"] == pid(&r) && e["dport"] == WEB);
        assert_eq!(decided(&ev), (Some("deny"), None, Some("default"), None), "{dst}: {ev}");
        assert_eq!(ev["family"], "ipv6", "{ev}");
    }
    assert!(server.received().is_empty());
    // Under `default: allow` they are no vendor's: the hook lets them through, and the kernel
    // then does what it does with them (no route for ::/96 here; 2002::/16 is this loopback).
    let mut agent = agent;
    agent.stop();
    let agent = env.agent(&web_policy("allow", "", "      processes: [{exe: /nonexistent/web}]\n"));
    let r = env.client("tcp", COMPAT, WEB);
    assert_eq!(errno(&r), i64::from(libc::ENETUNREACH), "{r}\n{}", agent.log());
    let ev = agent.wait_event("of the IPv4-compatible address", |e| e["pid"] == pid(&r));
    assert_eq!(decided(&ev), (Some("allow"), None, Some("default"), None), "{ev}");
    let r = env.client("tcp", SIX_TO_FOUR, WEB);
    assert_eq!(errno(&r), 0, "{r}");
    assert_eq!(server.wait_received(1).len(), 1);
}

fn dns_server_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ea-dns-server"))
}

/// A DNS64 resolver answers AAAA with the vendor's IPv4 address under 64:ff9b::/96: the answer
/// is learnt as that IPv4 address, so the vendor is reachable through its NAT64 form, and the
/// IPv4 address itself is the vendor's too.
#[test]
fn a_dns64_answer_for_a_domain_vendor_is_learnt_as_its_ipv4_address() {
    let mut env = env_with_forms("nat64-dns64");
    env.dns(dns_server_bin(), 30);
    env.ip(&["-6", "route", "add", "local", "64:ff9b::/96", "dev", "lo"]);
    env.server("tcp", "::", 443);
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  dns: {{unlisted: deny}}\n  allow:\n    - {{name: resolver, cidr: {DNS4}/32, ports: [53], protocols: [udp, tcp]}}\n  vendors:\n    - name: fx\n      destinations: [{{domain: \"*.fx.test\"}}]\n      ports: [443]\n      protocols: [tcp]\n"
    )));
    let r = env.py_client("dns_client.py", &["rounds", "dns64-{}.fx.test", "3", "443", "6"]);
    assert_eq!((r["ok"].as_u64(), r["failed"].clone()), (Some(3), Value::Array(vec![])), "{r}\n{}", agent.log());
    let ev = agent.wait_event("a connect to a DNS64 address", |e| {
        e["kind"] == "connect" && e["pid"] == pid(&r) && e["dport"] == 443
    });
    let dst = ev["dst"].as_str().expect("dst").to_owned();
    assert!(dst.starts_with("64:ff9b::c612:"), "{ev}");
    let v4 = ev["nat64"].as_str().unwrap_or_else(|| panic!("not decided as IPv4: {ev}")).to_owned();
    assert_eq!(
        (ev["verdict"].as_str(), ev["vendor"].as_str(), ev["domain_rule"].as_str()),
        (Some("allow"), Some("fx"), Some("*.fx.test")),
        "{ev}"
    );
    // The embedded IPv4 address was learnt for the vendor too.
    let r = env.py_client("dns_client.py", &["connect", &v4, "443"]);
    assert_eq!(r["errno"], 0, "{v4}: {r}\n{}", agent.log());
}

/// `explain` decides a NAT64 form as its IPv4 address and names the prefix.
#[test]
fn explain_decides_a_nat64_form_as_its_ipv4_address() {
    let env = TestEnv::new("nat64-explain");
    let path = env.path("p.yaml");
    let listed = format!("  nat64Prefixes: [\"{LISTED_PREFIX}\"]\n");
    fs::write(&path, web_policy("allow", &listed, "      processes: [{exe: /nonexistent/web}]\n")).expect("write");
    let explain = |dst: &str| {
        let out = Command::new(egress_agent_tests::agent_bin())
            .args(["explain", "--policy"])
            .arg(&path)
            .arg("--exe")
            .arg(realpath_of("curl"))
            .args(["--dst", dst])
            .output()
            .expect("explain");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = explain(&format!("[{WK}]:{WEB}"));
    assert!(out.contains(&format!("{WK} is {ADDR4} (NAT64 prefix 64:ff9b::/96)")), "{out}");
    assert!(out.contains("deny: vendor/web reserves this destination"), "{out}");
    let out = explain(&format!("[{LISTED}]:{WEB}"));
    assert!(out.contains(&format!("{LISTED} is {ADDR4} (NAT64 prefix {LISTED_PREFIX}, listed at ")), "{out}");
    assert!(out.contains("deny: vendor/web reserves this destination"), "{out}");
    let out = explain(&format!("[{COMPAT}]:{WEB}"));
    assert!(out.starts_with("allow: no rule allows it"), "{out}");
    // `check` says which prefixes are decided as IPv4, and refuses a prefix it cannot read with
    // its place.
    let check =
        |path: &Path| Command::new(egress_agent_tests::agent_bin()).arg("check").arg(path).output().expect("check");
    let out = check(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&format!("  nat64: addresses under 64:ff9b::/96 (always) and {LISTED_PREFIX} decided as")),
        "{text}"
    );
    let bad = env.path("bad.yaml");
    fs::write(&bad, web_policy("allow", "  nat64Prefixes: [\"64:ff9b:1::/64\"]\n", "")).expect("write");
    let out = check(&bad);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text.contains("bad.yaml:7:19: error: spec.nat64Prefixes[0]: NAT64 prefix `64:ff9b:1::/64` is /64: only /96 prefixes are supported"),
        "{text}"
    );
}
