//! Kernel tests of flows: bytes counted in the kernel match known transfers, an unconnected UDP
//! socket's datagrams to one place are one flow, refusals are folded with a count, and a full
//! flow table reports and evicts its oldest flows.

use egress_agent_tests::{policy, TestEnv, ADDR4, ADDR6};
use serde_json::Value;

const TCP: u16 = 7000;
const UDP: u16 = 7001;
const UDP_DENIED: u16 = 7002;

fn spec() -> String {
    policy(&format!(
        "  mode: enforce
  default: deny
  vendors:
    - name: bulk
      owner: tests
      destinations: [{{cidr: {ADDR4}}}, {{cidr: \"{ADDR6}\"}}]
      ports: [{TCP}, {UDP}]
      protocols: [tcp, udp]
"
    ))
}

fn flow_of(agent: &egress_agent_tests::Agent, pid: u64, dport: u16) -> Value {
    agent.wait_event(&format!("flow of pid {pid} to port {dport}"), |e| {
        e["kind"] == "flow" && e["pid"] == pid && e["dport"] == dport && e["state"] == "end"
    })
}

/// An RFC 3339 UTC time as something that orders like the time (the fraction has no fixed length).
fn ts_key(v: &Value) -> (String, u64) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let (whole, frac) = s.trim_end_matches('Z').split_once('.').unwrap_or((s.trim_end_matches('Z'), "0"));
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().expect("fraction");
    (whole.to_owned(), nanos)
}

fn within_1pct(what: &str, counted: &Value, actual: u64) {
    let c = counted.as_u64().unwrap_or_else(|| panic!("{what}: not a number: {counted}"));
    let diff = c.abs_diff(actual) as f64;
    assert!(diff <= actual as f64 * 0.01, "{what}: counted {c}, transferred {actual}");
}

#[test]
fn bytes_of_known_transfers_match_both_ways_tcp_and_udp() {
    let mut env = TestEnv::new("flowbytes");
    for addr in [ADDR4, ADDR6] {
        env.bulk_server("tcp", addr, TCP);
        env.bulk_server("udp", addr, UDP);
    }
    let agent = env.agent(&spec());
    for addr in [ADDR4, ADDR6] {
        // TCP: 3 MB up, 2 MB down.
        let r = env.py_client("bulk.py", &["tcp", addr, &TCP.to_string(), "3000000", "2000000"]);
        assert_eq!(r["ok"], true, "{r}");
        let pid = r["pid"].as_u64().expect("pid");
        let f = flow_of(&agent, pid, TCP);
        // The kernel counts what went out, so a retransmission (rare, even on loopback) counts
        // twice, as it does in the socket's own tcp_info: the two must agree within 1 %.
        let (sent, wire) = (r["sent"].as_u64().expect("sent"), r["wire_sent"].as_u64().expect("wire_sent"));
        assert!(wire >= sent, "tcp_info says fewer bytes went out than were written: {r}");
        within_1pct(&format!("tcp {addr} bytes_out"), &f["bytes_out"], wire);
        within_1pct(&format!("tcp {addr} bytes_in"), &f["bytes_in"], r["received"].as_u64().expect("received"));
        assert_eq!(r["received"], 2_000_000, "{r}");
        assert_eq!(f["vendor"], "bulk", "{f}");
        assert_eq!(f["verdict"], "allow", "{f}");
        assert_eq!(f["dst"], addr, "{f}");
        assert!(f["packets_out"].as_u64().expect("packets") > 0, "{f}");
        assert!(f["start"].is_string() && f["end"].is_string(), "{f}");
        // The flow record joins the connect record by cookie.
        let c = agent.wait_event("connect", |e| e["kind"] == "connect" && e["pid"] == pid);
        assert_eq!(c["cookie"], f["cookie"], "{c}\n{f}");

        // UDP, connected and not: 400 datagrams of 1,000 bytes, echoed.
        for mode in ["connect", "sendto"] {
            let r = env.py_client("bulk.py", &["udp", addr, &UDP.to_string(), "400", "1000", mode]);
            assert_eq!(r["ok"], true, "{r}");
            let pid = r["pid"].as_u64().expect("pid");
            let f = flow_of(&agent, pid, UDP);
            within_1pct(&format!("udp {mode} {addr} bytes_out"), &f["bytes_out"], 400_000);
            within_1pct(
                &format!("udp {mode} {addr} bytes_in"),
                &f["bytes_in"],
                r["received"].as_u64().expect("received"),
            );
            assert_eq!(f["packets_out"], 400, "{f}");
            assert!(r["received"].as_u64().expect("received") >= 396_000, "echoes lost: {r}");
        }
    }
}

#[test]
fn one_unconnected_socket_to_one_destination_is_one_flow_not_one_event_per_datagram() {
    let mut env = TestEnv::new("flowspray");
    env.bulk_server("udp", ADDR4, UDP);
    let agent = env.agent(&spec());
    let r = env.py_client("bulk.py", &["spray", ADDR4, &UDP.to_string(), "20000", "100"]);
    assert_eq!(r["sent"], 20000, "{r}");
    let pid = r["pid"].as_u64().expect("pid");
    let f = flow_of(&agent, pid, UDP);
    assert_eq!(f["packets_out"], 20000, "{f}");
    assert_eq!(f["bytes_out"], 2_000_000, "{f}");
    let connects: Vec<Value> =
        agent.events().into_iter().filter(|e| e["kind"] == "connect" && e["pid"] == pid).collect();
    assert_eq!(connects.len(), 1, "one record when the flow starts: {connects:#?}");
    assert_eq!(connects[0]["flow"], true, "{}", connects[0]);
    assert_eq!(connects[0]["hook"], "sendmsg4");
}

#[test]
fn in_monitor_mode_an_alerted_udp_client_is_one_flow_too() {
    let mut env = TestEnv::new("flowmonitor");
    env.bulk_server("udp", ADDR4, UDP_DENIED);
    let agent = env.agent(&spec().replace("mode: enforce", "mode: monitor"));
    let r = env.py_client("bulk.py", &["spray", ADDR4, &UDP_DENIED.to_string(), "5000", "10"]);
    assert_eq!(r["sent"], 5000, "monitor mode refuses nothing: {r}");
    let pid = r["pid"].as_u64().expect("pid");
    let f = flow_of(&agent, pid, UDP_DENIED);
    assert_eq!((f["verdict"].as_str(), f["packets_out"].as_u64()), (Some("alert"), Some(5000)), "{f}");
    let connects: Vec<Value> =
        agent.events().into_iter().filter(|e| e["kind"] == "connect" && e["pid"] == pid).collect();
    assert_eq!(connects.len(), 1, "one alert when the flow starts, the rest counted: {connects:#?}");
    assert_eq!(connects[0]["verdict"], "alert");
}

#[test]
fn refusals_are_folded_per_key_and_every_attempt_is_counted() {
    let env = TestEnv::new("flowfold");
    let agent = env.agent(&spec());
    let r = env.py_client("bulk.py", &["spray", ADDR4, &UDP_DENIED.to_string(), "1000", "10"]);
    assert_eq!(r["refused"], 1000, "every datagram is refused: {r}");
    let pid = r["pid"].as_u64().expect("pid");
    // The folded attempts are written when their one-second window ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let recs: Vec<Value> =
            agent.events().into_iter().filter(|e| e["kind"] == "connect" && e["pid"] == pid).collect();
        let attempts: u64 = recs.iter().map(|e| e["suppressed"].as_u64().expect("suppressed").max(1)).sum();
        if attempts == 1000 {
            assert!(recs.len() < 50, "folded into a few records, not {}", recs.len());
            assert!(recs.iter().all(|e| e["verdict"] == "deny"));
            assert!(recs.iter().any(|e| e["suppressed"].as_u64() > Some(1)), "{recs:#?}");
            break;
        }
        assert!(attempts < 1000, "more attempts reported than made: {attempts}");
        assert!(std::time::Instant::now() < deadline, "only {attempts} of 1000 attempts reported: {recs:#?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_nearly_full_flow_table_reports_and_evicts_the_oldest() {
    let mut env = TestEnv::new("flowevict");
    env.bulk_server("udp", ADDR4, UDP);
    let agent = env.agent_with(&spec(), &["--max-flows", "64"]);
    // 100 sockets held open, one datagram each: more flows than the table holds.
    let script = format!(
        "import socket,time\nss=[]\nfor i in range(100):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n s.sendto(b'x',('{ADDR4}',{UDP}))\n ss.append(s)\n time.sleep(0.002)\ntime.sleep(4)\n"
    );
    let out = env.in_cgroup("python3", &["-c", &script]).output().expect("client");
    assert!(out.status.success(), "{out:?}");
    let evicted: Vec<Value> =
        agent.events().into_iter().filter(|e| e["kind"] == "flow" && e["state"] == "evicted").collect();
    assert!(!evicted.is_empty(), "no flow was evicted; log:\n{}", agent.log());
    // The oldest ones: every evicted flow started before every flow that was still there to end.
    let ended: Vec<Value> = agent.events().into_iter().filter(|e| e["kind"] == "flow" && e["state"] == "end").collect();
    let newest_evicted = evicted.iter().map(|e| ts_key(&e["start"])).max().expect("start");
    assert!(
        ended.iter().all(|e| ts_key(&e["start"]) >= newest_evicted),
        "a newer flow was evicted before an older one: evicted up to {newest_evicted:?}"
    );
    assert!(agent.log().contains("oldest flows were reported and evicted"), "{}", agent.log());
    // Every datagram was still decided and reported: none refused, one record per socket at least.
    let attempts: u64 = agent
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "connect" && e["dport"] == UDP)
        .map(|e| e["suppressed"].as_u64().expect("suppressed").max(1))
        .sum();
    assert!(attempts >= 100, "{attempts} attempts reported for 100 sockets");
}

#[test]
fn a_long_lived_flow_is_reported_while_it_lasts() {
    let mut env = TestEnv::new("flowupdate");
    env.bulk_server("udp", ADDR4, UDP);
    let agent = env.agent_with(&spec(), &["--flow-update", "1"]);
    // A connected UDP socket that sends one datagram every 100 ms for 3.5 s.
    let script = format!(
        "import os,socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.connect(('{ADDR4}',{UDP}))\nfor i in range(35):\n s.send(b'y'*10)\n time.sleep(0.1)\nprint(os.getpid())\n"
    );
    let out = env.in_cgroup("python3", &["-c", &script]).output().expect("client");
    assert!(out.status.success(), "{out:?}");
    let pid: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("pid");
    let end = flow_of(&agent, pid, UDP);
    let updates: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "flow" && e["pid"] == pid && e["state"] == "update")
        .collect();
    assert!(updates.len() >= 2, "updates every second of a 3.5 s flow: {updates:#?}");
    let counts: Vec<u64> = updates.iter().map(|u| u["bytes_out"].as_u64().expect("bytes")).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative: {counts:?}");
    assert!(updates.iter().all(|u| u["end"].is_null() && u["cookie"] == end["cookie"]), "{updates:#?}");
    assert_eq!(end["bytes_out"], 350, "{end}");
}
