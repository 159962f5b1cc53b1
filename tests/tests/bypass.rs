//! Kernel tests of the paths around the hooks an unprivileged process in the watched cgroup
//! might try (issue "Harden it"): each drives a real client against the real programs, in
//! `mode: enforce` with `default: deny`, and checks on the wire (a packet capture in the test's
//! namespace) that nothing left for a destination the policy does not allow.

use std::{process::Command, time::Duration};

use egress_agent_tests::{captured, policy, py, wait_for, TestEnv, ADDR4, ADDR4_OTHER, ADDR6, ADDR6_OTHER};
use serde_json::Value;

const PORT: u16 = 9000;

/// ADDR4 and ADDR6 on PORT are allowed (UDP and TCP); nothing else is.
fn allowed_only(mode: &str) -> String {
    policy(&format!(
        "  mode: {mode}\n  default: deny\n  allow:\n    - {{name: ok4, cidr: {ADDR4}/32, ports: [{PORT}], protocols: [udp, tcp]}}\n    - {{name: ok6, cidr: {ADDR6}/128, ports: [{PORT}], protocols: [udp, tcp]}}\n"
    ))
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
    agent.wait_event("a source-route report", |e| {
        e["kind"] == "connect" && e["pid"] == *pid && e["reason"] == "source_route"
    })
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
/// are the ones a hook decides: TCP, MPTCP and UDP (the sock_addr hooks), ICMP ping and UDP-Lite
/// (on the way out); whatever else this kernel has is refused at creation, and reported.
#[test]
fn every_socket_an_unprivileged_process_can_create_is_decided_or_refused() {
    let env = TestEnv::new("sockets");
    env.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    let agent = env.agent(&allowed_only("enforce"));
    let run = || {
        let script = py("sockets.py");
        let port = PORT.to_string();
        let args = [
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "/usr/bin/python3",
            &script,
            ADDR4_OTHER,
            ADDR6_OTHER,
            &port,
        ];
        let out = env.in_cgroup("setpriv", &args).output().expect("sockets.py");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("sockets.py output")
    };
    let ((tried, v6_packets), v4_packets) = captured(&env, ADDR4_OTHER, || captured(&env, ADDR6_OTHER, run));
    let created: Vec<&Value> = tried.iter().filter(|t| t["errno"] == 0).collect();
    let sent: Vec<&Value> = created.iter().copied().filter(|t| !t["sent"].is_null()).collect();
    assert_eq!((v4_packets, v6_packets), (0, 0), "markers reached a denied address; sent through {sent:?}");
    // TCP and MPTCP streams, UDP datagrams (the sock_addr hooks); ICMP ping and UDP-Lite
    // datagrams (decided on the way out, tests/tests/dgram.rs). Anything else is refused.
    for t in &created {
        let (ty, proto) = (t["type"].as_u64(), t["proto"].as_u64());
        let decided = matches!((ty, proto), (Some(1), Some(0 | 6 | 262)) | (Some(2), Some(0 | 1 | 17 | 58 | 136)));
        assert!(decided, "a socket no hook decides was created: {t}");
    }
    for (ty, proto, what) in [(2, 136, "UDP-Lite"), (2, 1, "ICMP ping")] {
        assert!(
            created.iter().any(|t| t["type"] == ty && t["proto"] == proto && t["family"] == libc::AF_INET),
            "{what} sockets were not tried: {tried:?}"
        );
    }
    // Their markers were refused on the way out, and reported as the sender's.
    for (proto, hook) in [("icmp", "egress4"), ("udp", "egress6")] {
        let ev = agent.wait_event(&format!("a refused {proto} marker"), |e| {
            e["kind"] == "connect" && e["proto"] == proto && e["hook"] == hook && e["verdict"] == "deny"
        });
        assert_eq!(ev["uid"], 65534, "{ev}");
    }
}

/// Builds tests/c/masq.c (a library, so that its code keeps running once the executable is
/// unmapped) and its executable into the test's directory; returns the executable's path.
fn build_masq(env: &TestEnv) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("c");
    let out = env.path("masq");
    let lib = env.path("libmasq.so");
    // Bound at load (-z now): lazy binding would read the unmapped executable's symbols.
    egress_agent_tests::sh(
        Command::new("gcc").args(["-O1", "-shared", "-fPIC", "-Wl,-z,now", "-o"]).arg(&lib).arg(src.join("masq.c")),
    );
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
        assert_eq!(
            (r["ok"].as_bool(), r["errno"].as_i64()),
            (Some(false), Some(i64::from(libc::EPERM))),
            "{mode}: the masquerade reached curl's vendor: {r}\n{}",
            agent.log()
        );
        let ev = agent.event_of(r["pid"].as_u64().expect("pid"), ADDR4, WEB);
        assert_eq!((ev["verdict"].as_str(), ev["exe_replaced"].as_bool()), (Some("deny"), Some(true)), "{mode}: {ev}");
        assert!(ev["exe"].as_str().is_some_and(|e| e.ends_with("/masq")), "{mode}: the file executed: {ev}");
        if mode == "masquerade" {
            assert_eq!(ev["exe_now"].as_str(), Some(curl.as_str()), "{mode}: what it claims: {ev}");
        }
    }
}

/// Builds one of tests/c/*.c into the test's directory, as a shared library if `lib`.
fn build_c(env: &TestEnv, source: &str, out: &str, lib: bool) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("c").join(source);
    let path = env.path(out);
    let mut gcc = Command::new("gcc");
    gcc.arg("-O1");
    if lib {
        gcc.args(["-shared", "-fPIC"]);
    }
    egress_agent_tests::sh(gcc.arg("-o").arg(&path).arg(src));
    // uid 65534 runs and loads them.
    egress_agent_tests::sh(Command::new("chmod").arg("-R").arg("a+rX").arg(env.path("")));
    path.display().to_string()
}

/// Code injected into an allowed binary: `LD_PRELOAD`, `LD_AUDIT` or `LD_LIBRARY_PATH` at exec,
/// or a tracer of the process's own uid (which stops it, could rewrite it, and detaches). A
/// vendor reserved to `{exe: curl, untampered: true}` stays refused to all of them, to the
/// injected code's own connects too (and its child's), while a plain curl reaches it, and a
/// vendor without `untampered` still lets a preloaded curl through (allocators are preloaded).
#[test]
fn code_injected_into_an_allowed_binary_does_not_get_its_vendor() {
    const WEB: u16 = 8080;
    let mut env = TestEnv::new("tamper");
    env.server("tcp", ADDR4, WEB);
    env.server("tcp", ADDR4_OTHER, WEB);
    let inject = build_c(&env, "inject.c", "libinject.so", true);
    let tracer = build_c(&env, "tracer.c", "tracer", false);
    let curl = egress_agent_tests::realpath_of("curl").display().to_string();
    let python = egress_agent_tests::realpath_of("/usr/bin/python3").display().to_string();
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      processes: [{{exe: {curl}, untampered: true}}, {{exe: {python}, untampered: true}}]\n    - name: plain\n      destinations: [{{cidr: {ADDR4_OTHER}}}]\n      ports: [{WEB}]\n      processes: [{{exe: {curl}}}]\n"
    )));
    let out_file = env.path("inject.jsonl");
    // As uid 65534 with only the environment given (the test runner's own has LD_LIBRARY_PATH).
    let run = |vars: &[(&str, String)], program: &[&str]| -> std::process::Output {
        let mut args = vec!["--reuid", "65534", "--regid", "65534", "--clear-groups", "env", "-i"];
        let pairs: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.extend(pairs.iter().map(String::as_str));
        args.extend(program);
        env.in_cgroup("setpriv", &args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("setpriv")
    };
    let url = |addr: &str| format!("http://{addr}:{WEB}/");
    let fetch = |addr: &str| -> Vec<String> {
        vec![curl.clone(), "-s".into(), "-o".into(), "/dev/null".into(), "--max-time".into(), "3".into(), url(addr)]
    };
    let connected = |o: &std::process::Output| !matches!(o.status.code(), Some(7) | Some(28));
    let injected = |k: &'static str| -> Vec<(&str, String)> {
        vec![
            (k, inject.clone()),
            ("INJECT_ADDR", ADDR4.to_owned()),
            ("INJECT_PORT", WEB.to_string()),
            ("INJECT_OUT", out_file.display().to_string()),
        ]
    };

    // The control: curl as it is reaches its vendor.
    let plain = run(&[], &fetch(ADDR4).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(connected(&plain), "a plain curl was refused: {plain:?}\n{}", agent.log());

    // Preloaded: curl's own connect, the injected constructor's and its child's are refused.
    std::fs::write(&out_file, "").expect("inject.jsonl");
    egress_agent_tests::sh(Command::new("chmod").arg("a+w").arg(&out_file));
    let pre = run(&injected("LD_PRELOAD"), &fetch(ADDR4).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        pre.status.code(),
        Some(7),
        "LD_PRELOAD: the preloaded curl reached the vendor: {pre:?}\n{}",
        agent.log()
    );
    let lines: Vec<Value> = std::fs::read_to_string(&out_file)
        .expect("inject.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "the constructor and its child each tried once: {lines:?}");
    for l in &lines {
        assert_eq!(
            (l["ok"].as_bool(), l["errno"].as_i64()),
            (Some(false), Some(i64::from(libc::EPERM))),
            "injected code reached the vendor: {l}"
        );
        let ev = agent.event_of(l["pid"].as_u64().expect("pid"), ADDR4, WEB);
        assert_eq!(
            (ev["verdict"].as_str(), ev["reason"].as_str(), ev["loader_env"].as_bool()),
            (Some("deny"), Some("process"), Some(true)),
            "{ev}"
        );
    }
    // ... but a vendor without `untampered` is the executable's alone, preloaded or not.
    let other = run(&injected("LD_PRELOAD"), &fetch(ADDR4_OTHER).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(connected(&other), "a preloaded curl lost its plain vendor: {other:?}");

    // The other loader variables, and one hidden behind 300 KB of environment (a 120 KB
    // variable and 4,000 small ones).
    let big = "x".repeat(120_000);
    let mut hidden: Vec<(&str, String)> = vec![("BIG", big)];
    let names: Vec<String> = (0..4000).map(|i| format!("V{i}")).collect();
    hidden.extend(names.iter().map(|n| (n.as_str(), "y".repeat(40))));
    // The control: the same 300 KB alone is read whole, and allowed (a scan that gave up would
    // refuse it, and the case below would pass for the wrong reason).
    let o = run(&hidden, &fetch(ADDR4).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(connected(&o), "300 KB of environment without a loader variable was refused: {o:?}");
    hidden.push(("LD_PRELOAD", inject.clone()));
    let cases: [(&str, Vec<(&str, String)>); 3] = [
        ("LD_AUDIT", injected("LD_AUDIT")),
        ("LD_LIBRARY_PATH", vec![("LD_LIBRARY_PATH", env.path("").display().to_string())]),
        ("LD_PRELOAD after 300 KB", hidden),
    ];
    for (what, vars) in &cases {
        let o = run(vars, &fetch(ADDR4).iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(7), "{what}: curl reached the vendor: {o:?}");
    }
    // Only a variable's name counts: a value that spells one (where a 64-byte read of a long
    // string would restart) does not.
    // `DECOY=` and 57 bytes: `LD_PRELOAD=` starts at byte 63, where the second 64-byte read of
    // the string begins.
    let decoy = format!("{}LD_PRELOAD={inject}", "z".repeat(57));
    let o = run(&[("DECOY", decoy)], &fetch(ADDR4).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(connected(&o), "a value spelling LD_PRELOAD= was taken for the variable: {o:?}");

    // Traced: stopped for a tracer at its exec, or seized later, then let go.
    let under_tracer: Vec<String> = [tracer.clone(), "exec".into()].into_iter().chain(fetch(ADDR4)).collect();
    let traced = run(&[], &under_tracer.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(traced.status.code(), Some(7), "traced at exec: curl reached the vendor: {traced:?}");
    let ev =
        agent.wait_event("a traced curl", |e| e["dst"] == ADDR4 && e["traced"] == true && e["exe"] == curl.as_str());
    assert_eq!((ev["verdict"].as_str(), ev["reason"].as_str()), (Some("deny"), Some("process")), "{ev}");
    let late = format!(
        "import json, os, socket, time\ntime.sleep(1.5)\ntry:\n    socket.create_connection(('{ADDR4}', {WEB}), timeout=3).close(); r = {{'ok': True}}\nexcept OSError as e:\n    r = {{'ok': False, 'errno': e.errno}}\nr['pid'] = os.getpid()\nprint(json.dumps(r))\n"
    );
    let alone = run(&[], &[&python, "-c", &late]);
    let alone: Value = serde_json::from_slice(&alone.stdout).unwrap_or_else(|e| panic!("{alone:?}: {e}"));
    assert_eq!(alone["ok"], true, "python untraced was refused: {alone}");
    let seized = run(&[], &[&tracer, "seize", &python, "-c", &late]);
    let seized_r: Value = serde_json::from_slice(&seized.stdout).unwrap_or_else(|e| panic!("{seized:?}: {e}"));
    assert_eq!(
        (seized_r["ok"].as_bool(), seized_r["errno"].as_i64()),
        (Some(false), Some(i64::from(libc::EPERM))),
        "seized and let go: python reached the vendor: {seized:?}"
    );
    let ev = agent.event_of(seized_r["pid"].as_u64().expect("pid"), ADDR4, WEB);
    assert_eq!(
        (ev["verdict"].as_str(), ev["traced"].as_bool(), ev["loader_env"].as_bool()),
        (Some("deny"), Some(true), Some(false)),
        "{ev}"
    );
}

/// MPTCP: the server announces another address of its own (ADD_ADDR) and the client's path
/// manager opens a subflow to it from a kernel worker. The subflow is the connection owner's:
/// decided with the owner's identity (the vendor reserved to python gets it) and reported as
/// the owner's, and an announced address no rule allows is refused (the subflow is not opened).
#[test]
fn mptcp_subflows_the_kernel_opens_are_decided_and_reported_as_the_owner_s() {
    const MP: u16 = 9300;
    let mut env = TestEnv::new("mptcp");
    env.sysctl("net.mptcp.enabled", "1");
    env.ip(&["mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2"]);
    env.ip(&["mptcp", "endpoint", "add", ADDR4_OTHER, "signal"]);
    let log = env.path("mptcp-server.log");
    let server = Command::new("ip")
        .args(["netns", "exec", &env.netns, "python3", &py("mptcp.py"), "server", &MP.to_string()])
        .arg(&log)
        .spawn()
        .expect("mptcp server");
    env.adopt(server);
    wait_for(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready")),
        || "the MPTCP server did not start".into(),
    );
    let python = egress_agent_tests::realpath_of("/usr/bin/python3").display().to_string();
    let client = |env: &TestEnv| -> Value {
        let out = env
            .in_cgroup("/usr/bin/python3", &[&py("mptcp.py"), "client", ADDR4, &MP.to_string()])
            .output()
            .expect("client");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{out:?}: {e}"))
    };
    // By executable, and by cgroup (the owner's, recorded with it: the worker is in the root).
    let cgroup = format!(
        "/{}",
        env.cgroup.strip_prefix(egress_agent_tests::cgroup2_mount()).expect("under the mount").display()
    );
    let both = format!("{ADDR4}, {ADDR4_OTHER}");
    let cases = [
        (true, both.clone(), format!("{{exe: {python}}}")),
        (false, ADDR4.to_owned(), format!("{{exe: {python}}}")),
        (true, both, format!("{{cgroup: {cgroup}}}")),
    ];
    for (allowed, dests, selector) in cases {
        let agent = env.agent(&policy(&format!(
            "  mode: enforce\n  default: deny\n  vendors:\n    - name: mp\n      destinations: [{}]\n      ports: [{MP}]\n      processes: [{selector}]\n",
            dests.split(", ").map(|d| format!("{{cidr: {d}}}")).collect::<Vec<_>>().join(", ")
        )));
        let r = client(&env);
        assert_eq!(r["ok"], true, "the first subflow: {r}\n{}", agent.log());
        let pid = r["pid"].as_u64().expect("pid");
        let ev = agent.wait_event("the announced address's subflow", |e| e["dst"] == ADDR4_OTHER && e["dport"] == MP);
        assert_eq!(
            (ev["pid"].as_u64(), ev["exe"].as_str(), ev["verdict"].as_str(), ev["mptcp_subflow"].as_bool()),
            (Some(pid), Some(python.as_str()), Some(if allowed { "allow" } else { "deny" }), Some(true)),
            "the subflow is the owner's: {ev}"
        );
        assert_eq!(ev["cgroup"], agent.event_of(pid, ADDR4, MP)["cgroup"], "the owner's cgroup: {ev}");
        assert_eq!(r["subflows"].as_u64(), Some(u64::from(allowed)), "subflows opened: {r}");
    }
}
