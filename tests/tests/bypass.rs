//! Kernel tests of the paths around the hooks an unprivileged process in the watched cgroup
//! might try (issue "Harden it"): each drives a real client against the real programs, in
//! `mode: enforce` with `default: deny`, and checks on the wire (a packet capture in the test's
//! namespace) that nothing left for a destination the policy does not allow.

use std::{process::Command, time::Duration};

use egress_agent_tests::{policy, py, wait_for, TestEnv, ADDR4, ADDR4_OTHER, ADDR6, ADDR6_OTHER};
use serde_json::Value;

const PORT: u16 = 9000;

/// ADDR4 and ADDR6 on PORT are allowed (UDP and TCP); nothing else is.
fn allowed_only(mode: &str) -> String {
    policy(&format!(
        "  mode: {mode}\n  default: deny\n  allow:\n    - {{name: ok4, cidr: {ADDR4}/32, ports: [{PORT}], protocols: [udp, tcp]}}\n    - {{name: ok6, cidr: {ADDR6}/128, ports: [{PORT}], protocols: [udp, tcp]}}\n"
    ))
}

/// A capture of the packets to `addr` on the namespace's loopback while `run` runs; returns
/// what `run` returned and how many packets went to `addr`.
fn captured<T>(env: &TestEnv, addr: &str, run: impl FnOnce() -> T) -> (T, u64) {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = env.path(&format!("sniff-{n}.log"));
    let mut sniffer = Command::new("ip")
        .args(["netns", "exec", &env.netns, "python3", &py("sniff.py"), addr, "3"])
        .arg(&log)
        .spawn()
        .expect("sniff.py");
    wait_for(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready")),
        || "the capture did not start".into(),
    );
    let out = run();
    sniffer.wait().expect("sniff.py");
    let text = std::fs::read_to_string(&log).expect("sniff log");
    let last: Value = serde_json::from_str(text.lines().last().expect("count")).expect("count JSON");
    (out, last["count"].as_u64().expect("count"))
}

/// Runs tests/py/sroute_client.py in the watched cgroup, as uid 65534 (no capabilities) unless
/// `root` (IP_OPTIONS needs CAP_NET_RAW).
fn sroute(env: &TestEnv, mode: &str, addr: &str, hop: &str, root: bool) -> Value {
    let script = py("sroute_client.py");
    let port = PORT.to_string();
    let mut args = vec![];
    if !root {
        args.extend(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]);
    }
    // The system's interpreter: a user without a home cannot run the one under /root.
    args.extend(["/usr/bin/python3", &script, mode, addr, &port, hop]);
    let out = env.in_cgroup(args[0], &args[1..]).output().expect("sroute_client.py");
    assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{mode}: {out:?}: {e}"))
}

/// The report of a source-routed packet of process `pid`.
fn source_route_event(agent: &egress_agent_tests::Agent, pid: &Value) -> Value {
    agent.wait_event("a source-route report", |e| e["kind"] == "connect" && e["pid"] == *pid && e["reason"] == "source_route")
}

/// An IPv6 routing header (no capability needed, as a socket option or ancillary data) or an
/// IPv4 source-route option takes packets to a hop the connect hooks never decided: in enforce
/// mode nothing leaves for the hop, and the report names it.
#[test]
fn source_routed_packets_never_reach_a_denied_hop_in_enforce_mode() {
    let mut env = TestEnv::new("sroute");
    let _s6 = env.server("udp", ADDR6, PORT);
    let _t6 = env.server("tcp", ADDR6, PORT);
    let _s4 = env.server("udp", ADDR4, PORT);
    let agent = env.agent(&allowed_only("enforce"));
    // The allowed destination itself is reachable.
    assert_eq!(env.client("udp-connect", ADDR6, PORT)["ok"], true, "{}", agent.log());

    for mode in ["rthdr-udp", "rthdr-tcp", "rthdr-cmsg"] {
        let (r, hop_packets) = captured(&env, ADDR6_OTHER, || sroute(&env, mode, ADDR6, ADDR6_OTHER, false));
        assert_eq!(hop_packets, 0, "{mode}: packets left for the denied hop ({r})\n{}", agent.log());
        // Ancillary data takes only a type 2 header, and only on kernels built with Mobile IPv6
        // (this one is not: EINVAL before any packet); where it is taken, its packets are seen
        // like the others.
        if mode == "rthdr-cmsg" && r["errno"] == libc::EINVAL {
            continue;
        }
        let ev = source_route_event(&agent, &r["pid"]);
        assert_eq!(
            (ev["verdict"].as_str(), ev["dst"].as_str(), ev["hook"].as_str(), ev["source_route"].as_bool()),
            (Some("deny"), Some(ADDR6_OTHER), Some("egress6"), Some(true)),
            "{mode}: {ev}"
        );
        assert_eq!(ev["uid"], 65534, "{mode}: the sender is named: {ev}");
    }
    let (r, hop_packets) = captured(&env, ADDR4_OTHER, || sroute(&env, "lsrr-udp", ADDR4, ADDR4_OTHER, true));
    assert_eq!(hop_packets, 0, "lsrr: packets left for the denied hop ({r})");
    let ev = source_route_event(&agent, &r["pid"]);
    assert_eq!((ev["verdict"].as_str(), ev["dst"].as_str()), (Some("deny"), Some(ADDR4_OTHER)), "{ev}");
}

/// Monitor mode refuses nothing: the source-routed packet leaves, and is reported as an alert.
#[test]
fn source_routed_packets_are_reported_in_monitor_mode() {
    let mut env = TestEnv::new("sroute-mon");
    let _s6 = env.server("udp", ADDR6, PORT);
    let agent = env.agent(&allowed_only("monitor"));
    let (r, hop_packets) = captured(&env, ADDR6_OTHER, || sroute(&env, "rthdr-udp", ADDR6, ADDR6_OTHER, false));
    assert!(hop_packets > 0, "monitor mode let it through ({r})");
    let ev = source_route_event(&agent, &r["pid"]);
    assert_eq!((ev["verdict"].as_str(), ev["dst"].as_str()), (Some("alert"), Some(ADDR6_OTHER)), "{ev}");
}

/// Every (family, type, protocol) a process without capabilities can ask for, as uid 65534 in
/// the watched cgroup with ping sockets open to every group (as systemd sets it): through each
/// socket it gets, a marker goes to a denied address (connect then send, and sendto). In
/// enforce mode nothing reaches the denied addresses on the wire, and the only sockets created
/// are the ones the connect and sendmsg hooks decide (TCP, MPTCP, UDP); the others (UDP-Lite,
/// ICMP ping, and whatever else this kernel has) are refused at creation, and reported.
#[test]
fn every_socket_an_unprivileged_process_can_create_is_decided_or_refused() {
    let env = TestEnv::new("sockets");
    env.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    let agent = env.agent(&allowed_only("enforce"));
    let run = || {
        let script = py("sockets.py");
        let port = PORT.to_string();
        let args = ["--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3", &script, ADDR4_OTHER, ADDR6_OTHER, &port];
        let out = env.in_cgroup("setpriv", &args).output().expect("sockets.py");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("sockets.py output")
    };
    let ((tried, v6_packets), v4_packets) = captured(&env, ADDR4_OTHER, || captured(&env, ADDR6_OTHER, run));
    let created: Vec<&Value> = tried.iter().filter(|t| t["errno"] == 0).collect();
    let sent: Vec<&Value> = created.iter().copied().filter(|t| !t["sent"].is_null()).collect();
    assert_eq!((v4_packets, v6_packets), (0, 0), "markers reached a denied address; sent through {sent:?}");
    for t in &created {
        let (ty, proto) = (t["type"].as_u64(), t["proto"].as_u64());
        let decided = matches!((ty, proto), (Some(1), Some(0 | 6 | 262)) | (Some(2), Some(0 | 17)));
        assert!(decided, "a socket no hook decides was created: {t}");
    }
    let refused: Vec<&Value> = tried.iter().filter(|t| t["errno"] == libc::EPERM).collect();
    for (ty, proto, what) in [(2, 136, "UDP-Lite"), (2, 1, "ICMP ping")] {
        assert!(
            refused.iter().any(|t| t["type"] == ty && t["proto"] == proto && t["family"] == libc::AF_INET),
            "{what} sockets were not refused: {tried:?}"
        );
    }
    let ev = agent.wait_event("a refused UDP-Lite socket", |e| e["reason"] == "socket" && e["proto"] == "udplite");
    assert_eq!(
        (ev["verdict"].as_str(), ev["socket_type"].as_str(), ev["hook"].as_str(), ev["uid"].as_u64()),
        (Some("deny"), Some("dgram"), Some("sock_create"), Some(65534)),
        "{ev}"
    );
}

/// Monitor mode refuses no socket: a UDP-Lite socket is created, and reported as an alert.
#[test]
fn undecidable_sockets_are_reported_in_monitor_mode() {
    let env = TestEnv::new("sockets-mon");
    let agent = env.agent(&allowed_only("monitor"));
    let out = env
        .in_cgroup("python3", &["-c", "import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, 136); print('created')"])
        .output()
        .expect("python3");
    assert!(String::from_utf8_lossy(&out.stdout).contains("created"), "{out:?}");
    let ev = agent.wait_event("a reported UDP-Lite socket", |e| e["reason"] == "socket");
    assert_eq!((ev["verdict"].as_str(), ev["proto"].as_str(), ev["family"].as_str()), (Some("alert"), Some("udplite"), Some("ipv6")), "{ev}");
}

/// Builds tests/c/masq.c (a library, so that its code keeps running once the executable is
/// unmapped) and its executable into the test's directory; returns the executable's path.
fn build_masq(env: &TestEnv) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("c");
    let out = env.path("masq");
    let lib = env.path("libmasq.so");
    // Bound at load (-z now): lazy binding would read the unmapped executable's symbols.
    egress_agent_tests::sh(Command::new("gcc").args(["-O1", "-shared", "-fPIC", "-Wl,-z,now", "-o"]).arg(&lib).arg(src.join("masq.c")));
    egress_agent_tests::sh(
        Command::new("gcc")
            .args(["-O1", "-Wl,-z,now", "-o"])
            .arg(&out)
            .arg(src.join("masq_main.c"))
            .arg(&lib)
            .arg("-Wl,-rpath,$ORIGIN"),
    );
    out.display().to_string()
}

/// The executable masquerade: in a user namespace of its own, a process unmaps its executable
/// and points its exe_file at an allowed binary with prctl(PR_SET_MM_MAP); /proc/PID/exe then
/// names that binary. The vendor reserved to it stays refused, to the process and to a child
/// it forks, and the report names both the file executed and the one it claims.
#[test]
fn a_process_that_points_its_executable_elsewhere_is_still_what_it_executed() {
    const WEB: u16 = 8080;
    let mut env = TestEnv::new("masq");
    env.server("tcp", ADDR4, WEB);
    let masq = build_masq(&env);
    let curl = egress_agent_tests::realpath_of("curl").display().to_string();
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      processes: [{{exe: {curl}}}]\n"
    )));
    let run = |mode: &str| -> Value {
        let port = WEB.to_string();
        let args = ["--reuid", "65534", "--regid", "65534", "--clear-groups", &masq, &curl, ADDR4, &port, mode];
        let out = env.in_cgroup("setpriv", &args).output().expect("masq");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("masq {mode}: {text:?} {out:?}: {e}"))
    };
    let plain = run("plain");
    assert_eq!(plain["ok"], false, "not curl: {plain}");
    for mode in ["masquerade", "fork"] {
        let r = run(mode);
        assert_eq!(r["masqueraded"], true, "{mode}: {r}");
        assert_eq!((r["ok"].as_bool(), r["errno"].as_i64()), (Some(false), Some(i64::from(libc::EPERM))), "{mode}: the masquerade reached curl's vendor: {r}\n{}", agent.log());
        let ev = agent.event_of(r["pid"].as_u64().expect("pid"), ADDR4, WEB);
        assert_eq!((ev["verdict"].as_str(), ev["exe_replaced"].as_bool()), (Some("deny"), Some(true)), "{mode}: {ev}");
        assert!(ev["exe"].as_str().is_some_and(|e| e.ends_with("/masq")), "{mode}: the file executed: {ev}");
        if mode == "masquerade" {
            assert_eq!(ev["exe_now"].as_str(), Some(curl.as_str()), "{mode}: what it claims: {ev}");
        }
    }
}
