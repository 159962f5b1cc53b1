//! Kernel tests of central policy: a policy server on loopback (a thread of this test, in the
//! host's namespace, where the agent runs: its own fetches are not subject to the policy) serves
//! a signed bundle, then a newer one, a tampered one, an older one, an unsigned one, garbage, a
//! huge one, a hanging one and a redirect loop; each is handled as README "Central policy" says,
//! and the agent, restarted with the server down, enforces the cached bundle at once. Restarted
//! without its cache, it still refuses a replayed older bundle (the serial floor), and
//! `policySource.minSerial` refuses what is below it.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::sleep,
    time::{Duration, Instant},
};

use egress_agent_tests::{agent_bin, policy, wait_for, Agent, TestEnv, ADDR4, ADDR4_OTHER};
use serde_json::Value;

const WEB: u16 = 8090;
const OTHER: u16 = 8091;
/// The agent's cap in these tests (`--policy-max-bytes`).
const MAX_BYTES: u64 = 1 << 20;

/// What the policy server answers.
#[derive(Clone)]
enum Mode {
    /// 200 with this body and ETag, or 304 when asked with that ETag.
    Serve { body: Vec<u8>, etag: String },
    /// 200 and zeros, without end and without a length.
    Endless,
    /// Reads the request and never answers.
    Hang,
    /// 302 to itself.
    Loop,
}

/// One request: its If-None-Match, and the status answered (0: none).
#[derive(Clone, Debug)]
struct Seen {
    if_none_match: Option<String>,
    status: u16,
}

struct PolicyServer {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes of the endless body written before the agent hung up.
    streamed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    etags: u64,
}

impl PolicyServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the policy server");
        let port = listener.local_addr().expect("addr").port();
        let server = PolicyServer {
            port,
            mode: Arc::new(Mutex::new(Mode::Loop)),
            seen: Arc::default(),
            streamed: Arc::default(),
            stop: Arc::default(),
            etags: 0,
        };
        let (mode, seen, streamed, stop) =
            (server.mode.clone(), server.seen.clone(), server.streamed.clone(), server.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return; // the listener is dropped: connections are refused from now on
                }
                let Ok(conn) = conn else { continue };
                let (mode, seen, streamed, stop) = (mode.clone(), seen.clone(), streamed.clone(), stop.clone());
                std::thread::spawn(move || answer(conn, &mode, &seen, &streamed, &stop));
            }
        });
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/bundle.json", self.port)
    }

    fn serve(&mut self, body: Vec<u8>) {
        self.etags += 1;
        *self.mode.lock().expect("mode") = Mode::Serve { body, etag: format!("\"b{}\"", self.etags) };
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().expect("mode") = m;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Closes the listening socket: connections are refused.
    fn shut(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn answer(mut conn: TcpStream, mode: &Mutex<Mode>, seen: &Mutex<Vec<Seen>>, streamed: &AtomicU64, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut if_none_match = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(v.trim().to_owned());
            }
        }
    }
    let m = mode.lock().expect("mode").clone();
    let status = match &m {
        Mode::Serve { etag, .. } if if_none_match.as_deref() == Some(etag) => 304,
        Mode::Serve { .. } | Mode::Endless => 200,
        Mode::Hang => 0,
        Mode::Loop => 302,
    };
    seen.lock().expect("seen").push(Seen { if_none_match, status });
    match m {
        Mode::Serve { etag, .. } if status == 304 => {
            let _ = write!(conn, "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n");
        }
        Mode::Serve { body, etag } => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
        Mode::Endless => {
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n");
            let chunk = vec![b' '; 64 << 10];
            // 64 MiB at most: the agent must hang up long before.
            for _ in 0..1024 {
                if conn.write_all(&chunk).is_err() {
                    return;
                }
                streamed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
        Mode::Hang => {
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                sleep(Duration::from_millis(100));
            }
        }
        Mode::Loop => {
            let _ = write!(
                conn,
                "HTTP/1.1 302 Found\r\nLocation: /bundle.json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

/// Vendor `web` allowed on `addr`:`port` only; everything else denied.
fn only(addr: &str, port: u16) -> String {
    policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      owner: test\n      destinations: [{{cidr: {addr}}}]\n      ports: [{port}]\n      protocols: [tcp]\n"
    ))
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(agent_bin()).args(args).output().expect("egress-agent");
    assert!(
        out.status.success(),
        "egress-agent {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Signs `text` as bundle `serial`; returns the bundle's bytes and its policy digest.
fn signed(env: &TestEnv, key: &Path, serial: u64, text: &str) -> (Vec<u8>, String) {
    let src = env.path(&format!("policy-{serial}.yaml"));
    fs::write(&src, text).expect("write policy");
    let out = env.path(&format!("bundle-{serial}.json"));
    let s = |p: &Path| p.to_str().expect("utf-8").to_owned();
    cli(&["policy", "sign", "--key", &s(key), "--serial", &serial.to_string(), "--out", &s(&out), &s(&src)]);
    let verified = cli(&["policy", "verify", "--pubkey", &s(&key.with_extension("pub")), &s(&out)]);
    let digest = verified
        .lines()
        .find_map(|l| l.strip_prefix("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {verified}"))
        .trim()
        .to_owned();
    (fs::read(&out).expect("bundle"), digest)
}

fn connects(env: &TestEnv, addr: &str, port: u16) -> bool {
    env.client("tcp", addr, port)["ok"] == true
}

fn audit(state: &Path) -> Vec<Value> {
    fs::read_to_string(state.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for `needle` in the agent's log after byte `from`; returns the line.
fn wait_log(agent: &Agent, from: usize, needle: &str, limit: Duration) -> String {
    let mut found = String::new();
    wait_for(
        limit,
        || {
            let log = agent.log();
            match log.get(from..).and_then(|l| l.lines().find(|l| l.contains(needle))) {
                Some(l) => {
                    found = l.to_owned();
                    true
                }
                None => false,
            }
        },
        || format!("no `{needle}` in the agent's log:\n{}", agent.log().get(from..).unwrap_or("")),
    );
    found
}

fn source(agent: &Agent) -> Value {
    agent.status()["policy_source"].clone()
}

#[test]
fn a_signed_bundle_is_enforced_bad_ones_are_refused_and_the_cache_enforces_at_boot() {
    let mut env = TestEnv::new("psrc");
    let _web = env.server("tcp", ADDR4, WEB);
    let _other = env.server("tcp", ADDR4_OTHER, OTHER);
    let keys = env.path("k");
    cli(&["policy", "keygen", "--out", keys.to_str().expect("utf-8")]);
    let (key, public) = (keys.with_extension("key"), keys.with_extension("pub"));
    let state = env.path("state");
    fs::create_dir(&state).expect("state dir");
    let mut server = PolicyServer::start();
    let (b1, d1) = signed(&env, &key, 1, &only(ADDR4, WEB));
    server.serve(b1.clone());
    let url = server.url();
    let args: Vec<String> = [
        "--policy",
        &url,
        "--policy-key",
        public.to_str().expect("utf-8"),
        "--policy-interval",
        "1s",
        "--policy-timeout",
        "2s",
        "--policy-max-bytes",
        &MAX_BYTES.to_string(),
        "--state",
        state.to_str().expect("utf-8"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = env.agent_args(&args);

    // (1) The signed bundle, fetched at boot, is enforced.
    assert!(connects(&env, ADDR4, WEB), "{}", agent.log());
    assert!(!connects(&env, ADDR4_OTHER, OTHER), "{}", agent.log());
    let st = agent.status();
    assert_eq!(st["policy"]["sha256"], d1.as_str(), "{st}");
    assert_eq!(st["policy_source"]["serial"], 1, "{st}");
    assert_eq!(st["policy_source"]["source"], url.as_str(), "{st}");

    // A newer one replaces it within a poll or two.
    let (b2, d2) = signed(&env, &key, 2, &only(ADDR4_OTHER, OTHER));
    server.serve(b2.clone());
    wait_for(Duration::from_secs(10), || source(&agent)["serial"] == 2, || agent.log());
    let st = agent.status();
    let generation = st["policy"]["generation"].clone();
    assert_eq!(st["policy"]["sha256"], d2.as_str(), "{st}");
    assert!(connects(&env, ADDR4_OTHER, OTHER), "{}", agent.log());
    assert!(!connects(&env, ADDR4, WEB), "{}", agent.log());
    let installed = audit(&state).into_iter().rfind(|r| r["kind"] == "policy_installed").expect("policy_installed");
    assert_eq!(installed["detail"]["bundle"]["serial"], 2, "{installed}");
    assert_eq!(installed["detail"]["sha256"], d2.as_str(), "{installed}");

    // (8) ETag: the next polls ask with it, get 304, and nothing is installed again.
    let etag = match &*server.mode.lock().expect("mode") {
        Mode::Serve { etag, .. } => etag.clone(),
        _ => unreachable!(),
    };
    let n = server.seen().len();
    wait_for(
        Duration::from_secs(10),
        || {
            server.seen()[n..].iter().filter(|s| s.status == 304 && s.if_none_match.as_ref() == Some(&etag)).count()
                >= 2
        },
        || format!("no two 304s: {:?}", &server.seen()[n..]),
    );
    assert_eq!(agent.status()["policy"]["generation"], generation);
    assert_eq!(source(&agent)["last_result"], "not_modified");

    // Each bad bundle: refused with its reason, reported (log, audit, status), the policy stays.
    let refused = |server: &mut PolicyServer, body: Vec<u8>, serial: Option<u64>, reason: &str| {
        let from = agent.log().len();
        let before = audit(&state).len();
        server.serve(body);
        let line = wait_log(&agent, from, "policy bundle refused", Duration::from_secs(10));
        assert!(line.contains(reason), "expected `{reason}`: {line}");
        wait_for(
            Duration::from_secs(5),
            || audit(&state)[before..].iter().any(|r| r["kind"] == "reload_refused"),
            || format!("no reload_refused record: {:?}", &audit(&state)[before..]),
        );
        let rec = audit(&state)[before..].iter().find(|r| r["kind"] == "reload_refused").cloned().expect("record");
        assert_eq!(rec["detail"]["source"], url.as_str(), "{rec}");
        assert_eq!(rec["detail"]["serial"], serial.map_or(Value::Null, Value::from), "{rec}");
        assert!(rec["detail"]["error"].as_str().is_some_and(|e| e.contains(reason)), "{rec}");
        let src = source(&agent);
        assert_eq!((src["last_result"].as_str(), src["serial"].as_u64()), (Some("refused"), Some(2)), "{src}");
        assert_eq!(agent.status()["policy"]["generation"], generation);
        assert!(connects(&env, ADDR4_OTHER, OTHER), "{}", agent.log());
        assert!(!connects(&env, ADDR4, WEB), "{}", agent.log());
    };
    // (2) Tampered: the policy changed after signing (it would open ADDR4:WEB again).
    let (b3, _) = signed(&env, &key, 3, &only(ADDR4_OTHER, OTHER));
    let mut tampered: Value = serde_json::from_slice(&b3).expect("bundle json");
    tampered["files"][0]["text"] = Value::from(only(ADDR4, WEB));
    refused(&mut server, tampered.to_string().into_bytes(), Some(3), "does not verify");
    // (3) Older than the one running: a replay of serial 1, correctly signed.
    refused(&mut server, b1.clone(), Some(1), "older than the running bundle's 2");
    // Unsigned, and signed by another key.
    let mut unsigned: Value = serde_json::from_slice(&b3).expect("bundle json");
    unsigned.as_object_mut().expect("object").remove("signature");
    refused(&mut server, unsigned.to_string().into_bytes(), Some(3), "not signed");
    let other_keys = env.path("other");
    cli(&["policy", "keygen", "--out", other_keys.to_str().expect("utf-8")]);
    let (b4, _) = signed(&env, &other_keys.with_extension("key"), 4, &only(ADDR4, WEB));
    refused(&mut server, b4, Some(4), "signed by another key");
    // Not a bundle at all.
    refused(&mut server, b"<html>maintenance</html>".to_vec(), None, "not a policy bundle");

    // (4) Huge: cut off at the cap, the rest never read.
    let from = agent.log().len();
    server.set(Mode::Endless);
    let line = wait_log(&agent, from, "fetching the policy bundle failed", Duration::from_secs(10));
    assert!(line.contains("maxBytes") && line.contains("cut off"), "{line}");
    sleep(Duration::from_millis(500));
    let streamed = server.streamed.load(Ordering::SeqCst);
    println!("endless body: {streamed} bytes written before the agent hung up (cap {MAX_BYTES})");
    assert!(streamed < 16 << 20, "{streamed} bytes were sent: the agent read on past its cap");

    // (5) Hanging: a timeout error, and the event loop answers meanwhile.
    let from = agent.log().len();
    server.set(Mode::Hang);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let t = Instant::now();
        let st = agent.status();
        assert_eq!(st["policy"]["generation"], generation);
        assert!(t.elapsed() < Duration::from_secs(1), "status took {:?} during a hanging fetch", t.elapsed());
        sleep(Duration::from_millis(200));
    }
    let line = wait_log(&agent, from, "fetching the policy bundle failed", Duration::from_secs(10));
    assert!(line.contains("no complete answer within 2s"), "{line}");

    // (6) A redirect loop.
    let from = agent.log().len();
    server.set(Mode::Loop);
    let line = wait_log(&agent, from, "fetching the policy bundle failed", Duration::from_secs(10));
    assert!(line.contains("redirects"), "{line}");
    assert!(connects(&env, ADDR4_OTHER, OTHER), "{}", agent.log());
    let metrics_ok = agent.status()["policy"]["reloads_refused"].as_u64().unwrap_or(0);
    assert!(metrics_ok >= 5, "refusals counted: {metrics_ok}");

    // (7) Restarted with the server down: the cached bundle (serial 2) is enforced at once.
    agent.stop();
    server.shut();
    let agent = env.agent_args(&args);
    assert!(agent.log().contains("enforcing the cached policy bundle"), "{}", agent.log());
    assert!(connects(&env, ADDR4_OTHER, OTHER), "{}", agent.log());
    assert!(!connects(&env, ADDR4, WEB), "{}", agent.log());
    let st = agent.status();
    assert_eq!(st["policy"]["sha256"], d2.as_str(), "{st}");
    assert_eq!(st["policy_source"]["serial"], 2, "{st}");
    wait_log(&agent, 0, "fetching the policy bundle failed", Duration::from_secs(10));
}

/// `run` arguments for a policy server at `url`, bundles signed with `public`, state in `state`.
fn source_args(url: &str, public: &Path, state: &Path, extra: &[&str]) -> Vec<String> {
    let utf8 = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let mut args: Vec<String> = ["--policy", url, "--policy-interval", "1s", "--policy-timeout", "2s"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(["--policy-key".into(), utf8(public), "--state".into(), utf8(state)]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// The `reload_refused` record of serial `serial` written since record `from`.
fn refusal_of(state: &Path, from: usize, serial: u64) -> Value {
    let mut found = Value::Null;
    wait_for(
        Duration::from_secs(10),
        || match audit(state)
            .get(from..)
            .and_then(|a| a.iter().find(|r| r["kind"] == "reload_refused" && r["detail"]["serial"] == serial).cloned())
        {
            Some(r) => {
                found = r;
                true
            }
            None => false,
        },
        || format!("no reload_refused record of serial {serial}: {:?}", audit(state).get(from..)),
    );
    found
}

#[test]
fn an_older_signed_bundle_is_refused_after_the_cache_is_lost() {
    let mut env = TestEnv::new("psfl");
    let _web = env.server("tcp", ADDR4, WEB);
    let _other = env.server("tcp", ADDR4_OTHER, OTHER);
    let keys = env.path("k");
    cli(&["policy", "keygen", "--out", keys.to_str().expect("utf-8")]);
    let (key, public) = (keys.with_extension("key"), keys.with_extension("pub"));
    let state = env.path("state");
    fs::create_dir(&state).expect("state dir");
    // Serial 3 allowed vendor `web` at ADDR4:WEB; serial 5 revoked it for ADDR4_OTHER:OTHER.
    let (b3, d3) = signed(&env, &key, 3, &only(ADDR4, WEB));
    let (b5, d5) = signed(&env, &key, 5, &only(ADDR4_OTHER, OTHER));
    let mut server = PolicyServer::start();
    server.serve(b5);
    let args = source_args(&server.url(), &public, &state, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = env.agent_args(&args);
    let st = agent.status();
    assert_eq!((st["policy"]["sha256"].as_str(), st["policy_source"]["serial"].as_u64()), (Some(d5.as_str()), Some(5)));
    assert_eq!(st["policy_source"]["floor"], 5, "{st}");
    assert!(connects(&env, ADDR4_OTHER, OTHER), "{}", agent.log());
    assert!(!connects(&env, ADDR4, WEB), "{}", agent.log());
    agent.stop();

    // The cache is lost (the serial file is not); the source now replays serial 3, validly signed.
    fs::remove_file(state.join("policy-bundle.json")).expect("the cache");
    assert!(state.join("policy-serial.json").exists(), "the floor's own file");
    server.serve(b3);
    let before = audit(&state).len();
    let agent = env.agent_args(&args);
    let line = wait_log(&agent, 0, "policy bundle refused", Duration::from_secs(10));
    assert!(line.contains("serial 3 is older than serial 5") && line.contains("rollback"), "{line}");
    assert!(line.contains("policy-serial.json"), "the error names the file: {line}");
    let rec = refusal_of(&state, before, 3);
    assert_eq!(rec["detail"]["sha256"], d3.as_str(), "{rec}");
    assert!(rec["detail"]["error"].as_str().is_some_and(|e| e.contains("rollback")), "{rec}");
    let st = agent.status();
    assert_ne!(st["policy"]["sha256"], d3.as_str(), "serial 3 must not be in force: {st}");
    let src = &st["policy_source"];
    assert_eq!((src["serial"].as_u64(), src["floor"].as_u64()), (None, Some(5)), "{st}");
    assert_eq!((src["last_result"].as_str(), src["floor_from"].as_str()), (Some("refused"), Some("accepted")), "{st}");
    assert!(st["policy"]["reloads_refused"].as_u64() >= Some(1), "counted: {st}");
    // Serial 3 would deny ADDR4_OTHER:OTHER; the agent runs its embedded default instead (monitor
    // mode), and keeps refusing serial 3 at the next polls.
    sleep(Duration::from_millis(2500));
    assert!(connects(&env, ADDR4_OTHER, OTHER), "serial 3 is enforced: {}", agent.log());
    assert_ne!(agent.status()["policy"]["sha256"], d3.as_str());

    // The next release is installed, and raises the floor.
    let (b6, d6) = signed(&env, &key, 6, &only(ADDR4_OTHER, OTHER));
    server.serve(b6);
    wait_for(Duration::from_secs(10), || source(&agent)["serial"] == 6, || agent.log());
    let st = agent.status();
    assert_eq!((st["policy"]["sha256"].as_str(), st["policy_source"]["floor"].as_u64()), (Some(d6.as_str()), Some(6)));
    assert!(connects(&env, ADDR4_OTHER, OTHER), "{}", agent.log());
    assert!(!connects(&env, ADDR4, WEB), "{}", agent.log());
}

#[test]
fn min_serial_refuses_lower_bundles_on_a_fresh_host() {
    let mut env = TestEnv::new("psmin");
    let _web = env.server("tcp", ADDR4, WEB);
    let _other = env.server("tcp", ADDR4_OTHER, OTHER);
    let keys = env.path("k");
    cli(&["policy", "keygen", "--out", keys.to_str().expect("utf-8")]);
    let (key, public) = (keys.with_extension("key"), keys.with_extension("pub"));
    let state = env.path("state");
    fs::create_dir(&state).expect("state dir");
    // An empty state directory: nothing accepted yet, only the configuration's floor.
    let config = env.path("agent.yaml");
    fs::write(&config, "policySource:\n  minSerial: 10\n").expect("config");
    let (b7, d7) = signed(&env, &key, 7, &only(ADDR4, WEB));
    let mut server = PolicyServer::start();
    server.serve(b7);
    let args = source_args(&server.url(), &public, &state, &["--config", config.to_str().expect("utf-8")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = env.agent_args(&args);
    let line = wait_log(&agent, 0, "policy bundle refused", Duration::from_secs(10));
    assert!(line.contains("serial 7 is below policySource.minSerial 10"), "{line}");
    refusal_of(&state, 0, 7);
    let st = agent.status();
    assert_ne!(st["policy"]["sha256"], d7.as_str(), "{st}");
    let src = &st["policy_source"];
    assert_eq!((src["floor"].as_u64(), src["floor_from"].as_str()), (Some(10), Some("minSerial")), "{st}");
    // Serial 7 would deny ADDR4_OTHER:OTHER.
    assert!(connects(&env, ADDR4_OTHER, OTHER), "serial 7 is enforced: {}", agent.log());

    let (b10, d10) = signed(&env, &key, 10, &only(ADDR4, WEB));
    server.serve(b10);
    wait_for(Duration::from_secs(10), || source(&agent)["serial"] == 10, || agent.log());
    let st = agent.status();
    assert_eq!(st["policy"]["sha256"], d10.as_str(), "{st}");
    assert_eq!(st["policy_source"]["floor_from"], "accepted", "{st}");
    assert!(connects(&env, ADDR4, WEB), "{}", agent.log());
    assert!(!connects(&env, ADDR4_OTHER, OTHER), "{}", agent.log());
}
