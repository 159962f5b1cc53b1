//! Kernel tests of the datagrams the sock_addr hooks do not all see (issue "Harden it", items
//! 1, 2 and 7): ICMP echo requests from unprivileged ping sockets, and UDP-Lite. Each is decided
//! per destination on its way out (the `skb_dgram` program), as the process that created the
//! socket: `icmp` rules for ICMP, `udp` rules for UDP-Lite. The clients run as uid 65534 with no
//! capabilities, ping sockets open to every group (as systemd sets it); what leaves is checked
//! on the wire with a capture in the test's namespace.

use std::{fs, process::Stdio, time::Duration};

use egress_agent_tests::{
    captured, policy, py, realpath_of, wait_for, Agent, TestEnv, ADDR4, ADDR4_OTHER, ADDR6, ADDR6_OTHER,
};
use serde_json::Value;

const PORT: u16 = 9000;

/// tests/py/dgram.py as uid 65534 in the watched cgroup, run by the interpreter `exe`.
fn dgram(env: &TestEnv, exe: &str, mode: &str, addr: &str, count: u32) -> Value {
    let script = py("dgram.py");
    let (port, count) = (PORT.to_string(), count.to_string());
    let args = ["--reuid", "65534", "--regid", "65534", "--clear-groups", exe, &script, mode, addr, &port, &count];
    let out = env.in_cgroup("setpriv", &args).output().expect("dgram.py");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{mode} {addr}: {out:?}: {e}"))
}

fn ping_env(name: &str) -> TestEnv {
    let env = TestEnv::new(name);
    env.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    env
}

/// The report of process `pid`'s attempt towards `dst`.
fn event(agent: &Agent, pid: &Value, dst: &str) -> Value {
    agent.wait_event(&format!("the report of {pid} to {dst}"), |e| {
        e["kind"] == "connect" && e["pid"] == *pid && e["dst"] == dst
    })
}

fn python() -> String {
    realpath_of("/usr/bin/python3").display().to_string()
}

/// Ping (`sendto`, and `connect` then `send`), IPv4 and IPv6, to a vendor `icmp` destination
/// reserved to python: echoed; to any other address: EPERM, nothing on the wire, and a deny
/// report naming the process; from a copy of python (another executable): refused as
/// `process`; from a cgroup the vendor names: echoed.
#[test]
fn ping_is_decided_per_destination_by_icmp_rules() {
    let env = ping_env("ping");
    let python = python();
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: pinger\n      destinations: [{{cidr: {ADDR4}}}, {{cidr: {ADDR6}}}]\n      ports: [443]\n      protocols: [icmp]\n      processes: [{{exe: {python}}}]\n"
    )));
    for (ok, other) in [(ADDR4, ADDR4_OTHER), (ADDR6, ADDR6_OTHER)] {
        for mode in ["ping-sendto", "ping-connect"] {
            let r = dgram(&env, &python, mode, ok, 3);
            assert_eq!(
                (r["ok"].as_bool(), r["replies"].as_u64()),
                (Some(true), Some(3)),
                "{mode} {ok}: {r}\n{}",
                agent.log()
            );
            let ev = event(&agent, &r["pid"], ok);
            assert_eq!(
                (ev["verdict"].as_str(), ev["proto"].as_str(), ev["vendor"].as_str(), ev["uid"].as_u64()),
                (Some("allow"), Some("icmp"), Some("pinger"), Some(65534)),
                "{ev}"
            );

            let (r, packets) = captured(&env, other, || dgram(&env, &python, mode, other, 1));
            assert_eq!(packets, 0, "{mode}: an echo request reached {other}: {r}\n{}", agent.log());
            assert_eq!(r["replies"], 0, "{mode} {other}: {r}");
            // IPv6 ping does not hand a dropped packet's error back to sendto (the kernel's
            // icmpv6_push_pending_frames ignores it): the request is refused all the same.
            if other == ADDR4_OTHER || mode == "ping-connect" {
                assert_eq!(r["errno"], libc::EPERM, "{mode} {other}: {r}");
            }
            let ev = event(&agent, &r["pid"], other);
            let hook = match (mode, other == ADDR4_OTHER) {
                ("ping-sendto", true) => "egress4",
                ("ping-sendto", false) => "egress6",
                (_, true) => "connect4",
                (_, false) => "connect6",
            };
            assert_eq!(
                (ev["verdict"].as_str(), ev["proto"].as_str(), ev["hook"].as_str(), ev["exe"].as_str()),
                (Some("deny"), Some("icmp"), Some(hook), Some(python.as_str())),
                "{mode}: {ev}"
            );
        }
    }
    // Another executable (a copy of python is another file): the vendor's destination is
    // reserved to the vendor's processes.
    let copy = env.path("python-copy");
    fs::copy(&python, &copy).expect("copy python");
    let copy = copy.display().to_string();
    let (r, packets) = captured(&env, ADDR4, || dgram(&env, &copy, "ping-sendto", ADDR4, 1));
    assert_eq!((r["errno"].as_i64(), packets), (Some(i64::from(libc::EPERM)), 0), "a copy of python: {r}");
    let ev = event(&agent, &r["pid"], ADDR4);
    assert_eq!((ev["verdict"].as_str(), ev["reason"].as_str()), (Some("deny"), Some("process")), "{ev}");
    drop(agent);

    // By cgroup: the creator's cgroup ancestors, recorded with it, are what a `cgroup` selector
    // matches (the packet may leave from any context).
    let cgroup = format!(
        "/{}",
        env.cgroup.strip_prefix(egress_agent_tests::cgroup2_mount()).expect("under the mount").display()
    );
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: pinger\n      destinations: [{{cidr: {ADDR4}}}]\n      protocols: [icmp]\n      processes: [{{cgroup: {cgroup}}}]\n"
    )));
    let r = dgram(&env, &python, "ping-sendto", ADDR4, 1);
    assert_eq!(r["ok"], true, "by cgroup: {r}\n{}", agent.log());
    let r = dgram(&env, &python, "ping-sendto", ADDR4_OTHER, 1);
    assert_eq!(r["errno"], libc::EPERM, "by cgroup, elsewhere: {r}");
}

/// An `icmp` rule allows nothing else, and a `tcp`/`udp` rule allows no ICMP.
#[test]
fn icmp_and_port_rules_do_not_stand_in_for_each_other() {
    let mut env = ping_env("ping-proto");
    let server = env.server("udp", ADDR4, PORT);
    let python = python();
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  allow:\n    - {{name: ping-only, cidr: {ADDR6}/128, protocols: [icmp]}}\n    - {{name: udp-only, cidr: {ADDR4}/32, ports: [{PORT}], protocols: [udp, tcp]}}\n"
    )));
    let r = dgram(&env, &python, "ping-sendto", ADDR4, 1);
    assert_eq!(r["errno"], libc::EPERM, "ICMP under a udp/tcp rule: {r}\n{}", agent.log());
    assert_eq!(env.client("udp-sendto", ADDR4, PORT)["ok"], true, "UDP under its rule");
    server.wait_received(1);
    let r = dgram(&env, &python, "ping-sendto", ADDR6, 1);
    assert_eq!(r["ok"], true, "ICMPv6 under an icmp rule: {r}");
    let udp6 = env.client("udp-sendto", ADDR6, PORT);
    assert_eq!(udp6["errno"], libc::EPERM, "UDP under an icmp rule: {udp6}");
}

/// UDP-Lite gets the verdict a `udp` rule gives it, connected (`connect` runs no hook, the
/// datagrams are decided on the way out) and unconnected (`sendto`, decided by sendmsg4/6), IPv4
/// and IPv6: allowed to the rule's address and port, refused (EPERM, nothing on the wire, a deny
/// report with `proto: "udp"`) anywhere else.
#[test]
fn udplite_datagrams_get_the_verdict_of_udp_rules() {
    let mut env = TestEnv::new("udplite");
    let servers = [env.server("udplite", ADDR4, PORT), env.server("udplite", ADDR6, PORT)];
    let python = python();
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  allow:\n    - {{name: ok4, cidr: {ADDR4}/32, ports: [{PORT}], protocols: [udp]}}\n    - {{name: ok6, cidr: {ADDR6}/128, ports: [{PORT}], protocols: [udp]}}\n"
    )));
    for (ok, other) in [(ADDR4, ADDR4_OTHER), (ADDR6, ADDR6_OTHER)] {
        for mode in ["lite-connect", "lite-sendto"] {
            let server = &servers[usize::from(ok == ADDR6)];
            let before = server.received().len();
            let r = dgram(&env, &python, mode, ok, 3);
            assert_eq!(r["ok"], true, "{mode} {ok}: {r}\n{}", agent.log());
            server.wait_received(before + 3);
            let ev = event(&agent, &r["pid"], ok);
            assert_eq!(
                (ev["verdict"].as_str(), ev["proto"].as_str(), ev["rule"].as_str()),
                (Some("allow"), Some("udp"), Some(if ok == ADDR4 { "allow/ok4" } else { "allow/ok6" })),
                "{ev}"
            );
            let (r, packets) = captured(&env, other, || dgram(&env, &python, mode, other, 1));
            assert_eq!((r["errno"].as_i64(), packets), (Some(i64::from(libc::EPERM)), 0), "{mode} {other}: {r}");
            let ev = event(&agent, &r["pid"], other);
            let v4 = other == ADDR4_OTHER;
            let hook = match (mode, v4) {
                ("lite-connect", true) => "egress4",
                ("lite-connect", false) => "egress6",
                (_, true) => "sendmsg4",
                (_, false) => "sendmsg6",
            };
            assert_eq!(
                (ev["verdict"].as_str(), ev["proto"].as_str(), ev["hook"].as_str(), ev["uid"].as_u64()),
                (Some("deny"), Some("udp"), Some(hook), Some(65534)),
                "{mode}: {ev}"
            );
        }
    }
}

/// Monitor mode refuses nothing: the echo requests to an address no rule allows are answered,
/// and reported once (one flow per socket and destination, which counts them all), as an
/// alert.
#[test]
fn ping_is_reported_once_per_destination_in_monitor_mode() {
    let env = ping_env("ping-mon");
    let python = python();
    let agent = env.agent(&policy("  mode: monitor\n  default: deny\n"));
    let r = dgram(&env, &python, "ping-sendto", ADDR4_OTHER, 5);
    assert_eq!(r["ok"], true, "{r}");
    let ev = event(&agent, &r["pid"], ADDR4_OTHER);
    assert_eq!(
        (ev["verdict"].as_str(), ev["proto"].as_str(), ev["hook"].as_str()),
        (Some("alert"), Some("icmp"), Some("egress4")),
        "{ev}"
    );
    // The flow's end comes when the socket closes (the process has exited): then every record
    // of the process is in.
    let end =
        agent.wait_event("the ping flow's end", |e| e["kind"] == "flow" && e["pid"] == r["pid"] && e["state"] == "end");
    // Every request counted, the first (which started the flow) too: 12 bytes after the ICMP
    // header each.
    assert_eq!((end["packets_out"].as_u64(), end["bytes_out"].as_u64()), (Some(5), Some(60)), "{end}");
    let reports = agent.events().into_iter().filter(|e| e["kind"] == "connect" && e["pid"] == r["pid"]).count();
    assert_eq!(reports, 1, "five echo requests, one report: {}", agent.log());
}

/// A ping socket opened before the agent started has no recorded owner: in enforce mode its
/// datagrams are refused wherever they go (it could be anyone's), and reported.
#[test]
fn a_ping_socket_opened_before_the_agent_is_not_a_way_around_it() {
    let env = ping_env("ping-early");
    // A directory the client (uid 65534) can write its ready file to.
    let dir = env.path("hold-dir");
    fs::create_dir(&dir).expect("hold dir");
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let hold = dir.join("hold");
    let hold_s = hold.display().to_string();
    let script = py("dgram.py");
    let port = PORT.to_string();
    let child = env
        .in_cgroup(
            "setpriv",
            &[
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "/usr/bin/python3",
                &script,
                "ping-sendto",
                ADDR4,
                &port,
                "1",
                &hold_s,
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("dgram.py");
    wait_for(Duration::from_secs(10), || hold.exists(), || "the early socket was not created".into());
    // Allowed for every process: only the unknown owner refuses it.
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  allow:\n    - {{name: ping, cidr: {ADDR4}/32, protocols: [icmp]}}\n"
    )));
    fs::write(format!("{hold_s}.go"), "").expect("go");
    let out = child.wait_with_output().expect("dgram.py");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    assert_eq!(r["errno"], libc::EPERM, "the early socket: {r}\n{}", agent.log());
    let ev = agent.wait_event("the early socket's report", |e| e["kind"] == "connect" && e["dst"] == ADDR4);
    assert_eq!((ev["verdict"].as_str(), ev["hook"].as_str()), (Some("deny"), Some("egress4")), "{ev}");
    // A socket the same process line opens now is recorded, and allowed.
    let r = dgram(&env, &python(), "ping-sendto", ADDR4, 1);
    assert_eq!(r["ok"], true, "a new socket: {r}");
}

/// Creates a ping socket as python, then execs `exe` with the socket inherited; `exe` (a
/// python) sends one echo request on it to `addr`. Returns {"pid", "errno", "replies"}.
fn handed_over(env: &TestEnv, exe: &str, addr: &str) -> Value {
    const SEND: &str = "import json, os, socket, sys\ns = socket.socket(fileno=int(sys.argv[1]))\ns.settimeout(1)\nout = {'pid': os.getpid(), 'errno': 0, 'replies': 0}\ntry:\n    s.sendto(bytes([8, 0, 0, 0, 0, 0, 0, 1]) + b'egress-agent', (sys.argv[2], 0))\n    s.recv(1500)\n    out['replies'] = 1\nexcept OSError as e:\n    out['errno'] = e.errno or -1\nprint(json.dumps(out))\n";
    let create = format!(
        "import os, socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)\nos.set_inheritable(s.fileno(), True)\nos.execv(sys.argv[1], [sys.argv[1], '-c', {SEND:?}, str(s.fileno()), sys.argv[2]])\n"
    );
    let args = ["--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3", "-c", &create, exe, addr];
    let out = env.in_cgroup("setpriv", &args).output().expect("python3");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{exe}: {out:?}: {e}"))
}

/// A socket is decided as its creator, but only for a sender running the creator's executable:
/// handed to another executable (here across an exec; `pidfd_getfd` and `SCM_RIGHTS` alike),
/// the vendor reserved to the creator's is refused to it.
#[test]
fn a_ping_socket_handed_to_another_executable_does_not_lend_its_vendor() {
    let env = ping_env("ping-handed");
    let python = python();
    let copy = env.path("python-copy");
    fs::copy(&python, &copy).expect("copy python");
    let copy = copy.display().to_string();
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: pinger\n      destinations: [{{cidr: {ADDR4}}}]\n      protocols: [icmp]\n      processes: [{{exe: {python}}}]\n"
    )));
    let same = handed_over(&env, &python, ADDR4);
    assert_eq!(
        (same["errno"].as_i64(), same["replies"].as_u64()),
        (Some(0), Some(1)),
        "python to python: {same}\n{}",
        agent.log()
    );
    let (other, packets) = captured(&env, ADDR4, || handed_over(&env, &copy, ADDR4));
    assert_eq!(
        (other["errno"].as_i64(), packets),
        (Some(i64::from(libc::EPERM)), 0),
        "the socket lent python's vendor to another executable: {other}"
    );
    let ev = event(&agent, &other["pid"], ADDR4);
    assert_eq!((ev["verdict"].as_str(), ev["reason"].as_str()), (Some("deny"), Some("process")), "{ev}");
}
