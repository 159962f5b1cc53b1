//! What the deployments rely on: systemd's notifications (READY=1 only once the programs are
//! attached and the policy enforcing; RELOADING=1 and READY=1 around reloads; STOPPING=1), the
//! probes `/healthz` and `/readyz`, and the capability set of deploy/systemd's unit, which
//! must be enough to run the agent (and each of its eBPF capabilities necessary).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::net::UnixDatagram,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::sleep,
    time::{Duration, Instant},
};

use egress_agent_tests::{policy, write_atomic, Agent, Launch, TestEnv, ADDR4, ADDR4_OTHER};
use serde_json::Value;

const EPERM: u64 = 1;
/// Ports of this file's metrics listeners (on 127.0.0.1 of the host).
const PORT_NOTIFY: u16 = 19480;
const PORT_CAPS: u16 = 19481;

fn enforcing(name: &str) -> String {
    policy(&format!(
        "  mode: enforce\n  default: deny\n  allow:\n    - {{name: {name}, cidr: {ADDR4_OTHER}/32, ports: [9], protocols: [tcp]}}\n"
    ))
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body, or None if nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// The next notification, as its `KEY=VALUE` lines.
fn next(sock: &UnixDatagram, what: &str, agent: &Agent) -> Vec<String> {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned).collect(),
        Err(e) => panic!("no notification ({what}): {e}\nagent log:\n{}", agent.log()),
    }
}

fn monotonic_usec() -> u64 {
    // SAFETY: zeroed timespec is a valid out-buffer.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn assert_reload(sock: &UnixDatagram, agent: &Agent, what: &str, generation: u32) {
    let before = monotonic_usec();
    let msg = next(sock, what, agent);
    assert_eq!(msg.first().map(String::as_str), Some("RELOADING=1"), "{what}: {msg:?}");
    let usec: u64 = msg
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: RELOADING=1 without MONOTONIC_USEC: {msg:?}"));
    // The agent's clock is the test's (CLOCK_MONOTONIC): a reload just asked for.
    assert!(usec.abs_diff(before) < 10_000_000, "{what}: MONOTONIC_USEC {usec}, now {before}");
    let msg = next(sock, what, agent);
    assert_eq!(msg.first().map(String::as_str), Some("READY=1"), "{what}: {msg:?}");
    let status = msg.iter().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or_default();
    assert!(status.contains(&format!("generation {generation}")), "{what}: {status}");
}

#[test]
fn systemd_is_told_ready_only_once_enforcing_then_reloads_and_stop() {
    let mut env = TestEnv::new("deploy-notify");
    let _server = env.server("tcp", ADDR4, 8080);
    let socket_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");

    // Probe /readyz while the agent starts, until systemd would be told it is ready.
    let told = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let poller = {
        let (told, seen) = (told.clone(), seen.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(40);
            while !told.load(Ordering::Acquire) && Instant::now() < deadline {
                if let Some((code, _)) = http_get(PORT_NOTIFY, "/readyz") {
                    seen.lock().expect("lock").push(code);
                }
                sleep(Duration::from_millis(5));
            }
        })
    };
    let socket = socket_path.display().to_string();
    let port = format!("127.0.0.1:{PORT_NOTIFY}");
    let launch = Launch { env: &[("NOTIFY_SOCKET", &socket)], wrapper: &[] };
    let mut agent = env.agent_spawn(&enforcing("v1"), &["--metrics", &port], &launch);

    let msg = next(&sock, "READY=1 at start", &agent);
    told.store(true, Ordering::Release);
    // At the moment systemd would start the units ordered after this one, egress is enforced.
    let r = env.client("tcp", ADDR4, 8080);
    assert_eq!(msg.first().map(String::as_str), Some("READY=1"), "the first notification: {msg:?}");
    let status = msg.iter().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or_default();
    assert!(status.contains("policy test (enforce mode), generation 1"), "{status}");
    assert_eq!(
        (r["ok"].clone(), r["errno"].clone()),
        (Value::from(false), Value::from(EPERM)),
        "refused at READY: {r}"
    );
    assert!(agent.log().contains("egress-agent ready"), "{}", agent.log());
    poller.join().expect("poller");
    let seen = seen.lock().expect("lock").clone();
    // Not ready (503) while loading and attaching, then ready (200) from about when READY=1
    // was sent (the poller may see it before this thread has read the datagram): never back.
    let codes = seen;
    let first_ok = codes.iter().position(|c| *c == 200).unwrap_or(codes.len());
    assert!(first_ok > 0, "the probe answered nothing but 200 before READY=1: {codes:?}");
    assert!(codes[..first_ok].iter().all(|c| *c == 503), "/readyz while starting: {codes:?}");
    assert!(codes[first_ok..].iter().all(|c| *c == 200), "/readyz once ready: {codes:?}");

    // The probes once ready, and what else the listener serves.
    let (code, body) = http_get(PORT_NOTIFY, "/readyz").expect("/readyz");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(PORT_NOTIFY, "/healthz").expect("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = http_get(PORT_NOTIFY, "/healthz?verbose").expect("/healthz?verbose");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(PORT_NOTIFY, "/metrics").expect("/metrics");
    assert!(code == 200 && body.contains("egress_policy_generation 1"), "{code} {body}");
    assert_eq!(http_get(PORT_NOTIFY, "/nothing").map(|(c, _)| c), Some(404));

    // `systemctl reload` runs `egress-agent reload`: RELOADING=1 (with the time), then READY=1.
    write_atomic(&env.path("policy.yaml"), &enforcing("v2"));
    // The file watcher reloads by itself after the quiet period: that is a reload too.
    assert_reload(&sock, &agent, "the watcher's reload", 2);
    let out = agent.admin("reload", &[]);
    assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    assert_reload(&sock, &agent, "egress-agent reload (unchanged)", 2);
    agent.signal(libc::SIGHUP);
    assert_reload(&sock, &agent, "SIGHUP", 2);

    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
    let msg = next(&sock, "STOPPING=1", &agent);
    assert_eq!(msg, ["STOPPING=1"]);
    assert!(http_get(PORT_NOTIFY, "/readyz").is_none(), "the listener outlived the agent");
}

/// The capabilities of deploy/systemd/egress-agent.service, as setpriv names them (`bpf`).
fn unit_capabilities() -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/egress-agent.service");
    let text = std::fs::read_to_string(&unit).expect("read the unit");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    line.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase()).collect()
}

/// `setpriv` running the agent as root with exactly `caps` (bounding set; inheritable and
/// ambient sets empty, so root's exec gets the bounding set and nothing more) and
/// no_new_privs, as systemd runs the unit.
fn setpriv_args(caps: &[String]) -> Vec<String> {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec![
        "setpriv".into(),
        "--no-new-privs".into(),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        format!("--bounding-set=-all{set}"),
    ]
}

fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff").trim();
    u64::from_str_radix(hex, 16).expect("hex")
}

#[test]
fn the_units_capabilities_are_enough_and_each_ebpf_one_is_needed() {
    let mut env = TestEnv::new("deploy-caps");
    let _server = env.server("tcp", ADDR4, 8080);
    let caps = unit_capabilities();
    assert_eq!(caps, ["bpf", "perfmon", "net_admin", "sys_ptrace", "dac_read_search"], "README lists these");
    let port = format!("127.0.0.1:{PORT_CAPS}");

    let wrapper = setpriv_args(&caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut agent = env.agent_spawn(&enforcing("v1"), &["--metrics", &port], &Launch { env: &[], wrapper: &wrapper });
    agent.wait_ready();
    // CAP_BPF 39, CAP_PERFMON 38, CAP_NET_ADMIN 12, CAP_SYS_PTRACE 19, CAP_DAC_READ_SEARCH 2.
    let want = (1u64 << 39) | (1 << 38) | (1 << 12) | (1 << 19) | (1 << 2);
    assert_eq!(effective_caps(agent.pid().expect("pid")), want, "setpriv execs the agent in place");

    // Enforcing, and naming the executable of another user's process (/proc/PID/exe of uid
    // 65534 needs CAP_SYS_PTRACE).
    let script = format!(
        "import socket,os,time\ns=socket.socket()\ntry:\n    s.connect(('{ADDR4}',8080)); print('ok', os.getpid(), flush=True)\nexcept OSError as e:\n    print(e.errno, os.getpid(), flush=True)\ntime.sleep(0.5)\n"
    );
    let out = env
        .in_cgroup("setpriv", &["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", &script])
        .output()
        .expect("run the client as uid 65534");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (errno, pid) = line.split_once(' ').unwrap_or_else(|| panic!("client said {line:?}: {out:?}"));
    assert_eq!(errno, EPERM.to_string(), "uid 65534's connection is refused");
    let pid: u64 = pid.parse().expect("pid");
    let ev = agent.event_of(pid, ADDR4, 8080);
    assert_eq!(ev["verdict"], "deny", "{ev}");
    assert!(ev["exe"].as_str().is_some_and(|e| e.contains("python3")), "executable named: {ev}");
    assert_eq!(http_get(PORT_CAPS, "/readyz").map(|(c, _)| c), Some(200));
    assert!(agent.stop().success(), "{}", agent.log());

    // Without any one of the eBPF capabilities the agent does not start (and says why).
    for missing in ["bpf", "perfmon", "net_admin"] {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let wrapper = setpriv_args(&fewer);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let mut agent =
            env.agent_spawn(&enforcing("v1"), &["--metrics", "off"], &Launch { env: &[], wrapper: &wrapper });
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = agent.exited() {
                break s;
            }
            assert!(
                !agent.log().contains("egress-agent ready"),
                "the agent started without CAP_{}:\n{}",
                missing.to_uppercase(),
                agent.log()
            );
            assert!(Instant::now() < deadline, "the agent neither started nor exited:\n{}", agent.log());
            sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "without CAP_{}: {status}\n{}", missing.to_uppercase(), agent.log());
        let log = agent.log();
        assert!(
            // EPERM from bpf(2), or the verifier refusing what only a privileged loader may do.
            log.contains("Operation not permitted") || log.contains("prohibited for !root"),
            "without CAP_{} the log says why:\n{log}",
            missing.to_uppercase()
        );
    }
}
