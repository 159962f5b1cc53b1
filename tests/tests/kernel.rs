//! Kernel tests: the real programs in the real kernel, attached to a child cgroup, driven by real
//! clients (curl, python3 sockets, nc) against real servers in a private network namespace.
//! Run with `cargo xtask test` (root, one test at a time).

use std::{process::Command, thread::sleep, time::Duration};

use egress_agent_tests::{policy, py, python_exe, realpath_of, TestEnv, ADDR4, ADDR4_OTHER, ADDR6};
use serde_json::Value;

const EPERM: u64 = 1;
/// Allowed for vendor `web` (tcp) and `feeds` (udp); the `*_DENIED` ports are allowed by nothing.
const TCP_OK: u16 = 8080;
const TCP_DENIED: u16 = 8081;
const UDP_OK: u16 = 9000;
const UDP_DENIED: u16 = 9001;

fn spec(mode: &str, default: &str) -> String {
    policy(&format!(
        "  mode: {mode}
  default: {default}
  allow:
    - {{name: infra-dns, cidr: {ADDR4_OTHER}, ports: [53], protocols: [udp]}}
  vendors:
    - name: web
      destinations: [{{cidr: {ADDR4}}}, {{cidr: \"{ADDR6}\"}}]
      ports: [{TCP_OK}]
      protocols: [tcp]
    - name: feeds
      destinations: [{{cidr: {ADDR4}}}, {{cidr: \"{ADDR6}\"}}]
      ports: [\"{UDP_OK}-{UDP_OK}\"]
      protocols: [udp]
"
    ))
}

fn pid(report: &Value) -> u64 {
    report["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {report}"))
}

fn assert_allowed(report: &Value) {
    assert_eq!(report["ok"], true, "expected the attempt to succeed: {report}");
}

fn assert_eperm(report: &Value) {
    assert_eq!(report["ok"], false, "expected EPERM: {report}");
    assert_eq!(report["errno"], EPERM, "expected EPERM: {report}");
}

fn assert_event(ev: &Value, verdict: &str, vendor: Option<&str>, rule: &str, proto: &str) {
    assert_eq!(ev["verdict"], verdict, "{ev}");
    assert_eq!(ev["vendor"], vendor.map_or(Value::Null, Value::from), "{ev}");
    assert_eq!(ev["rule"], rule, "{ev}");
    assert_eq!(ev["proto"], proto, "{ev}");
}

/// Gives a refused attempt time to have arrived, were it not refused, before asserting absence.
fn settle() {
    sleep(Duration::from_millis(300));
}

#[test]
fn tcp4_allowed_connection_is_attributed_to_its_process() {
    let mut env = TestEnv::new("tcp4-allow");
    let server = env.server("http", ADDR4, TCP_OK);
    let agent = env.agent(&spec("enforce", "deny"));
    let url = format!("http://{ADDR4}:{TCP_OK}/vendor");
    let child = env.in_cgroup("curl", &["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]).output().expect("curl");
    assert_eq!(String::from_utf8_lossy(&child.stdout), "200", "curl: {}", String::from_utf8_lossy(&child.stderr));
    assert_eq!(server.wait_received(1).len(), 1);
    let ev = agent.wait_event("of curl", |e| e["comm"] == "curl");
    assert_event(&ev, "allow", Some("web"), "vendor/web", "tcp");
    assert_eq!(ev["dst"], ADDR4);
    assert_eq!(ev["family"], "ipv4");
    assert_eq!(ev["dport"], TCP_OK);
    assert_eq!(ev["exe"], realpath_of("curl").display().to_string(), "{ev}");
    assert_eq!(ev["uid"], 0);
    assert_eq!(ev["hook"], "connect4");
    assert_eq!(ev["cgroup"], format!("/{}", env.netns), "{ev}");
    assert_eq!(ev["tid"], ev["pid"]);
    assert!(ev["cookie"].as_u64().is_some_and(|c| c > 0), "{ev}");
    assert!(ev["ts"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{ev}");
    // The pid is the client's own: the python client reports it.
    let report = env.client("tcp", ADDR4, TCP_OK);
    assert_allowed(&report);
    let ev = agent.event_of(pid(&report), ADDR4, TCP_OK);
    assert_eq!(ev["comm"], "python3");
    assert_eq!(ev["exe"], python_exe(), "{ev}");
    assert!(
        ev["cmdline"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| s.ends_with("client.py")))),
        "{ev}"
    );
}

#[test]
fn tcp4_denied_connection_fails_with_eperm_and_never_reaches_the_server() {
    let mut env = TestEnv::new("tcp4-deny");
    let server = env.server("tcp", ADDR4, TCP_DENIED);
    let agent = env.agent(&spec("enforce", "deny"));
    let report = env.client("tcp", ADDR4, TCP_DENIED);
    assert_eperm(&report);
    let ev = agent.event_of(pid(&report), ADDR4, TCP_DENIED);
    assert_event(&ev, "deny", None, "default", "tcp");
    // curl sees the same refusal: "Couldn't connect" (exit 7).
    let curl = env.in_cgroup("curl", &["-sS", &format!("http://{ADDR4}:{TCP_DENIED}/")]).output().expect("curl");
    assert_eq!(curl.status.code(), Some(7), "{}", String::from_utf8_lossy(&curl.stderr));
    settle();
    assert_eq!(server.received(), Vec::<String>::new());
}

#[test]
fn monitor_mode_lets_denied_egress_through_and_reports_alert() {
    let mut env = TestEnv::new("monitor");
    let server = env.server("tcp", ADDR4, TCP_DENIED);
    let agent = env.agent(&spec("monitor", "deny"));
    let report = env.client("tcp", ADDR4, TCP_DENIED);
    assert_allowed(&report);
    assert_eq!(server.wait_received(1).len(), 1);
    assert_event(&agent.event_of(pid(&report), ADDR4, TCP_DENIED), "alert", None, "default", "tcp");
    // Every path lets through and reports: unconnected UDP, connected UDP, IPv6.
    let udp = env.server("udp", ADDR4, UDP_DENIED);
    for mode in ["udp-sendto", "udp-connect"] {
        let report = env.client(mode, ADDR4, UDP_DENIED);
        assert_allowed(&report);
        assert_event(&agent.event_of(pid(&report), ADDR4, UDP_DENIED), "alert", None, "default", "udp");
    }
    assert_eq!(udp.wait_received(2).len(), 2);
    let v6 = env.server("tcp", ADDR6, TCP_DENIED);
    let report = env.client("tcp", ADDR6, TCP_DENIED);
    assert_allowed(&report);
    assert_event(&agent.event_of(pid(&report), ADDR6, TCP_DENIED), "alert", None, "default", "tcp");
    assert_eq!(v6.wait_received(1).len(), 1);
    // An allowed destination is still `allow` in monitor mode.
    env.server("tcp", ADDR4, TCP_OK);
    let report = env.client("tcp", ADDR4, TCP_OK);
    assert_event(&agent.event_of(pid(&report), ADDR4, TCP_OK), "allow", Some("web"), "vendor/web", "tcp");
}

#[test]
fn tcp6_allowed_and_denied() {
    let mut env = TestEnv::new("tcp6");
    let ok = env.server("tcp", ADDR6, TCP_OK);
    let denied = env.server("tcp", ADDR6, TCP_DENIED);
    let agent = env.agent(&spec("enforce", "deny"));
    let report = env.client("tcp", ADDR6, TCP_OK);
    assert_allowed(&report);
    let ev = agent.event_of(pid(&report), ADDR6, TCP_OK);
    assert_event(&ev, "allow", Some("web"), "vendor/web", "tcp");
    assert_eq!((ev["hook"].as_str(), ev["family"].as_str()), (Some("connect6"), Some("ipv6")));
    assert_eq!(ok.wait_received(1).len(), 1);
    let report = env.client("tcp", ADDR6, TCP_DENIED);
    assert_eperm(&report);
    assert_event(&agent.event_of(pid(&report), ADDR6, TCP_DENIED), "deny", None, "default", "tcp");
    settle();
    assert!(denied.received().is_empty());
}

#[test]
fn ipv4_mapped_ipv6_destinations_are_matched_as_ipv4() {
    let mut env = TestEnv::new("mapped");
    let ok = env.server("tcp", ADDR4, TCP_OK);
    let denied = env.server("tcp", ADDR4, TCP_DENIED);
    let udp_denied = env.server("udp", ADDR4, UDP_DENIED);
    let udp_ok = env.server("udp", ADDR4, UDP_OK);
    let agent = env.agent(&spec("enforce", "deny"));
    let mapped = format!("::ffff:{ADDR4}");
    let report = env.client("tcp", &mapped, TCP_OK);
    assert_allowed(&report);
    let ev = agent.event_of(pid(&report), ADDR4, TCP_OK);
    assert_event(&ev, "allow", Some("web"), "vendor/web", "tcp");
    assert_eq!(ev["v4_mapped"], true, "{ev}");
    assert_eq!(ev["hook"], "connect6");
    assert_eq!(ok.wait_received(1).len(), 1);
    let report = env.client("tcp", &mapped, TCP_DENIED);
    assert_eperm(&report);
    assert_event(&agent.event_of(pid(&report), ADDR4, TCP_DENIED), "deny", None, "default", "tcp");
    // Connected UDP to a mapped address: unmapped by connect6.
    let report = env.client("udp-connect", &mapped, UDP_OK);
    assert_allowed(&report);
    let ev = agent.event_of(pid(&report), ADDR4, UDP_OK);
    assert_event(&ev, "allow", Some("feeds"), "vendor/feeds", "udp");
    assert_eq!((ev["hook"].as_str(), ev["v4_mapped"].as_bool()), (Some("connect6"), Some(true)), "{ev}");
    let report = env.client("udp-connect", &mapped, UDP_DENIED);
    assert_eperm(&report);
    assert_event(&agent.event_of(pid(&report), ADDR4, UDP_DENIED), "deny", None, "default", "udp");
    assert_eq!(udp_ok.wait_received(1).len(), 1);
    // Unconnected UDP on an IPv6 socket to a mapped address: the kernel takes the IPv4 path.
    let report = env.client("udp-sendto", &mapped, UDP_OK);
    assert_allowed(&report);
    assert_event(&agent.event_of(pid(&report), ADDR4, UDP_OK), "allow", Some("feeds"), "vendor/feeds", "udp");
    assert_eq!(udp_ok.wait_received(2).len(), 2);
    let report = env.client("udp-sendto", &mapped, UDP_DENIED);
    assert_eperm(&report);
    assert_event(&agent.event_of(pid(&report), ADDR4, UDP_DENIED), "deny", None, "default", "udp");
    settle();
    assert!(denied.received().is_empty());
    assert!(udp_denied.received().is_empty());
}

/// Connected UDP is checked at connect(); unconnected UDP at every sendto().
#[test]
fn udp_connected_and_unconnected_both_families() {
    let mut env = TestEnv::new("udp");
    let mut servers = Vec::new();
    for addr in [ADDR4, ADDR6] {
        servers.push((addr, env.server("udp", addr, UDP_OK), env.server("udp", addr, UDP_DENIED)));
    }
    let agent = env.agent(&spec("enforce", "deny"));
    for (addr, ok, denied) in &servers {
        let v6 = addr.contains(':');
        for (mode, hook) in [
            ("udp-connect", if v6 { "connect6" } else { "connect4" }),
            ("udp-sendto", if v6 { "sendmsg6" } else { "sendmsg4" }),
        ] {
            let before = ok.received().len();
            let report = env.client(mode, addr, UDP_OK);
            assert_allowed(&report);
            let ev = agent.event_of(pid(&report), addr, UDP_OK);
            assert_event(&ev, "allow", Some("feeds"), "vendor/feeds", "udp");
            assert_eq!(ev["hook"], hook, "{mode} {addr}: {ev}");
            assert_eq!(ok.wait_received(before + 1).len(), before + 1);
            let report = env.client(mode, addr, UDP_DENIED);
            assert_eperm(&report);
            let ev = agent.event_of(pid(&report), addr, UDP_DENIED);
            assert_event(&ev, "deny", None, "default", "udp");
            assert_eq!(ev["hook"], hook);
        }
        // A TCP rule does not open the port to UDP, nor the other way round.
        let report = env.client("udp-sendto", addr, TCP_OK);
        assert_eperm(&report);
        settle();
        assert!(denied.received().is_empty(), "{addr}: {:?}", denied.received());
    }
    // nc: an ordinary tool sees the refusal too.
    let nc =
        env.in_cgroup("sh", &["-c", &format!("echo hi | nc -v -u -w1 {ADDR4} {UDP_DENIED}")]).output().expect("nc");
    assert_eq!(nc.status.code(), Some(1), "nc should be refused: {nc:?}");
    assert!(String::from_utf8_lossy(&nc.stderr).contains("Operation not permitted"), "nc should be refused: {nc:?}");
    settle();
    assert!(servers[0].2.received().is_empty());
}

#[test]
fn tcp_fast_open_is_checked_like_connect() {
    let mut env = TestEnv::new("tfo");
    // Client and server Fast Open, without cookies, so the data rides in the SYN.
    env.sysctl("net.ipv4.tcp_fastopen", "0x603");
    let ok = env.server("tcp", ADDR4, TCP_OK);
    let denied = env.server("tcp", ADDR4, TCP_DENIED);
    let agent = env.agent(&spec("enforce", "deny"));
    let report = env.client("tfo", ADDR4, TCP_OK);
    assert_allowed(&report);
    assert_event(&agent.event_of(pid(&report), ADDR4, TCP_OK), "allow", Some("web"), "vendor/web", "tcp");
    let got = ok.wait_received(1);
    assert!(got[0].ends_with("hello"), "{got:?}");
    let report = env.client("tfo", ADDR4, TCP_DENIED);
    assert_eperm(&report);
    assert_event(&agent.event_of(pid(&report), ADDR4, TCP_DENIED), "deny", None, "default", "tcp");
    // IPv6 (the sysctl above is shared by both families).
    let ok6 = env.server("tcp", ADDR6, TCP_OK);
    let denied6 = env.server("tcp", ADDR6, TCP_DENIED);
    let report = env.client("tfo", ADDR6, TCP_OK);
    assert_allowed(&report);
    assert_event(&agent.event_of(pid(&report), ADDR6, TCP_OK), "allow", Some("web"), "vendor/web", "tcp");
    assert!(ok6.wait_received(1)[0].ends_with("hello"));
    let report = env.client("tfo", ADDR6, TCP_DENIED);
    assert_eperm(&report);
    assert_event(&agent.event_of(pid(&report), ADDR6, TCP_DENIED), "deny", None, "default", "tcp");
    settle();
    assert!(denied.received().is_empty());
    assert!(denied6.received().is_empty());
}

#[test]
fn children_after_fork_and_exec_are_covered_and_attributed() {
    let mut env = TestEnv::new("children");
    let denied = env.server("tcp", ADDR4, TCP_DENIED);
    let ok = env.server("tcp", ADDR4, TCP_OK);
    let agent = env.agent(&spec("enforce", "deny"));
    // fork, allowed destination: the child connects and is named as itself.
    let report = env.client("fork-tcp", ADDR4, TCP_OK);
    assert_allowed(&report);
    let ev = agent.event_of(pid(&report), ADDR4, TCP_OK);
    assert_event(&ev, "allow", Some("web"), "vendor/web", "tcp");
    assert_eq!(ok.wait_received(1).len(), 1);
    // exec from a shell, allowed destination.
    let sh = env.in_cgroup("sh", &["-c", &format!("nc -z -w2 {ADDR4} {TCP_OK}; echo nc=$?")]).output().expect("sh");
    assert!(String::from_utf8_lossy(&sh.stdout).contains("nc=0"), "{sh:?}");
    let ev = agent.wait_event("of nc under sh", |e| e["comm"] == "nc");
    assert_event(&ev, "allow", Some("web"), "vendor/web", "tcp");
    // fork: the child makes the attempt and is named as itself.
    let report = env.client("fork-tcp", ADDR4, TCP_DENIED);
    assert_eperm(&report);
    assert_ne!(report["pid"], report["parent_pid"]);
    let ev = agent.event_of(pid(&report), ADDR4, TCP_DENIED);
    assert_event(&ev, "deny", None, "default", "tcp");
    // exec from a shell (not its last command, so the shell forks): curl is refused and named.
    let sh = env
        .in_cgroup("sh", &["-c", &format!("curl -sS http://{ADDR4}:{TCP_DENIED}/; echo curl=$?")])
        .output()
        .expect("sh");
    assert!(String::from_utf8_lossy(&sh.stdout).contains("curl=7"), "{sh:?}");
    let ev = agent.wait_event("of curl under sh", |e| e["comm"] == "curl");
    assert_event(&ev, "deny", None, "default", "tcp");
    assert_eq!(ev["exe"], realpath_of("curl").display().to_string());
    settle();
    assert!(denied.received().is_empty());
}

#[test]
fn processes_outside_the_watched_cgroup_are_untouched() {
    let mut env = TestEnv::new("outside");
    let server = env.server("tcp", ADDR4, TCP_DENIED);
    let agent = env.agent(&spec("enforce", "deny"));
    let report = env.client_outside("tcp", ADDR4, TCP_DENIED);
    assert_allowed(&report);
    assert_eq!(server.wait_received(1).len(), 1);
    // And the same attempt from inside is refused: the difference is the cgroup alone.
    assert_eperm(&env.client("tcp", ADDR4, TCP_DENIED));
    settle();
    assert!(agent.events().iter().all(|e| e["pid"] != report["pid"]), "{:?}", agent.events());
}

#[test]
fn default_alert_and_default_allow_in_enforce_mode() {
    for (default, verdict) in [("alert", "alert"), ("allow", "allow")] {
        let mut env = TestEnv::new(&format!("default-{default}"));
        let server = env.server("tcp", ADDR4, TCP_DENIED);
        let agent = env.agent(&spec("enforce", default));
        let report = env.client("tcp", ADDR4, TCP_DENIED);
        assert_allowed(&report);
        assert_eq!(server.wait_received(1).len(), 1);
        assert_event(&agent.event_of(pid(&report), ADDR4, TCP_DENIED), verdict, None, "default", "tcp");
    }
}

#[test]
fn infrastructure_rules_allow_without_a_vendor() {
    let mut env = TestEnv::new("infra");
    let dns = env.server("udp", ADDR4_OTHER, 53);
    let agent = env.agent(&spec("enforce", "deny"));
    let report = env.client("udp-sendto", ADDR4_OTHER, 53);
    assert_allowed(&report);
    assert_event(&agent.event_of(pid(&report), ADDR4_OTHER, 53), "allow", None, "allow/infra-dns", "udp");
    assert_eq!(dns.wait_received(1).len(), 1);
    // Same address, other port: refused.
    assert_eperm(&env.client("udp-sendto", ADDR4_OTHER, 54));
}

#[test]
fn a_process_that_exits_at_once_still_yields_its_event() {
    let env = TestEnv::new("exited");
    let agent = env.agent(&spec("enforce", "deny"));
    let out = env
        .in_cgroup("python3", &[&py("client.py"), "tcp", ADDR4, &TCP_DENIED.to_string(), "0"])
        .output()
        .expect("client");
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eperm(&report);
    let ev = agent.event_of(pid(&report), ADDR4, TCP_DENIED);
    assert_event(&ev, "deny", None, "default", "tcp");
    assert_eq!(ev["comm"], "python3");
    // Named from its exec record, though /proc no longer has it.
    assert_eq!(ev["exe"], python_exe(), "{ev}");
}

#[test]
fn stopping_the_agent_detaches_the_programs() {
    let mut env = TestEnv::new("detach");
    let server = env.server("tcp", ADDR4, TCP_DENIED);
    let mut agent = env.agent(&spec("enforce", "deny"));
    assert_eperm(&env.client("tcp", ADDR4, TCP_DENIED));
    let status = agent.stop();
    assert!(status.success(), "agent exit {status}:\n{}", agent.log());
    assert!(agent.log().contains("detached"), "{}", agent.log());
    assert_allowed(&env.client("tcp", ADDR4, TCP_DENIED));
    assert_eq!(server.wait_received(1).len(), 1);
}

/// The value of a sample in a Prometheus text exposition, 0 if absent.
fn sample(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn metrics_count_connections_by_vendor_and_verdict() {
    let mut env = TestEnv::new("metrics");
    let _server = env.server("tcp", ADDR4, TCP_OK);
    let agent = env.agent_with(&spec("enforce", "deny"), &["--metrics", "127.0.0.1:19464"]);
    let scrape = || {
        let out = Command::new("curl").args(["-sf", "http://127.0.0.1:19464/metrics"]).output().expect("curl");
        assert!(out.status.success(), "scrape failed: {out:?}\n{}", agent.log());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let allow = r#"egress_connections_total{proto="tcp",vendor="web",verdict="allow"}"#;
    let deny = r#"egress_connections_total{proto="tcp",vendor="none",verdict="deny"}"#;
    let before = scrape();
    assert_eq!(sample(&before, "egress_policy_generation"), 1, "{before}");
    assert_allowed(&env.client("tcp", ADDR4, TCP_OK));
    assert_eperm(&env.client("tcp", ADDR4, TCP_DENIED));
    assert_eperm(&env.client("tcp", ADDR4, TCP_DENIED));
    egress_agent_tests::wait_for(
        Duration::from_secs(5),
        || {
            let now = scrape();
            sample(&now, allow) == sample(&before, allow) + 1 && sample(&now, deny) == sample(&before, deny) + 2
        },
        || format!("the counters did not move:\n{}", scrape()),
    );
    // A flow's bytes, once it ended.
    egress_agent_tests::wait_for(
        Duration::from_secs(6),
        || sample(&scrape(), r#"egress_flow_bytes_total{direction="out",vendor="web"}"#) >= 5,
        || format!("no flow bytes:\n{}", scrape()),
    );
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:19464/"])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn a_rotated_events_file_is_reopened_and_loses_no_line() {
    let env = TestEnv::new("rotate");
    let agent = env.agent_with(&spec("enforce", "deny"), &["--events-per-key", "0"]);
    let spray = || {
        let r = env.py_client("bulk.py", &["spray", ADDR4, &UDP_DENIED.to_string(), "30", "10"]);
        assert_eq!(r["refused"], 30, "{r}");
        r["pid"].as_u64().expect("pid")
    };
    let count = |path: &std::path::Path, pid: u64| -> usize {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        assert!(text.is_empty() || text.ends_with('\n'), "a line was split: {text:?}");
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a whole line ({e}): {l}")))
            .filter(|e| e["pid"] == pid && e["kind"] == "connect")
            .count()
    };
    let first = spray();
    egress_agent_tests::wait_for(Duration::from_secs(5), || count(&agent.events, first) == 30, || "first batch".into());
    // logrotate's default: rename, and the writer creates a new file.
    let rotated = env.path("events.rotated");
    std::fs::rename(&agent.events, &rotated).expect("rename");
    let second = spray();
    egress_agent_tests::wait_for(
        Duration::from_secs(5),
        || count(&agent.events, second) == 30,
        || format!("the new file has {} of 30 records", count(&agent.events, second)),
    );
    assert_eq!(count(&rotated, first), 30, "the first batch stays whole in the rotated file");
    assert_eq!(count(&rotated, second) + count(&agent.events, second), 30, "no record lost or duplicated");
}

#[test]
fn text_format_is_one_readable_line_per_event() {
    let env = TestEnv::new("textfmt");
    let agent = env.agent_with(&spec("enforce", "deny"), &["--format", "text"]);
    let report = env.client("tcp", ADDR4, TCP_DENIED);
    assert_eperm(&report);
    let want = format!("connect python3[{}]", pid(&report));
    egress_agent_tests::wait_for(
        Duration::from_secs(5),
        || std::fs::read_to_string(&agent.events).unwrap_or_default().lines().any(|l| l.contains(&want)),
        || format!("no text line for the attempt:\n{}", std::fs::read_to_string(&agent.events).unwrap_or_default()),
    );
    let text = std::fs::read_to_string(&agent.events).expect("events");
    let line = text.lines().find(|l| l.contains(&want)).expect("line");
    assert!(
        line.contains("DENY")
            && line.contains(&format!("-> {ADDR4}:{TCP_DENIED} tcp"))
            && line.contains("rule=default"),
        "{line}"
    );
}

#[test]
fn the_configuration_file_is_read_flags_override_it_and_a_bad_one_is_refused() {
    let env = TestEnv::new("config");
    let state = env.path("state");
    std::fs::create_dir_all(&state).expect("state");
    let other = env.path("other.yaml");
    std::fs::write(&other, policy("  mode: monitor\n").replace("name: test", "name: from-config")).expect("write");
    let cfg = env.path("agent.yaml");
    std::fs::write(&cfg, format!("policy: [{}]\nstate: {}\neventsPerKey: 0\n", other.display(), state.display()))
        .expect("write");
    // `check --config` validates the file and the policy it names.
    let out =
        Command::new(egress_agent_tests::agent_bin()).args(["check", "--config"]).arg(&cfg).output().expect("check");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("policy `from-config`: ok"), "{out:?}");
    // Run with it and a --policy flag: the flag's policy decides, the file's state is used.
    let cfg_arg = cfg.display().to_string();
    let agent = env.agent_with(&spec("enforce", "deny"), &["--config", &cfg_arg]);
    let report = env.client("tcp", ADDR4, TCP_DENIED);
    assert_eperm(&report);
    let ev = agent.event_of(pid(&report), ADDR4, TCP_DENIED);
    assert_eq!(ev["policy"], "test", "{ev}");
    assert!(state.join("audit.jsonl").is_file(), "the configured state directory is used");
    drop(agent);
    // A bad key is refused with its place, before anything is attached.
    std::fs::write(&cfg, "state: /tmp\nmetricz: 1\n").expect("write");
    let out = Command::new(egress_agent_tests::agent_bin())
        .args(["run", "--cgroup"])
        .arg(&env.cgroup)
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:1", cfg.display())) && err.contains("unknown field `metricz`"), "{err}");
}

#[test]
fn a_bad_policy_is_refused_at_start_with_its_place() {
    let mut env = TestEnv::new("badpolicy");
    let server = env.server("tcp", ADDR4, TCP_DENIED);
    let path = env.path("bad.yaml");
    std::fs::write(&path, policy("  mode: enforce\n  allow:\n    - {cidr: 10.0.0.1/8}\n")).expect("write");
    let out = Command::new(egress_agent_tests::agent_bin())
        .args(["run", "--policy"])
        .arg(&path)
        .arg("--cgroup")
        .arg(&env.cgroup)
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:7:", path.display())) && err.contains("spec.allow[0].cidr"), "{err}");
    // Nothing was attached: egress from the cgroup is not refused.
    assert_allowed(&env.client("tcp", ADDR4, TCP_DENIED));
    assert_eq!(server.wait_received(1).len(), 1);
}

#[test]
fn check_accepts_every_example_policy_and_names_the_place_of_an_error() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").join("policies");
    let files: Vec<_> = std::fs::read_dir(&root)
        .expect("policies/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    // Each example is a policy of its own (several paths given together merge into one).
    for f in &files {
        let out = Command::new(egress_agent_tests::agent_bin()).arg("check").arg(f).output().expect("check");
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("`: ok; mode"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let env = TestEnv::new("check");
    let bad = env.path("bad.yaml");
    std::fs::write(
        &bad,
        policy("  vendors:\n    - name: x\n      destinations: [{cidr: 1.2.3.4}]\n      ports: [70000]\n"),
    )
    .expect("write");
    let out = Command::new(egress_agent_tests::agent_bin()).arg("check").arg(&bad).output().expect("check");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:8:", bad.display())) && err.contains("error: spec.vendors[0].ports[0]"), "{err}");
    let v = Command::new(egress_agent_tests::agent_bin()).arg("--version").output().expect("version");
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("egress-agent "), "{v:?}");
}

/// In monitor mode a ping socket's connect with no `icmp` rule is decided by `default` and
/// reported, and UDP-Lite is matched as UDP; both sockets are decidable (tests/tests/dgram.rs),
/// so neither is reported at creation.
#[test]
fn ping_and_udplite_are_decided_by_rules_in_monitor_mode_not_reported_at_creation() {
    let env = TestEnv::new("protocols");
    // Let root open unprivileged ICMP sockets in this namespace.
    env.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    let agent = env.agent(&spec("monitor", "deny"));
    let script = format!(
        "import json, os, socket\n\
         r = {{'pid': os.getpid()}}\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)\n\
         try:\n    s.connect(('{ADDR4}', 0)); r['icmp'] = 0\n\
         except OSError as e:\n    r['icmp'] = e.errno\n\
         for port in ({UDP_OK}, {UDP_DENIED}):\n\
         \x20   u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)\n\
         \x20   try:\n        u.sendto(b'x', ('{ADDR4}', port)); r[str(port)] = 0\n\
         \x20   except OSError as e:\n        r[str(port)] = e.errno\n\
         print(json.dumps(r))\n"
    );
    let out = env.in_cgroup("python3", &["-c", &script]).output().expect("python");
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(
        (r["icmp"].as_i64(), r[UDP_OK.to_string()].as_i64(), r[UDP_DENIED.to_string()].as_i64()),
        (Some(0), Some(0), Some(0)),
        "monitor mode refuses nothing: {r}"
    );
    let ev = agent.wait_event("of the ping socket's connect", |e| e["proto"] == "icmp" && e["reason"] != "socket");
    assert_eq!(
        (ev["verdict"].as_str(), ev["rule"].as_str(), ev["pid"].as_u64(), ev["dport"].as_u64()),
        (Some("alert"), Some("default"), r["pid"].as_u64(), Some(0)),
        "{ev}"
    );
    let ev = agent.event_of(pid(&r), ADDR4, UDP_OK);
    assert_event(&ev, "allow", Some("feeds"), "vendor/feeds", "udp");
    let ev = agent.event_of(pid(&r), ADDR4, UDP_DENIED);
    assert_eq!(ev["verdict"], "alert", "{ev}");
    let at_creation: Vec<Value> = agent.events().into_iter().filter(|e| e["reason"] == "socket").collect();
    assert!(at_creation.is_empty(), "decidable sockets reported at creation: {at_creation:?}");
}

/// With a ring buffer too small for a burst and the agent not reading, the kernel counts every
/// event it cannot deliver: delivered + counted accounts for every attempt.
#[test]
fn events_the_ring_cannot_hold_are_counted_never_silently_lost() {
    let env = TestEnv::new("drops");
    let policy_path = env.path("policy.yaml");
    std::fs::write(&policy_path, spec("enforce", "deny")).expect("write");
    let mut agent = egress_agent_tests::Agent::start(
        &egress_agent_tests::agent_bin(),
        &policy_path,
        &env.cgroup,
        &env.dir,
        &["--ring-bytes", "4096"],
    );
    let attempts = 300;
    // The client starts (its execs are reported and read) before the agent stops reading.
    let script = format!(
        "import os, socket, sys\nprint(os.getpid(), flush=True)\nsys.stdin.readline()\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range({attempts}):\n    try:\n        s.sendto(b'x', ('{ADDR4}', {UDP_DENIED}))\n    except OSError:\n        pass\nprint('done', flush=True)\n"
    );
    let held = egress_agent_tests::Held::start(&env, "python3", &script);
    let client = held.pid;
    settle();
    agent.signal(libc::SIGSTOP);
    assert_eq!(held.go(), "done");
    agent.signal(libc::SIGCONT);
    settle();
    let status = agent.stop();
    assert!(status.success(), "{}", agent.log());
    let log = agent.log();
    assert!(log.contains("kernel dropped events"), "{log}");
    let dropped: usize = log
        .lines()
        .find(|l| l.contains("detached"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("events_dropped=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop total in:\n{log}"));
    // Records folded by the per-key rate limit stand for `suppressed` attempts each.
    let delivered: usize = agent
        .events()
        .iter()
        .filter(|e| e["pid"] == client && e["kind"] == "connect")
        .map(|e| e["suppressed"].as_u64().expect("suppressed").max(1) as usize)
        .sum();
    assert!(dropped > 0 && delivered < attempts, "delivered {delivered}, dropped {dropped}");
    // Every attempt is an event or a count, exactly: nothing else ran in the cgroup meanwhile.
    assert_eq!(delivered + dropped, attempts, "delivered {delivered}, dropped {dropped}");
}
