//! Kernel tests of operating the agent: the kill switch (`block`, `unblock`, `block --all`), its
//! persistence and expiry, the admin socket's `status` and `reload`, and who may use the socket.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use egress_agent_tests::{policy, py, wait_for, write_atomic, Agent, TestEnv, ADDR4, ADDR4_OTHER, ADDR6};
use serde_json::Value;

const WEB: u16 = 8080;
const INFRA: u16 = 8081;
const OPEN: u16 = 8082;
const LIVE: u16 = 8083;

/// `mode` and `default` as given; vendor `web` owns ADDR4 on WEB and LIVE for any process; an
/// infrastructure rule allows ADDR4_OTHER:INFRA.
fn spec(mode: &str, default: &str) -> String {
    spec_with(mode, default, "")
}

/// As [`spec`], with `web_extra` added to vendor `web` (e.g. its `processes`).
fn spec_with(mode: &str, default: &str, web_extra: &str) -> String {
    policy(&format!(
        "  mode: {mode}\n  default: {default}\n  allow:\n    - {{name: infra, cidr: {ADDR4_OTHER}/32, ports: [{INFRA}], protocols: [tcp]}}\n  vendors:\n    - name: web\n      owner: test\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}, {LIVE}]\n      protocols: [tcp]\n{web_extra}    - name: other\n      owner: test\n      destinations: [{{cidr: {ADDR6}}}]\n      ports: [{WEB}]\n      protocols: [tcp]\n"
    ))
}

/// Vendor `web` reserved to an executable no test process runs: in monitor mode every attempt to
/// it is an alert (`reason: process`), let through.
const NOBODY: &str = "      processes: [{exe: /nonexistent/egress-agent-test}]\n";

fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn connects(env: &TestEnv, addr: &str, port: u16) -> bool {
    env.client("tcp", addr, port)["ok"] == true
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn audit_kinds(state: &std::path::Path) -> Vec<String> {
    fs::read_to_string(state.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["kind"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn block_refuses_a_vendor_within_a_second_in_monitor_mode_cuts_live_flows_and_unblock_lifts_it() {
    let mut env = TestEnv::new("kill");
    let web = env.server("tcp", ADDR4, WEB);
    let live = env.server("lines", ADDR4, LIVE);
    let _infra = env.server("tcp", ADDR4_OTHER, INFRA);
    let state = env.path("state");
    fs::create_dir(&state).expect("state dir");
    // Monitor mode, and the vendor reserved to another executable: the policy only alerts on
    // these attempts, and lets them (and the live connection) through; the kill switch must
    // refuse and cut them.
    let agent = env.agent_with(
        &spec_with("monitor", "allow", NOBODY),
        &["--state", state.to_str().expect("utf-8"), "--metrics", "127.0.0.1:19470"],
    );
    assert!(connects(&env, ADDR4, WEB), "{}", agent.log());

    let mut looping = env
        .in_cgroup("python3", &[&py("kill_loop.py"), ADDR4, &WEB.to_string(), &LIVE.to_string(), "5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("loop");
    sleep(Duration::from_millis(1500));
    let t0 = monotonic();
    let out = agent.admin("block", &["web", "--reason", "key leaked"]);
    let t1 = monotonic();
    let said = ok(&out, "block web");
    assert!(said.contains("blocked: vendor web, until lifted"), "{said}");
    let rounds: Vec<Value> = String::from_utf8_lossy(&looping.wait_with_output_ref().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("loop line"))
        .collect();
    let before: Vec<&Value> = rounds.iter().filter(|r| r["t"].as_f64() < Some(t0)).collect();
    assert!(!before.is_empty() && before.iter().all(|r| r["ok"] == true), "before the block all pass: {before:?}");
    let first_refused = rounds
        .iter()
        .find(|r| r["t"].as_f64() >= Some(t0) && r["ok"] == false)
        .unwrap_or_else(|| panic!("no refusal after the block: {rounds:?}\n{}", agent.log()));
    let took = first_refused["t"].as_f64().expect("t") - t0;
    println!("block -> first refused connection: {:.0} ms (block command took {:.0} ms)", took * 1e3, (t1 - t0) * 1e3);
    assert!(took < 1.0, "the first refusal came {took:.3} s after `block`");
    assert_eq!(first_refused["errno"], libc::EPERM, "{first_refused}");
    let after: Vec<&Value> = rounds.iter().filter(|r| r["t"].as_f64() > Some(t1)).collect();
    assert!(
        after.len() > 10 && after.iter().all(|r| r["ok"] == false),
        "every attempt after the block is refused: {after:?}"
    );
    // The live connection: nothing sent after the block reached the server.
    let received: Vec<u64> = live.lines().iter().filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect();
    let sent_after: Vec<u64> = after.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(!sent_after.is_empty(), "the live connection sent after the block: {after:?}");
    assert!(received.contains(&before[0]["seq"].as_u64().expect("seq")), "the live connection worked: {received:?}");
    let leaked: Vec<&u64> = sent_after.iter().filter(|s| received.contains(s)).collect();
    assert!(leaked.is_empty(), "lines sent on the live connection after the block arrived: {leaked:?}");

    // The event says why; status, metrics, audit and the events show the kill.
    let refused =
        agent.wait_event("refused by the kill switch", |e| e["kind"] == "connect" && e["kill_switch"] == true);
    assert_eq!(
        (refused["verdict"].as_str(), refused["reason"].as_str(), refused["vendor"].as_str()),
        (Some("deny"), Some("kill_switch"), Some("web")),
        "{refused}"
    );
    let started = agent.wait_event("kill switch record", |e| e["kind"] == "kill_switch" && e["action"] == "block");
    assert_eq!((started["vendor"].as_str(), started["reason"].as_str()), (Some("web"), Some("key leaked")));
    let st = agent.status();
    let kills = st["kill_switch"].as_array().expect("kills");
    assert_eq!(kills.len(), 1, "{st}");
    assert_eq!(kills[0]["vendor"], "web");
    let metrics = || {
        String::from_utf8_lossy(
            &Command::new("curl").args(["-sf", "http://127.0.0.1:19470/metrics"]).output().expect("curl").stdout,
        )
        .into_owned()
    };
    wait_for(
        Duration::from_secs(3),
        || metric(&metrics(), "egress_kill_switch_refused_total").is_some_and(|n| n >= after.len() as f64),
        || format!("kill switch refusals not counted:\n{}", metrics()),
    );
    let m = metrics();
    assert_eq!(metric(&m, "egress_kill_switch_active{vendor=\"web\"}"), Some(1.0), "{m}");
    assert!(metric(&m, "egress_kill_switch_packets_dropped_total").is_some_and(|n| n >= 1.0), "{m}");
    assert!(audit_kinds(&state).contains(&"kill_switch_block".to_owned()), "{:?}", audit_kinds(&state));
    // Another vendor and undecided destinations are untouched.
    assert!(connects(&env, ADDR4_OTHER, INFRA));
    // A policy reload keeps the kill.
    write_atomic(&env.path("policy.yaml"), &spec_with("monitor", "deny", NOBODY));
    assert!(ok(&agent.admin("reload", &[]), "reload").contains("generation 2"));
    assert!(!connects(&env, ADDR4, WEB), "the kill survives a policy reload:\n{}", agent.log());
    // The reload, the tables and the ring show in the metrics too.
    wait_for(
        Duration::from_secs(12),
        || {
            let m = metrics();
            metric(&m, "egress_policy_reloads_total{result=\"installed\"}") == Some(1.0)
                && metric(&m, "egress_policy_generation") == Some(2.0)
                && metric(&m, "egress_kernel_table_entries{table=\"kills\"}") == Some(1.0)
        },
        || format!("reload or table fill not in the metrics:\n{}", metrics()),
    );
    let m = metrics();
    assert!(metric(&m, "egress_kernel_table_capacity{table=\"flows\"}").is_some_and(|n| n > 0.0), "{m}");
    assert!(metric(&m, "egress_kernel_table_entries{table=\"prefixes_v4\"}").is_some_and(|n| n >= 2.0), "{m}");
    assert!(metric(&m, "egress_ring_lag_seconds").is_some_and(|s| (0.0..5.0).contains(&s)), "{m}");

    // A vendor the policy does not name is refused with the list of those it does.
    let out = agent.admin("block", &["nosuch"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no vendor `nosuch`") && err.contains("other, web"), "{err}");

    ok(&agent.admin("unblock", &["web"]), "unblock web");
    assert!(connects(&env, ADDR4, WEB), "allowed again after unblock:\n{}", agent.log());
    assert!(agent.status()["kill_switch"].as_array().expect("kills").is_empty());
    wait_for(
        Duration::from_secs(3),
        || metric(&metrics(), "egress_kill_switch_active{vendor=\"web\"}").is_none(),
        || format!("kill still shown in the metrics:\n{}", metrics()),
    );
    assert!(audit_kinds(&state).contains(&"kill_switch_unblock".to_owned()));
    drop(web);
}

/// `Child::wait_with_output` by reference, for a child whose stdout was piped.
trait WaitRef {
    fn wait_with_output_ref(&mut self) -> std::process::Output;
}

impl WaitRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> std::process::Output {
        let mut stdout = Vec::new();
        if let Some(mut s) = self.stdout.take() {
            std::io::Read::read_to_end(&mut s, &mut stdout).expect("read stdout");
        }
        let status = self.wait().expect("wait");
        std::process::Output { status, stdout, stderr: Vec::new() }
    }
}

#[test]
fn a_block_survives_an_agent_restart_and_a_timed_one_expires_on_time() {
    let mut env = TestEnv::new("killkeep");
    let _web = env.server("tcp", ADDR4, WEB);
    let state = env.path("state");
    fs::create_dir(&state).expect("state dir");
    let args = ["--state", state.to_str().expect("utf-8"), "--metrics", "off"];
    let mut agent = env.agent_with(&spec("enforce", "allow"), &args);
    ok(&agent.admin("block", &["web"]), "block web");
    assert!(!connects(&env, ADDR4, WEB));
    agent.stop();

    // A new agent enforces the kill from its first decision.
    let mut agent = env.agent_with(&spec("enforce", "allow"), &args);
    assert!(!connects(&env, ADDR4, WEB), "the kill did not survive the restart:\n{}", agent.log());
    let st = agent.status();
    assert_eq!(st["kill_switch"][0]["vendor"], "web", "{st}");
    ok(&agent.admin("unblock", &["web"]), "unblock");
    assert!(connects(&env, ADDR4, WEB));

    // A timed block ends on time, also across a restart.
    // Long enough for a restart on a loaded machine (a debug build verifies its programs for
    // several seconds).
    let out = agent.admin("block", &["web", "--for", "30s"]);
    let blocked_at = Instant::now();
    assert!(ok(&out, "block --for").contains("until 20"), "names the end time");
    assert!(!connects(&env, ADDR4, WEB));
    agent.stop();
    let agent = env.agent_with(&spec("enforce", "allow"), &args);
    let refused = !connects(&env, ADDR4, WEB);
    assert!(blocked_at.elapsed() < Duration::from_secs(29), "the restart took too long for this test to mean anything");
    assert!(refused, "a timed block is still in force after a restart, before its end");
    wait_for(
        Duration::from_secs(35),
        || connects(&env, ADDR4, WEB),
        || format!("the timed block did not end:\n{}", agent.log()),
    );
    let ended = blocked_at.elapsed();
    println!("a 30 s block ended after {:.2} s", ended.as_secs_f64());
    assert!(ended >= Duration::from_secs(30), "ended early: {ended:?}");
    // Each probe is a python client started in the namespace (~0.1-0.3 s): within a second and
    // a half of its end, including the probe that saw it.
    assert!(ended < Duration::from_millis(31_500), "ended late: {ended:?}");
    let rec = agent.wait_event("the kill's end", |e| e["kind"] == "kill_switch" && e["action"] == "expired");
    assert_eq!(rec["vendor"], "web");
    assert!(agent.status()["kill_switch"].as_array().expect("kills").is_empty());
    let kinds = audit_kinds(&state);
    assert!(kinds.contains(&"kill_switch_expired".to_owned()), "{kinds:?}");
    // The audit trail's chain is intact across both restarts, and `audit verify` names each
    // kind of tampering with it.
    let trail = state.join("audit.jsonl");
    let verify = |file: &std::path::Path, extra: &[&str]| {
        Command::new(egress_agent_tests::agent_bin())
            .args(["audit", "verify"])
            .arg(file)
            .args(extra)
            .output()
            .expect("verify")
    };
    ok(&verify(&trail, &[]), "audit verify");
    let lines: Vec<String> = fs::read_to_string(&trail).expect("trail").lines().map(str::to_owned).collect();
    assert!(lines.len() >= 8, "{lines:?}");
    let last_hash = serde_json::from_str::<Value>(&lines[lines.len() - 1]).expect("json")["hash"]
        .as_str()
        .expect("hash")
        .to_owned();
    let tampered = env.path("tampered.jsonl");
    let check = |what: &str, l: Vec<String>, extra: &[&str], expect: &str| {
        fs::write(&tampered, l.iter().map(|x| format!("{x}\n")).collect::<String>()).expect("write");
        let out = verify(&tampered, extra);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!out.status.success() && said.contains(expect), "{what}: {said}");
    };
    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"kind\":\"", "\"kind\":\"x");
    check("edited", edited, &[], ":3: edited");
    let mut deleted = lines.clone();
    deleted.remove(3);
    check("deleted", deleted, &[], "deleted before it");
    let mut inserted = lines.clone();
    inserted.insert(4, lines[2].clone());
    check("inserted", inserted, &[], ":5:");
    let mut reordered = lines.clone();
    reordered.swap(4, 5);
    check("reordered", reordered, &[], ":5:");
    check("tail deleted", lines[..lines.len() - 2].to_vec(), &["--last", &last_hash], "deleted from its end");
    ok(&verify(&trail, &["--last", &last_hash]), "audit verify --last");
}

#[test]
fn block_all_refuses_everything_but_the_infrastructure_allow_rules() {
    let mut env = TestEnv::new("killall");
    let _web = env.server("tcp", ADDR4, WEB);
    let _infra = env.server("tcp", ADDR4_OTHER, INFRA);
    let _open = env.server("tcp", ADDR4_OTHER, OPEN);
    let agent = env.agent_with(&spec("monitor", "allow"), &["--metrics", "off"]);
    assert!(connects(&env, ADDR4, WEB) && connects(&env, ADDR4_OTHER, OPEN));
    let said = ok(&agent.admin("block", &["--all", "--reason", "incident 42"]), "block --all");
    assert!(said.contains("all egress but the infrastructure allow rules"), "{said}");
    assert!(connects(&env, ADDR4_OTHER, INFRA), "the infrastructure rule must keep working:\n{}", agent.log());
    assert!(!connects(&env, ADDR4, WEB), "a vendor is refused");
    assert!(!connects(&env, ADDR4_OTHER, OPEN), "what `default: allow` let through is refused");
    let ev = agent.wait_event("the refused default", |e| {
        e["kind"] == "connect" && e["dst"] == ADDR4_OTHER && e["dport"] == OPEN && e["verdict"] == "deny"
    });
    assert_eq!(ev["reason"], "kill_switch", "{ev}");
    let st = agent.status();
    assert!(st["kill_switch"][0]["vendor"].is_null() && st["kill_switch"][0]["reason"] == "incident 42", "{st}");
    ok(&agent.admin("unblock", &["--all"]), "unblock --all");
    assert!(connects(&env, ADDR4, WEB) && connects(&env, ADDR4_OTHER, OPEN));
}

#[test]
fn status_and_reload_over_the_admin_socket() {
    let mut env = TestEnv::new("status");
    let _web = env.server("tcp", ADDR4, WEB);
    let _open = env.server("tcp", ADDR4_OTHER, OPEN);
    let agent = env.agent_with(&spec("enforce", "deny"), &["--metrics", "off"]);
    assert!(connects(&env, ADDR4, WEB));
    assert!(!connects(&env, ADDR4_OTHER, OPEN));
    let st = agent.status();
    assert_eq!((st["policy"]["name"].as_str(), st["policy"]["mode"].as_str()), (Some("test"), Some("enforce")), "{st}");
    assert_eq!(st["policy"]["generation"], 1);
    // The digest of exactly what was read: each file's path and contents, NUL after each.
    let path = env.path("policy.yaml");
    let digest = || {
        let out = Command::new("python3")
            .args([
                "-c",
                "import hashlib,sys; p=sys.argv[1]; print(hashlib.sha256(p.encode()+b'\\0'+open(p,'rb').read()+b'\\0').hexdigest())",
            ])
            .arg(&path)
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let installed = digest();
    assert_eq!(st["policy"]["sha256"].as_str(), Some(installed.as_str()), "{st}");
    let vendors = st["vendors_last_hour"].as_array().expect("vendors");
    let web = vendors.iter().find(|v| v["vendor"] == "web").unwrap_or_else(|| panic!("{st}"));
    assert_eq!(web["allowed"], 1, "{st}");
    let none = vendors.iter().find(|v| v["vendor"] == "none").unwrap_or_else(|| panic!("{st}"));
    assert_eq!(none["denied"], 1, "{st}");
    let tables = st["tables"].as_array().expect("tables");
    for t in ["rules", "prefixes_v4", "flows", "learnt", "blocks", "kills", "exe_set", "resolvers"] {
        assert!(tables.iter().any(|x| x["table"] == t && x["capacity"].as_u64() > Some(0)), "table {t}: {st}");
    }
    assert!(tables.iter().any(|x| x["table"] == "prefixes_v4" && x["entries"].as_u64() >= Some(2)), "{st}");
    let sinks = st["sinks"].as_array().expect("sinks");
    assert!(
        sinks.iter().any(|k| k["name"] == "events" && k["healthy"] == true && k["written"].as_u64() >= Some(2)),
        "{st}"
    );
    let text = ok(&agent.admin("status", &[]), "status");
    assert!(text.contains("policy   test (enforce mode") && text.contains("kill     none"), "{text}");

    // reload: a new policy is installed, a broken one refused with the reason, the old kept.
    write_atomic(&path, &spec("enforce", "allow"));
    let said = ok(&agent.admin("reload", &[]), "reload");
    assert!(said.contains("installed: generation 2"), "{said}");
    let installed = digest();
    write_atomic(&path, "spec: [\n");
    let out = agent.admin("reload", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(connects(&env, ADDR4_OTHER, OPEN), "generation 2 (default allow) stays in force");
    let st = agent.status();
    assert_eq!(st["policy"]["generation"], 2);
    assert_eq!(
        st["policy"]["sha256"].as_str(),
        Some(installed.as_str()),
        "the digest of the policy in force, not of the refused file"
    );
}

#[test]
fn the_admin_socket_refuses_a_client_that_is_not_root() {
    let env = TestEnv::new("adminuid");
    let agent: Agent = env.agent_with(&spec("monitor", "allow"), &["--metrics", "off"]);
    let mode = fs::metadata(&agent.admin).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "root-only by its mode");
    let probe = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?})\nexcept OSError as e:\n print('connect', e.errno); sys.exit(0)\ns.sendall(b'{{\"verb\":\"block\",\"all\":true}}\\n')\nprint(s.makefile().readline().strip())\n",
        agent.admin.display().to_string()
    );
    let as_nobody = || {
        let out = Command::new("setpriv")
            // The system's python: a python3 on PATH may live under /root, out of uid 65534's reach.
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", &probe])
            .output()
            .expect("setpriv");
        assert!(out.status.success(), "probe failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(as_nobody(), format!("connect {}", libc::EACCES), "the file mode refuses uid 65534");
    // Even with the mode loosened by hand, the peer's credentials are checked.
    fs::set_permissions(&agent.admin, fs::Permissions::from_mode(0o666)).expect("chmod");
    let answer: Value = serde_json::from_str(&as_nobody()).expect("a JSON answer");
    assert_eq!(answer["ok"], false);
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("uid 65534 is not root")), "{answer}");
    assert!(agent.status()["kill_switch"].as_array().expect("kills").is_empty(), "nothing was blocked");
    assert!(agent.log().contains("refused a client that is not root"));
}
