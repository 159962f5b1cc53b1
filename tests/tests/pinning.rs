//! Kernel tests of the pinned datapath: an agent killed under a connection loop changes no
//! verdict while it is down nor when the next agent adopts the datapath; a deliberate stop
//! detaches everything (fail-open) or leaves the policy enforcing (fail-closed) until
//! `uninstall`; an upgrade across a map-layout change swaps without a wrong verdict; addresses
//! learnt from DNS keep their meaning across an adoption.

use std::{path::Path, process::Command, thread::sleep, time::Duration};

use egress_agent_tests::{agent_bin, pin_dir_of, policy, py, wait_for, TestEnv, ADDR4, DNS4};
use serde_json::Value;

const OK: u16 = 8080;
const DENIED: u16 = 8081;

fn spec() -> String {
    policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      owner: test\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{OK}]\n      protocols: [tcp]\n"
    ))
}

fn setup(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    env.server("tcp", ADDR4, OK);
    env.server("tcp", ADDR4, DENIED);
    env
}

/// Starts tests/py/loop.py for `seconds` in the watched cgroup.
fn start_loop(env: &TestEnv, seconds: u32) -> std::process::Child {
    env.in_cgroup("python3", &[&py("loop.py"), ADDR4, &OK.to_string(), &DENIED.to_string(), &seconds.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("loop")
}

fn no_wrong_verdict(looper: std::process::Child, what: &str) -> Value {
    let out = looper.wait_with_output().expect("loop");
    let res: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("loop output {out:?}: {e}"));
    assert!(res["attempts"].as_u64().is_some_and(|n| n > 100), "{what}: {res}");
    assert_eq!(res["ok_refused"], 0, "{what}: an allowed connection was refused: {res}");
    assert_eq!(res["denied_passed"], 0, "{what}: a denied connection passed: {res}");
    assert_eq!(res["errors"], Value::Array(vec![]), "{what}: {res}");
    res
}

fn passes(env: &TestEnv, port: u16) -> bool {
    env.client("tcp", ADDR4, port)["ok"] == true
}

fn now_utc() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S"]).output().expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn layouts(pins: &Path) -> Vec<String> {
    std::fs::read_dir(pins)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("layout-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_agent_killed_under_a_connection_loop_changes_no_verdict_and_the_next_adopts_the_datapath() {
    let env = setup("pin-kill");
    let mut first = env.agent(&spec());
    // Long enough to go on well after the next agent adopted the datapath (loading the
    // programs takes a few seconds, more on a busy machine).
    let looper = start_loop(&env, 25);
    let started = std::time::Instant::now();
    sleep(Duration::from_secs(2));
    first.signal(libc::SIGKILL);
    let killed_at = now_utc();
    first.stop();
    // Down for two seconds: the pinned programs go on deciding.
    sleep(Duration::from_secs(2));
    assert!(!passes(&env, DENIED) && passes(&env, OK), "enforcement stopped with the agent");
    sleep(Duration::from_millis(1500));
    let second_started = now_utc();
    let second = env.agent(&spec());
    assert!(started.elapsed() < Duration::from_secs(20), "the loop must outlast the adoption by a few seconds");
    let log = second.log();
    assert!(log.contains("adopting the pinned datapath"), "{log}");
    assert!(log.contains("swapped this agent's programs into the pinned links"), "{log}");
    assert!(log.contains("generation=2"), "the generations go on: {log}");
    // The events the kernel wrote while no agent ran are read by the next one.
    let while_down = || {
        second
            .events()
            .iter()
            .filter(|e| e["kind"] == "connect" && e["dport"] == DENIED)
            .filter(|e| {
                e["ts"]
                    .as_str()
                    .and_then(|t| t.get(..19))
                    .is_some_and(|s| s > killed_at.as_str() && s < second_started.as_str())
            })
            .count()
    };
    wait_for(
        Duration::from_secs(10),
        || while_down() > 0,
        || {
            format!(
                "no event from while the agent was down (killed {killed_at}, restarted {second_started}):\n{}",
                second.log()
            )
        },
    );
    let res = no_wrong_verdict(looper, "kill and adoption");
    println!("{res}");
}

#[test]
fn fail_closed_keeps_enforcing_after_a_stop_until_uninstall_and_fail_open_detaches() {
    let env = setup("pin-modes");
    let pins = pin_dir_of(&env.dir);
    // Fail-open (the default): a deliberate stop removes everything.
    let mut agent = env.agent(&spec());
    assert!(!passes(&env, DENIED));
    agent.stop();
    assert!(passes(&env, DENIED), "fail-open: nothing refuses after a stop");
    assert!(!pins.exists(), "fail-open: nothing stays pinned");

    // Fail-closed: the policy stays in force with no agent.
    let mut agent = env.agent_with(&spec(), &["--fail-mode", "closed"]);
    // While an agent runs with the datapath, uninstall is refused.
    let out = Command::new(agent_bin()).args(["uninstall", "--pin-dir"]).arg(&pins).output().expect("uninstall");
    assert!(!out.status.success(), "uninstall while an agent runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"), "{out:?}");
    agent.stop();
    assert!(agent.log().contains("fail-closed stop"), "{}", agent.log());
    assert!(!passes(&env, DENIED) && passes(&env, OK), "fail-closed: the last policy still enforces");
    let out = Command::new(agent_bin()).args(["uninstall", "--pin-dir"]).arg(&pins).output().expect("uninstall");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("removed") && said.contains("connect4"), "{said}");
    assert!(passes(&env, DENIED), "uninstall detached the programs");
    assert!(!pins.exists());
    let out = Command::new(agent_bin()).args(["uninstall", "--pin-dir"]).arg(&pins).output().expect("uninstall");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("nothing pinned"));
}

#[test]
fn an_upgrade_across_a_map_layout_change_swaps_without_a_wrong_verdict() {
    let env = setup("pin-layout");
    let pins = pin_dir_of(&env.dir);
    let mut first = env.agent_with(&spec(), &["--fail-mode", "closed"]);
    let looper = start_loop(&env, 8);
    sleep(Duration::from_secs(2));
    first.stop();
    let before = layouts(&pins);
    assert_eq!(before.len(), 1, "{before:?}");
    // Another ring size is another layout: fresh maps, then the programs swapped in.
    let second = env.agent_with(&spec(), &["--ring-bytes", "1048576"]);
    let log = second.log();
    assert!(log.contains("a datapath of another layout is pinned"), "{log}");
    assert!(log.contains("swapped this agent's programs into the pinned links"), "{log}");
    no_wrong_verdict(looper, "layout change");
    let after = layouts(&pins);
    assert_eq!(after.len(), 1, "the old layout's maps are removed: {after:?}");
    assert_ne!(after, before);
}

#[test]
fn addresses_learnt_from_dns_keep_their_meaning_across_an_adoption() {
    learnt_addresses_survive("pin-dns", &[]);
}

#[test]
fn addresses_learnt_from_dns_keep_their_meaning_across_a_layout_change() {
    // Another ring size is another layout: the learnt tables and the ids' names are carried over.
    learnt_addresses_survive("pin-dns-layout", &["--ring-bytes", "1048576"]);
}

fn learnt_addresses_survive(name: &str, second_extra: &[&str]) {
    let mut env = TestEnv::new(name);
    let _dns = env.dns(Path::new(env!("CARGO_BIN_EXE_ea-dns-server")), 300);
    env.server("tcp", "::", 443);
    // Two domain vendors; the next agent's policy adds a third whose pattern sorts first, so that
    // ids assigned afresh would give alpha's id to it (reserved to no process).
    let vendors = |with_aaa: bool| {
        let aaa = "    - {name: aaa, destinations: [{domain: \"*.aaa.test\"}], ports: [443], protocols: [tcp], processes: [{exe: /nonexistent/x}]}\n";
        let alpha = "    - {name: alpha, destinations: [{domain: \"*.alpha.test\"}], ports: [443], protocols: [tcp]}\n";
        let beta = "    - {name: beta, destinations: [{domain: \"*.beta.test\"}], ports: [443], protocols: [tcp], processes: [{exe: /nonexistent/x}]}\n";
        let first = if with_aaa { aaa } else { "" };
        policy(&format!(
            "  mode: enforce\n  default: deny\n  allow:\n    - {{name: resolver, cidr: {DNS4}/32, ports: [53], protocols: [udp, tcp]}}\n  vendors:\n{first}{alpha}{beta}"
        ))
    };
    let client = |args: &[&str]| -> Value {
        let script = py("dns_client.py");
        let mut all = vec![script.as_str()];
        all.extend_from_slice(args);
        let out = env.in_cgroup("python3", &all).output().expect("dns client");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{out:?}: {e}"))
    };
    let mut first = env.agent(&vendors(false));
    let alpha = client(&["resolve", "a.alpha.test"])["addr"].as_str().expect("addr").to_owned();
    let beta = client(&["resolve", "b.beta.test"])["addr"].as_str().expect("addr").to_owned();
    assert_eq!(client(&["connect", &alpha, "443"])["errno"], 0);
    assert_ne!(client(&["connect", &beta, "443"])["errno"], 0, "beta is reserved to another executable");
    first.signal(libc::SIGKILL);
    first.stop();
    assert_eq!(
        client(&["connect", &alpha, "443"])["errno"],
        0,
        "the learnt address is still allowed while no agent runs"
    );
    // The adopted ids keep each address with its own pattern.
    let second = env.agent_with(&vendors(true), second_extra);
    assert_eq!(
        client(&["connect", &alpha, "443"])["errno"],
        0,
        "alpha's address after the adoption:\n{}\n{:?}",
        second.log(),
        second
            .events()
            .iter()
            .map(|e| format!(
                "{} {} {} {} {} {}",
                e["ts"], e["kind"], e["verdict"], e["reason"], e["rule"], e["domain_rule"]
            ))
            .collect::<Vec<_>>()
    );
    assert_ne!(client(&["connect", &beta, "443"])["errno"], 0, "beta's address after the adoption");
    let fresh = client(&["rounds", "n{}.alpha.test", "2", "443", "4"]);
    assert_eq!(fresh["ok"], 2, "{fresh}");
}

#[test]
fn without_any_policy_bundle_a_new_agent_leaves_the_pinned_policy_enforcing() {
    let env = setup("pin-nobundle");
    let mut first = env.agent_with(&spec(), &["--fail-mode", "closed"]);
    first.stop();
    assert!(!passes(&env, DENIED), "fail-closed: still enforcing");
    // A central source that cannot be reached, no cache: the embedded default (monitor mode)
    // must not replace the pinned policy.
    let mut second = egress_agent_tests::Agent::spawn(
        &agent_bin(),
        Path::new(""),
        &env.cgroup,
        &env.dir,
        &["--policy", "https://127.0.0.1:9/bundle.json", "--policy-timeout", "1s", "--metrics", "off"],
        &egress_agent_tests::Launch::default(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while second.exited().is_none() {
        assert!(std::time::Instant::now() < deadline, "the agent did not stop:\n{}", second.log());
        sleep(Duration::from_millis(100));
    }
    assert!(second.log().contains("a pinned datapath enforces the previous policy"), "{}", second.log());
    assert!(!passes(&env, DENIED) && passes(&env, OK), "the pinned policy still decides");
}

#[test]
fn a_kill_in_force_stays_in_force_when_an_agent_without_a_kept_list_adopts_the_datapath() {
    let env = setup("pin-kill-switch");
    // No --state: the kill list is not kept on disk.
    let mut first = env.agent(&spec());
    assert!(first.admin("block", &["web"]).status.success());
    assert!(!passes(&env, OK));
    first.signal(libc::SIGKILL);
    first.stop();
    assert!(!passes(&env, OK), "the kill holds while no agent runs");
    let second = env.agent(&spec());
    assert!(!passes(&env, OK), "an adopting agent must not lift the kill:\n{}", second.log());
    let st = second.status();
    assert_eq!(st["kill_switch"][0]["vendor"], "web", "{st}");
    assert!(second.log().contains("it stays in force"), "{}", second.log());
    assert!(second.admin("unblock", &["web"]).status.success());
    assert!(passes(&env, OK));
}

/// A flow open across a fail-closed restart goes on being counted and reported by the agent
/// that adopts the datapath: the kill switch still cuts it, and its end record names the
/// process and covers the bytes sent after the restart.
#[test]
fn open_flows_continue_across_a_restart_and_the_kill_switch_still_cuts_them() {
    const LIVE: u16 = 8082;
    let mut env = setup("pin-flows");
    let live = env.server("lines", ADDR4, LIVE);
    let state = env.path("state");
    std::fs::create_dir(&state).expect("state dir");
    let spec = policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      owner: test\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{OK}, {LIVE}]\n      protocols: [tcp]\n"
    ));
    let args = ["--fail-mode", "closed", "--state", state.to_str().expect("utf-8")];
    let mut first = env.agent_with(&spec, &args);
    // One live connection sending a line every round (and a new connection to OK each round).
    let looping = env
        .in_cgroup("python3", &[&py("kill_loop.py"), ADDR4, &OK.to_string(), &LIVE.to_string(), "12"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("loop");
    wait_for(Duration::from_secs(10), || live.lines().len() > 5, || "the live connection carries nothing".into());
    first.stop();
    let stopped = first
        .events()
        .into_iter()
        .find(|e| e["kind"] == "flow" && e["dport"] == LIVE && e["state"] == "stopped")
        .unwrap_or_else(|| panic!("no `stopped` flow record of the live connection:\n{}", first.log()));
    assert!(state.join("open-flows.json").exists(), "{}", first.log());

    let second = env.agent_with(&spec, &args);
    let log = second.log();
    let resumed = log
        .lines()
        .find(|l| l.contains("open flows and automated blocks of the adopted datapath"))
        .unwrap_or_default()
        .to_owned();
    assert!(resumed.contains("resumed=") && !resumed.contains("resumed=0"), "{log}");
    assert!(!state.join("open-flows.json").exists(), "the kept flows are read once");
    let before_block = live.lines().len();
    sleep(Duration::from_millis(1500));
    assert!(live.lines().len() > before_block, "the live connection goes on through the restart");
    let out = second.admin("block", &["web", "--reason", "test"]);
    assert!(out.status.success(), "{out:?}");
    sleep(Duration::from_millis(500));
    let at_block = live.lines().len();
    let out = looping.wait_with_output().expect("loop");
    assert!(out.status.success());
    assert_eq!(live.lines().len(), at_block, "the kill switch cut the live flow the new agent resumed");
    // The flow ends (the loop exited): the new agent reports it, named, with the bytes after
    // the restart.
    let cookie = stopped["cookie"].clone();
    let end = second.wait_event("the end of the live flow", |e| {
        e["kind"] == "flow" && e["cookie"] == cookie && e["state"] == "end"
    });
    assert_eq!(end["pid"], stopped["pid"], "{end}");
    assert!(end["exe"].as_str().is_some_and(|x| x.contains("python")), "{end}");
    assert!(end["bytes_out"].as_u64() > stopped["bytes_out"].as_u64(), "{end}\n{stopped}");
    assert_eq!((end["vendor"].as_str(), end["verdict"].as_str()), (Some("web"), Some("allow")), "{end}");
}

/// Ping sockets stay decided while no agent runs and after the next one adopts the datapath:
/// `skb_egress` hands their packets to `skb_dgram` through a program array, whose entries the
/// kernel clears once nothing holds it (it is pinned), and their creators are in pinned socket
/// storage. A socket opened under the first agent keeps its creator for the second.
#[test]
fn ping_sockets_stay_decided_while_no_agent_runs_and_across_an_adoption() {
    use egress_agent_tests::ADDR4_OTHER;
    let env = setup("pin-ping");
    env.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    let python = egress_agent_tests::realpath_of("/usr/bin/python3").display().to_string();
    let spec = policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: probe\n      owner: test\n      destinations: [{{cidr: {ADDR4}}}]\n      protocols: [icmp]\n      processes: [{{exe: {python}}}]\n"
    ));
    let py_path = py("dgram.py");
    let ping = |addr: &str, hold: Option<&str>| {
        let mut args = vec![python.as_str(), &py_path, "ping-sendto", addr, "0", "1"];
        if let Some(h) = hold {
            args.push(h);
        }
        env.in_cgroup(args[0], &args[1..]).stdout(std::process::Stdio::piped()).spawn().expect("dgram.py")
    };
    let result = |child: std::process::Child| -> Value {
        let out = child.wait_with_output().expect("dgram.py");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{out:?}: {e}"))
    };
    let mut first = env.agent(&spec);
    // Opened under the first agent, used under the second.
    let holds = [env.path("hold-ok"), env.path("hold-other")];
    let held: Vec<_> = [ADDR4, ADDR4_OTHER]
        .iter()
        .zip(&holds)
        .map(|(addr, h)| {
            let child = ping(addr, Some(&h.display().to_string()));
            wait_for(Duration::from_secs(10), || h.exists(), || "the held socket was not created".into());
            child
        })
        .collect();
    first.signal(libc::SIGKILL);
    first.stop();
    // No agent: the pinned programs decide, new sockets are recorded.
    let r = result(ping(ADDR4, None));
    assert_eq!(r["ok"], true, "allowed ping with no agent running: {r}");
    let r = result(ping(ADDR4_OTHER, None));
    assert_eq!(r["errno"], libc::EPERM, "denied ping with no agent running: {r}");
    let second = env.agent(&spec);
    assert!(second.log().contains("adopting the pinned datapath"), "{}", second.log());
    for h in &holds {
        std::fs::write(format!("{}.go", h.display()), "").expect("go");
    }
    let mut held = held.into_iter();
    let (ok, other) = (result(held.next().expect("ok")), result(held.next().expect("other")));
    assert_eq!(ok["ok"], true, "a socket opened under the first agent, allowed: {ok}\n{}", second.log());
    assert_eq!(other["errno"], libc::EPERM, "a socket opened under the first agent, denied: {other}");
}
