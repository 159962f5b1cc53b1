//! Kernel tests of the sinks: the real agent, attached to the test's child cgroup, writes to a
//! webhook receiver, a syslog socket and filtered files that the test owns. The receivers run
//! in the main namespace on 127.0.0.1 (the agent itself is outside the watched cgroup, so its
//! own deliveries are not subject to the policy), on ports the kernel picks.
//! Run with `cargo xtask test` (root, one test at a time).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixDatagram,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    thread::sleep,
    time::{Duration, Instant},
};

use egress_agent_tests::{policy, wait_for, Agent, TestEnv, ADDR4};
use serde_json::Value;

const UDP_OK: u16 = 9000;
const UDP_DENIED: u16 = 9001;

fn spec() -> String {
    policy(&format!(
        "  mode: enforce
  default: deny
  vendors:
    - name: feeds
      destinations: [{{cidr: {ADDR4}}}]
      ports: [{UDP_OK}]
      protocols: [udp]
"
    ))
}

/// Starts the agent with `config` as its configuration file (and every attempt written).
fn agent(env: &TestEnv, config: &str, extra: &[&str]) -> Agent {
    let path = env.path("agent.yaml");
    std::fs::write(&path, config).expect("write config");
    let mut args = vec!["--config", path.to_str().expect("utf-8"), "--events-per-key", "0"];
    args.extend_from_slice(extra);
    env.agent_with(&spec(), &args)
}

/// `n` datagrams from one process to `port` (refused or not); returns its pid.
fn spray(env: &TestEnv, port: u16, n: usize) -> u64 {
    let r = env.py_client("bulk.py", &["spray", ADDR4, &port.to_string(), &n.to_string(), "10"]);
    if port == UDP_DENIED {
        assert_eq!(r["refused"], n, "{r}");
    }
    r["pid"].as_u64().expect("pid")
}

/// Whole JSON lines of a file.
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn connects_of(recs: &[Value], pid: u64) -> Vec<Value> {
    recs.iter().filter(|r| r["kind"] == "connect" && r["pid"] == pid).cloned().collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn scrape(port: u16) -> String {
    let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/metrics")]).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sample(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok()).map_or(0, |v| v as u64)
}

/// What a webhook receiver got: the batches in arrival order, and the Authorization header.
#[derive(Default)]
struct Received {
    batches: Vec<Vec<Value>>,
    auth: Vec<String>,
}

/// An HTTP receiver on loopback: answers 200 to every POST (keep-alive), or, `stall`, accepts
/// connections and never reads or answers.
fn webhook(stall: bool) -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if stall {
                held.push(conn);
                continue;
            }
            let g = g.clone();
            std::thread::spawn(move || serve(conn, &g));
        }
    });
    (port, got)
}

fn serve(conn: TcpStream, got: &Mutex<Received>) {
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    loop {
        let (mut len, mut auth) = (0usize, String::new());
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST "), "{line}");
        loop {
            line.clear();
            r.read_line(&mut line).expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("header line");
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().expect("length"),
                "authorization" => auth = v.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).expect("body");
        let batch: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        {
            let mut g = got.lock().expect("lock");
            g.batches.push(batch);
            g.auth.push(auth);
        }
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").expect("answer");
    }
}

#[test]
fn a_webhook_receives_the_alerts_in_order_in_json_batches() {
    let env = TestEnv::new("webhook");
    let (port, got) = webhook(false);
    let config = format!(
        "sinks:
  - name: siem
    type: webhook
    url: http://127.0.0.1:{port}/hook?token=s3cret
    headers: {{Authorization: Bearer t0ken}}
    batchSize: 7
    flushInterval: 200ms
    filter: {{verdicts: [deny]}}
"
    );
    let mut agent = agent(&env, &config, &["--metrics", "off"]);
    let allowed = spray(&env, UDP_OK, 3);
    let denied = spray(&env, UDP_DENIED, 40);
    let mine = |recs: &[Value]| connects_of(recs, denied);
    wait_for(
        Duration::from_secs(10),
        || mine(&got.lock().expect("lock").batches.concat()).len() == 40,
        || format!("the receiver has {} of 40", mine(&got.lock().expect("lock").batches.concat()).len()),
    );
    let g = got.lock().expect("lock");
    let all = g.batches.concat();
    // In order: exactly what the file got of them, in the same order, field for field.
    assert_eq!(mine(&all), connects_of(&lines(&agent.events), denied), "the webhook's records differ from the file's");
    assert!(
        g.batches.iter().all(|b| !b.is_empty() && b.len() <= 7),
        "batch sizes: {:?}",
        g.batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(all.iter().all(|r| r["verdict"] == "deny"), "the filter let through: {all:?}");
    assert!(connects_of(&all, allowed).is_empty());
    assert!(g.auth.iter().all(|a| a == "Bearer t0ken"), "{:?}", g.auth);
    drop(g);
    agent.stop();
    let log = agent.log();
    assert!(log.contains("sink closed") && log.contains("http://127.0.0.1"), "{log}");
    assert!(!log.contains("s3cret") && !log.contains("t0ken"), "a secret in the log:\n{log}");
}

#[test]
fn a_stalled_receiver_slows_neither_connections_nor_the_file_sink() {
    let env = TestEnv::new("stalled");
    let (port, _held) = webhook(true);
    let metrics = free_port();
    let filtered = env.path("denied.jsonl");
    let config = format!(
        "sinks:
  - name: stalled
    type: webhook
    url: http://127.0.0.1:{port}/
    batchSize: 1
    queueSize: 5
    timeout: 30s
  - name: denied
    type: file
    path: {}
    filter: {{verdicts: [deny]}}
",
        filtered.display()
    );
    let mut agent = agent(&env, &config, &["--metrics", &format!("127.0.0.1:{metrics}")]);
    let started = Instant::now();
    let mut pids = Vec::new();
    for _ in 0..5 {
        pids.push(spray(&env, UDP_DENIED, 30));
    }
    // Every attempt was decided and refused (spray asserts it) and every record reaches both
    // files in the usual time, while the receiver holds the webhook's first request.
    for &pid in &pids {
        for path in [&agent.events, &filtered] {
            wait_for(
                Duration::from_secs(5),
                || connects_of(&lines(path), pid).len() == 30,
                || format!("{}: {} of 30 records of {pid}", path.display(), connects_of(&lines(path), pid).len()),
            );
        }
    }
    // Loose: five short clients and their records, nowhere near the receiver's 30 s timeout.
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());
    let dropped = r#"egress_sink_dropped_total{sink="stalled"}"#;
    wait_for(
        Duration::from_secs(5),
        || sample(&scrape(metrics), dropped) >= 140,
        || format!("overflow not counted:\n{}", scrape(metrics)),
    );
    let m = scrape(metrics);
    assert_eq!(sample(&m, r#"egress_sink_queue_length{sink="stalled"}"#), 5, "{m}");
    assert!(sample(&m, r#"egress_sink_records_total{sink="denied"}"#) >= 150, "{m}");
    assert_eq!(sample(&m, r#"egress_sink_dropped_total{sink="denied"}"#), 0, "{m}");
    assert_eq!(sample(&m, r#"egress_sink_dropped_total{sink="events"}"#), 0, "{m}");
    // A dead receiver does not hold up the agent's exit either (it waits 5 s at most).
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
}

/// Checks the RFC 5424 header strictly (the parser crate is lenient about some fields) and
/// returns the parsed message.
fn rfc5424(m: &str) -> syslog_rfc5424::SyslogMessage {
    let parts: Vec<&str> = m.splitn(8, ' ').collect();
    assert_eq!(parts.len(), 8, "{m}");
    let pri = parts[0].strip_prefix('<').and_then(|p| p.strip_suffix(">1")).expect("<PRI>1");
    assert!(pri.len() <= 3 && pri.parse::<u8>().is_ok_and(|p| p <= 191), "PRI {pri}");
    let ts = parts[1].as_bytes();
    assert!(
        ts.len() == 27 && ts[4] == b'-' && ts[10] == b'T' && ts[19] == b'.' && ts[26] == b'Z',
        "TIMESTAMP {}",
        parts[1]
    );
    for (i, max) in [(2, 255), (3, 48), (4, 128), (5, 32)] {
        assert!(
            !parts[i].is_empty() && parts[i].len() <= max && parts[i].bytes().all(|b| (33..=126).contains(&b)),
            "field {i}: {m}"
        );
    }
    assert_eq!(parts[6], "-", "no structured data: {m}");
    let parsed = syslog_rfc5424::parse_message(m).unwrap_or_else(|e| panic!("not RFC 5424 ({e:?}): {m}"));
    assert_eq!(parsed.version, 1);
    parsed
}

#[test]
fn syslog_to_a_local_socket_and_over_tcp_is_valid_rfc5424() {
    let env = TestEnv::new("syslog");
    let sock = env.path("log.sock");
    let dgram = UnixDatagram::bind(&sock).expect("bind");
    dgram.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let tcp_port = tcp.local_addr().expect("addr").port();
    let config = format!(
        "sinks:
  - name: local
    type: syslog
    address: unix://{}
    appName: egress-test
  - name: remote
    type: syslog
    address: tcp://127.0.0.1:{tcp_port}
    facility: auth
    filter: {{kinds: [connect, audit]}}
",
        sock.display()
    );
    let mut agent = agent(&env, &config, &["--metrics", "off"]);
    let pid = spray(&env, UDP_DENIED, 5);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    while connects_of(&got, pid).len() < 5 {
        assert!(Instant::now() < deadline, "the socket got {} of 5:\n{}", connects_of(&got, pid).len(), agent.log());
        let Ok(n) = dgram.recv(&mut buf) else { continue };
        let m = std::str::from_utf8(&buf[..n]).expect("utf-8");
        let p = rfc5424(m);
        assert_eq!(p.appname.as_deref(), Some("egress-test"));
        assert!(matches!(p.procid, Some(syslog_rfc5424::message::ProcId::PID(n)) if n > 0), "{m}");
        let rec: Value =
            serde_json::from_str(&p.msg).unwrap_or_else(|e| panic!("MSG is not the JSON record ({e}): {m}"));
        assert_eq!(p.msgid.as_deref(), rec["kind"].as_str(), "{m}");
        if rec["kind"] == "connect" && rec["pid"] == pid {
            assert_eq!(
                (p.facility, p.severity),
                (syslog_rfc5424::SyslogFacility::LOG_LOCAL0, syslog_rfc5424::SyslogSeverity::SEV_WARNING),
                "{m}"
            );
        }
        got.push(rec);
    }
    // The file is flushed after the batch; the syslog thread may have been quicker.
    wait_for(Duration::from_secs(5), || connects_of(&lines(&agent.events), pid).len() == 5, || "file".into());
    assert_eq!(connects_of(&got, pid), connects_of(&lines(&agent.events), pid), "same records, same order");

    // TCP: RFC 6587 octet counting, "LEN SP MSG" back to back; the audit record of the stop too.
    let (conn, _) = tcp.accept().expect("the agent connects");
    agent.stop();
    let mut stream = Vec::new();
    BufReader::new(conn).read_to_end(&mut stream).expect("read");
    let mut rest = &stream[..];
    let mut recs = Vec::new();
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ').expect("a length");
        let len: usize = std::str::from_utf8(&rest[..sp]).expect("ascii").parse().expect("LEN");
        let m = std::str::from_utf8(&rest[sp + 1..sp + 1 + len]).expect("utf-8");
        let p = rfc5424(m);
        assert_eq!(p.facility, syslog_rfc5424::SyslogFacility::LOG_AUTH, "{m}");
        recs.push(serde_json::from_str::<Value>(&p.msg).expect("JSON"));
        rest = &rest[sp + 1 + len..];
    }
    assert_eq!(connects_of(&recs, pid).len(), 5, "{recs:?}");
    assert!(recs.iter().all(|r| r["kind"] == "connect" || r["kind"] == "audit"), "{recs:?}");
    assert!(
        recs.iter().any(|r| r["kind"] == "audit" && r["audit"] == "agent_stop"),
        "audit records asked for: {recs:?}"
    );
    assert!(!got.iter().any(|r| r["kind"] == "audit"), "audit records only where asked for");
}

#[test]
fn a_filtered_file_sink_gets_only_denials_and_survives_rotation() {
    let env = TestEnv::new("filtered");
    let filtered = env.path("denied.jsonl");
    let config = format!(
        "sinks:\n  - {{name: denied, type: file, path: {}, filter: {{verdicts: [deny]}}}}\n",
        filtered.display()
    );
    let agent = agent(&env, &config, &["--metrics", "off"]);
    let allowed = spray(&env, UDP_OK, 3);
    let first = spray(&env, UDP_DENIED, 20);
    wait_for(Duration::from_secs(5), || connects_of(&lines(&filtered), first).len() == 20, || "first batch".into());
    let rotated = env.path("denied.rotated");
    std::fs::rename(&filtered, &rotated).expect("rename");
    let second = spray(&env, UDP_DENIED, 20);
    wait_for(
        Duration::from_secs(5),
        || connects_of(&lines(&filtered), second).len() == 20,
        || format!("the new file has {} of 20", connects_of(&lines(&filtered), second).len()),
    );
    sleep(Duration::from_millis(300));
    let old = lines(&rotated);
    let new = lines(&filtered);
    assert_eq!(connects_of(&old, first).len(), 20, "the first batch stays whole in the rotated file");
    assert_eq!(connects_of(&old, second).len() + connects_of(&new, second).len(), 20, "none lost or duplicated");
    assert!(old.iter().chain(&new).all(|r| r["verdict"] == "deny"), "only denials");
    assert!(!connects_of(&lines(&agent.events), allowed).is_empty(), "the unfiltered sink has the allowed ones");
}

#[test]
fn check_validates_the_sinks_of_a_configuration() {
    let env = TestEnv::new("sinkcheck");
    let path = env.path("bad.yaml");
    std::fs::write(&path, "sinks:\n  - type: webhook\n    url: ftp://x/\n").expect("write");
    let out =
        Command::new(egress_agent_tests::agent_bin()).args(["check", "--config"]).arg(&path).output().expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.yaml:") && err.contains("sinks[0]") && err.contains("http or https"), "{err}");
}
