//! Kernel tests of what the agent learns: `learn` over real traffic (names through the test
//! resolver) proposes a policy `check` accepts and that, enforced, lets the same traffic through
//! and reports a new destination; with `--state`, the inventory it keeps is what `inventory`
//! prints; after a baseline of small requests, a large upload is flagged and, where the vendor
//! opts in, its process is blocked from the vendor until the cool-down ends.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use egress_agent_tests::{agent_bin, policy, wait_for, TestEnv, ADDR4, DNS4};
use serde_json::Value;

const PORT: u16 = 443;

fn dns_server_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ea-dns-server"))
}

/// The traffic of the service being learnt: two Stripe names, an address without a name.
fn service_traffic(env: &TestEnv) -> Vec<Value> {
    vec![
        env.py_client("dns_client.py", &["rounds", "api.stripe.com", "3", "443", "4"]),
        env.py_client("dns_client.py", &["rounds", "files.stripe.com", "2", "443", "4"]),
        env.py_client("dns_client.py", &["connect", ADDR4, "443"]),
    ]
}

#[test]
fn learn_proposes_a_policy_check_accepts_and_enforcing_it_passes_the_same_traffic() {
    let mut env = TestEnv::new("learn");
    env.dns(dns_server_bin(), 300);
    env.server("tcp", "::", PORT);
    let out = env.path("learned.yaml");
    let log = env.path("learn.log");
    let mut learn = Command::new(agent_bin())
        .args(["learn", "--duration", "10s", "--name", "checkout"])
        .arg("--cgroup")
        .arg(&env.cgroup)
        .arg("--out")
        .arg(&out)
        .env("EGRESS_AGENT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start learn");
    wait_for(
        Duration::from_secs(30),
        || fs::read_to_string(&log).unwrap_or_default().contains("egress-agent ready"),
        || format!("learn did not start:\n{}", fs::read_to_string(&log).unwrap_or_default()),
    );
    for r in service_traffic(&env) {
        // Monitor mode: nothing is refused while learning.
        assert!(r["n_refused"].as_u64().unwrap_or(0) == 0 && r["errno"].as_i64().unwrap_or(0) == 0, "{r}");
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = learn.try_wait().expect("wait") {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "learn did not finish");
        sleep(Duration::from_millis(100));
    };
    let learn_log = fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "learn failed:\n{learn_log}");
    let text = fs::read_to_string(&out).unwrap_or_else(|e| panic!("no proposal ({e}):\n{learn_log}"));
    for want in ["name: \"checkout\"", "stripe-com", "api.stripe.com", "files.stripe.com", ADDR4, DNS4, "owner: \"\""] {
        assert!(text.contains(want), "the proposal lacks `{want}`:\n{text}");
    }
    let py_exe = egress_agent_tests::python_exe();
    assert!(text.contains(&py_exe), "the proposal names the process ({py_exe}):\n{text}");

    // `check` accepts it (warning only about the owners to fill in).
    let check = Command::new(agent_bin()).arg("check").arg(&out).output().expect("check");
    let check_out = String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "check refused the proposal:\n{check_out}\n{text}");
    assert!(check_out.contains("has no owner"), "check should ask for owners:\n{check_out}");

    // Enforced: the same traffic passes, by the learnt vendor; a new destination is reported.
    let enforced = text.replace("mode: monitor", "mode: enforce");
    assert_ne!(enforced, text, "the proposal should say `mode: monitor`:\n{text}");
    let agent = env.agent(&enforced);
    for r in service_traffic(&env) {
        assert!(r["n_refused"].as_u64().unwrap_or(0) == 0 && r["errno"].as_i64().unwrap_or(0) == 0, "{r}\n{text}");
    }
    let stripe = agent.wait_event("an allowed connection to api.stripe.com", |e| {
        e["kind"] == "connect" && e["domain"] == "api.stripe.com"
    });
    assert_eq!(stripe["verdict"], "allow", "{stripe}\n{text}");
    assert_eq!(stripe["vendor"], "stripe-com", "{stripe}");
    let bare = agent.wait_event("the connection without a name", |e| e["kind"] == "connect" && e["dst"] == ADDR4);
    assert_eq!(bare["verdict"], "allow", "{bare}\n{text}");
    let r = env.py_client("dns_client.py", &["rounds", "api.newvendor.io", "1", "443", "4"]);
    assert_eq!(r["ok"], 1, "{r}");
    let new = agent.wait_event("the new destination", |e| e["kind"] == "connect" && e["domain"] == "api.newvendor.io");
    assert_eq!(new["verdict"], "alert", "{new}");
}

#[test]
fn state_keeps_the_inventory_across_restarts_and_inventory_prints_it() {
    let mut env = TestEnv::new("inventory");
    env.dns(dns_server_bin(), 300);
    env.server("tcp", "::", PORT);
    let state = env.path("state");
    fs::create_dir_all(&state).expect("state dir");
    let text = policy(&format!(
        "  mode: enforce
  default: alert
  allow:
    - {{name: resolver, cidr: {DNS4}/32, ports: [53], protocols: [udp]}}
  vendors:
    - name: stripe
      owner: payments
      destinations: [{{domain: \"*.stripe.com\"}}]
      ports: [443]
      protocols: [tcp]
    - name: unused
      destinations: [{{cidr: 192.0.2.0/24}}]
"
    ));
    let state_arg = state.display().to_string();
    let mut agent = env.agent_with(&text, &["--state", &state_arg]);
    service_traffic(&env);
    agent.wait_event("a flow", |e| e["kind"] == "flow" && e["domain"] == "api.stripe.com");
    agent.stop();
    assert!(state.join("inventory.json").is_file() && state.join("baselines.json").is_file(), "state saved at stop");
    let policy_path = env.path("policy.yaml");
    let inv = Command::new(agent_bin())
        .args(["inventory", "--format", "json", "--state"])
        .arg(&state)
        .arg("--policy")
        .arg(&policy_path)
        .output()
        .expect("inventory");
    assert!(inv.status.success(), "{}", String::from_utf8_lossy(&inv.stderr));
    let report: Value = serde_json::from_slice(&inv.stdout).expect("inventory json");
    let s = report.to_string();
    assert!(s.contains("api.stripe.com") && s.contains("approved"), "{report:#}");
    assert!(s.contains(ADDR4) && s.contains("unapproved"), "{report:#}");
    assert!(s.contains("unused"), "a vendor nobody used is listed as stale: {report:#}");

    // Restarted on the same state: what was known is still there, and grows.
    let agent = env.agent_with(&text, &["--state", &state_arg]);
    env.py_client("dns_client.py", &["rounds", "api.github.com", "1", "443", "4"]);
    agent.wait_event("a flow", |e| e["kind"] == "flow" && e["domain"] == "api.github.com");
    drop(agent);
    wait_for(
        Duration::from_secs(10),
        || fs::read_to_string(state.join("inventory.json")).is_ok_and(|t| t.contains("github.com")),
        || "the restarted agent did not save its inventory".to_owned(),
    );
    let t = fs::read_to_string(state.join("inventory.json")).expect("inventory");
    assert!(t.contains("api.stripe.com"), "the first run's inventory survived the restart: {t}");
}

const BULK: u16 = 7000;

/// The vendor `bulk` (ADDR4:BULK), blocked for `block` (`6s`) on a volume spike.
fn spike_policy(block: &str) -> String {
    policy(&format!(
        "  mode: enforce
  default: deny
  baseline: {{interval: 2s, warmup: 4s, cooldown: 60s, minBytes: 1MiB, offHours: false}}
  vendors:
    - name: bulk
      owner: tests
      destinations: [{{cidr: {ADDR4}}}]
      ports: [{BULK}]
      protocols: [tcp]
      response: {{on: [volume_spike], action: block, for: {block}}}
"
    ))
}

/// One small request to the vendor.
fn small(env: &TestEnv) -> Value {
    env.py_client("bulk.py", &["tcp", ADDR4, &BULK.to_string(), "2000", "100"])
}

/// A baseline of small requests, then 50 MB at once: flagged and blocked.
fn baseline_then_spike(env: &TestEnv, agent: &egress_agent_tests::Agent) {
    let small = || small(env);
    // The baseline: small requests every half second for 12 s (six 2 s intervals).
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let r = small();
        assert_eq!(r["ok"], true, "{r}");
        sleep(Duration::from_millis(500));
    }
    assert!(
        !agent.events().iter().any(|e| e["kind"] == "anomaly"),
        "ordinary small requests were flagged: {:#?}",
        agent.events().iter().filter(|e| e["kind"] == "anomaly").collect::<Vec<_>>()
    );
    // 50 MB out at once.
    let r = env.py_client("bulk.py", &["tcp", ADDR4, &BULK.to_string(), "50000000", "0"]);
    assert_eq!(r["ok"], true, "the upload itself is not cut: {r}");
    let a = agent.wait_event("a volume spike", |e| e["kind"] == "anomaly" && e["anomaly"] == "volume_spike");
    assert_eq!(a["vendor"], "bulk", "{a}");
    assert_eq!(a["action"], "block", "{a}");
    assert!(a["observed"].as_f64().expect("observed") >= 50e6, "{a}");
    assert!(a["threshold"].as_f64().expect("threshold") < 50e6, "{a}");
    agent.wait_event("the block starting", |e| e["kind"] == "response" && e["state"] == "start");
}

#[test]
fn a_volume_spike_after_a_baseline_of_small_requests_is_flagged_and_blocked_for_its_cool_down() {
    let mut env = TestEnv::new("spike");
    env.bulk_server("tcp", ADDR4, BULK);
    let state = env.path("state");
    fs::create_dir_all(&state).expect("state dir");
    let text = spike_policy("6s");
    let agent = env.agent_with(&text, &["--state", &state.display().to_string()]);
    let small = || small(&env);
    baseline_then_spike(&env, &agent);
    let blocked_at = Instant::now();
    // A reload (a new generation, with an extra rule) keeps the block.
    let reloaded = text.replace(
        "  vendors:\n",
        &format!("  allow:\n    - {{name: extra, cidr: {DNS4}/32, ports: [53]}}\n  vendors:\n"),
    );
    assert_ne!(reloaded, text);
    egress_agent_tests::write_atomic(&env.path("policy.yaml"), &reloaded);
    wait_for(
        Duration::from_secs(5),
        || agent.log().contains("generation=2"),
        || format!("the edited policy was not installed:\n{}", agent.log()),
    );
    // The next connection of that executable to the vendor is refused in the kernel.
    let r = small();
    assert_eq!(r["ok"], false, "not blocked: {r}");
    assert_eq!(r["errno"], 1, "EPERM expected: {r}");
    let pid = r["pid"].as_u64().expect("pid");
    let refused = agent.wait_event("the refused attempt", |e| e["kind"] == "connect" && e["pid"] == pid);
    assert_eq!((refused["verdict"].as_str(), refused["blocked"].as_bool()), (Some("deny"), Some(true)), "{refused}");
    // Still refused late in the cool-down ...
    sleep(Duration::from_secs(4).saturating_sub(blocked_at.elapsed()));
    let r = small();
    assert_eq!((r["ok"].as_bool(), r["errno"].as_u64()), (Some(false), Some(1)), "the block lifted early: {r}");
    // ... and not after it, even with the agent frozen: the kernel checks the block's end itself.
    agent.signal(libc::SIGSTOP);
    sleep(Duration::from_millis(6500).saturating_sub(blocked_at.elapsed()));
    let r = small();
    agent.signal(libc::SIGCONT);
    assert_eq!(r["ok"], true, "still blocked after the cool-down, with the agent stopped: {r}");
    agent.wait_event("the block ending", |e| e["kind"] == "response" && e["state"] == "end");
    let r = small();
    assert_eq!(r["ok"], true, "still blocked after the cool-down: {r}");
    drop(agent);

    // The audit trail has it all, chained; an edited copy is caught at the edited record.
    let trail = state.join("audit.jsonl");
    let text = fs::read_to_string(&trail).expect("audit trail");
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("record")["kind"].as_str().expect("kind").to_owned())
        .collect();
    assert_eq!(kinds, ["agent_start", "block_start", "policy_installed", "block_end", "agent_stop"], "{text}");
    let verify = |f: &Path| Command::new(agent_bin()).args(["audit", "verify"]).arg(f).output().expect("audit verify");
    let ok = verify(&trail);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("5 records, chain intact"), "{ok:?}");
    let edited = env.path("edited.jsonl");
    fs::write(&edited, text.replacen("\"seconds\":6", "\"seconds\":600", 1)).expect("write");
    let bad = verify(&edited);
    let out = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(out.contains(":2: edited"), "{out}");
}

/// A block started by one agent is still in force after a fail-closed restart, and the agent
/// that adopted the datapath reports its end.
#[test]
fn an_automated_block_outlives_a_restart_and_the_next_agent_reports_its_end() {
    let mut env = TestEnv::new("spike-restart");
    env.bulk_server("tcp", ADDR4, BULK);
    let state = env.path("state");
    fs::create_dir_all(&state).expect("state dir");
    let args = ["--state", state.to_str().expect("utf-8"), "--fail-mode", "closed"];
    // Long enough to outlast a restart (a debug build loads its programs in about 5 s).
    let mut first = env.agent_with(&spike_policy("15s"), &args);
    baseline_then_spike(&env, &first);
    let blocked_at = Instant::now();
    first.stop();
    let second = env.agent_with(&spike_policy("15s"), &args);
    assert!(second.log().contains("blocks=1"), "{}", second.log());
    let r = small(&env);
    assert_eq!(
        (r["ok"].as_bool(), r["errno"].as_u64()),
        (Some(false), Some(1)),
        "the block lifted with the restart: {r}"
    );
    sleep(Duration::from_secs(14).saturating_sub(blocked_at.elapsed()));
    let end = second.wait_event("the block ending", |e| e["kind"] == "response" && e["state"] == "end");
    assert!(blocked_at.elapsed() >= Duration::from_secs(14), "ended early: {end}");
    assert_eq!((end["vendor"].as_str(), end["anomaly"].as_str()), (Some("bulk"), Some("volume_spike")), "{end}");
    assert_eq!(small(&env)["ok"], true, "lifted at its end");
    assert_eq!(second.status()["blocks"], serde_json::json!([]), "no block left in status");
}
