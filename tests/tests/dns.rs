//! Kernel tests of vendors by domain: answers parsed in the kernel make the first connect to a
//! fresh address of an allowed name succeed every time; nothing else opens anything. A real
//! resolver in the test namespace (`ea-dns-server`, hickory-proto) answers every query with a
//! new address and TTL 1; clients are glibc (Python's getaddrinfo), dig, and crafted packets.

use std::{path::Path, process::Command, thread::sleep, time::Duration};

use egress_agent_tests::{policy, py, wait_for, write_atomic, DnsServer, Held, TestEnv, DNS4};
use serde_json::Value;

const PORT: u16 = 443;

fn dns_server_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ea-dns-server"))
}

/// A namespace with the resolver (TTL `ttl`) and a TCP server on every local address, port 443.
fn setup(name: &str, ttl: u32) -> (TestEnv, DnsServer) {
    let mut env = TestEnv::new(name);
    let dns = env.dns(dns_server_bin(), ttl);
    env.server("tcp", "::", PORT);
    (env, dns)
}

/// Enforce mode, default deny, the resolver allowed, and `vendors` (YAML list items, indented
/// four spaces) under `dns` settings `dns`.
fn domain_policy(dns: &str, vendors: &str) -> String {
    policy(&format!(
        "  mode: enforce\n  default: deny\n  dns: {dns}\n  allow:\n    - {{name: resolver, cidr: {DNS4}/32, ports: [53], protocols: [udp, tcp]}}\n    - {{name: resolver6, cidr: \"2001:db8::53/128\", ports: [53], protocols: [udp, tcp]}}\n  vendors:\n{vendors}"
    ))
}

const FX: &str = "    - name: fx\n      destinations: [{domain: \"*.fx.test\"}, {domain: api.example.test}]\n      ports: [443]\n      protocols: [tcp]\n";

/// Runs tests/py/dns_client.py in the watched cgroup; returns its JSON line.
fn client(env: &TestEnv, args: &[&str]) -> Value {
    client_named(env, None, args)
}

fn client_named(env: &TestEnv, proc_name: Option<&str>, args: &[&str]) -> Value {
    let script = py("dns_client.py");
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    let mut cmd = env.in_cgroup("python3", &all);
    if let Some(n) = proc_name {
        cmd.env("PROC_NAME", n);
    }
    let out = cmd.output().expect("run dns_client.py");
    assert!(out.status.success(), "dns_client {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("dns_client output {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
}

/// dig in the watched cgroup; returns the addresses it printed (`+short`).
fn dig(env: &TestEnv, args: &[&str]) -> Vec<String> {
    let mut all = vec![format!("@{DNS4}"), "+short".into(), "+tries=1".into(), "+time=2".into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = env.in_cgroup("dig", &refs).output().expect("run dig");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_owned)
        .collect()
}

fn connect(env: &TestEnv, addr: &str) -> i64 {
    client(env, &["connect", addr, &PORT.to_string()])["errno"].as_i64().expect("errno")
}

#[test]
fn every_fresh_address_of_an_allowed_name_is_allowed_at_once() {
    let (env, dns) = setup("dns-rounds", 1);
    let agent = env.agent(&domain_policy("{grace: 1s, unlisted: deny}", FX));
    // 300 lookups, each answered with an address never seen before, alternately A and AAAA,
    // each followed at once by a connect to it.
    let r = client(&env, &["rounds", "r{}.fx.test", "300", "443", "46"]);
    assert_eq!(r["failed"], Value::Array(vec![]), "{r}\n{}", agent.log());
    assert_eq!((r["ok"].as_u64(), r["n_refused"].as_u64()), (Some(300), Some(0)), "{r}\n{}", agent.log());
    let answered: usize =
        dns.queries().iter().filter(|q| q["answers"].as_array().is_some_and(|a| !a.is_empty())).count();
    assert!(answered >= 300, "the resolver answered {answered} queries");
    // The exact name too, and the events name the domain.
    let r = client(&env, &["rounds", "api.example.test", "1", "443", "4"]);
    assert_eq!(r["ok"], 1, "{r}");
    let pid = r["pid"].as_u64().expect("pid");
    let ev =
        agent.wait_event("connect with its domain", |e| e["kind"] == "connect" && e["pid"] == pid && e["dport"] == 443);
    assert_eq!(
        (ev["verdict"].as_str(), ev["domain"].as_str(), ev["domain_rule"].as_str(), ev["vendor"].as_str()),
        (Some("allow"), Some("api.example.test"), Some("api.example.test"), Some("fx")),
        "{ev}"
    );
    let d = agent.wait_event("dns answer", |e| e["kind"] == "dns" && e["pid"] == pid && e["phase"] == "answer");
    assert_eq!(
        (d["query"].as_str(), d["qtype"].as_str(), d["rcode"].as_str()),
        (Some("api.example.test"), Some("A"), Some("NOERROR")),
        "{d}"
    );
    assert_eq!(d["addresses"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(d["addresses"][0], ev["dst"], "{d}");
    assert_eq!(d["verdict"], "allow");
    assert_eq!(d["rules"], serde_json::json!(["vendor/fx"]), "{d}");
    assert!(d["exe"].as_str().is_some_and(|e| e.contains("python")), "{d}");
}

#[test]
fn unlisted_names_and_literal_addresses_are_refused() {
    let (env, dns) = setup("dns-unlisted", 30);
    let agent = env.agent(&domain_policy("{unlisted: deny}", FX));
    // A name no rule covers: the query itself is refused in the kernel (nothing reaches the
    // resolver: no DNS tunnelling to unknown domains).
    let r = client(&env, &["resolve", "exfil-data.evil.test"]);
    assert!(r["error"].is_string(), "{r}");
    assert!(dns.queries().iter().all(|q| q["name"] != "exfil-data.evil.test"), "the query reached the resolver");
    let pid = r["pid"].as_u64().expect("pid");
    let ev = agent.wait_event("refused query", |e| e["kind"] == "dns" && e["pid"] == pid);
    assert_eq!(
        (ev["phase"].as_str(), ev["verdict"].as_str(), ev["query"].as_str()),
        (Some("query"), Some("deny"), Some("exfil-data.evil.test")),
        "{ev}"
    );
    // A query for an allowed name that smuggles more than its question is a query that does not
    // parse: refused too. Trailing bytes, and a second query in the same GSO datagram, fail the
    // send; a second query pipelined in the same TCP segment gets no answer (the segment is
    // dropped).
    for kind in ["udp-trailing", "udp-gso"] {
        let r = client(&env, &["smuggle", kind, "ok.fx.test", "exfil.evil.test"]);
        assert_eq!(r["errno"], 1, "{kind}: {r}");
    }
    for (kind, name) in [("tcp-pipelined", "exfil2.evil.test"), ("tcp-split", "exfil3.evil.test")] {
        let r = client(&env, &["smuggle", kind, "ok.fx.test", name]);
        assert_eq!(r["answer_bytes"], 0, "{kind}: {r}");
    }
    assert!(
        dns.queries().iter().all(|q| q["name"].as_str().is_none_or(|n| !n.starts_with("exfil"))),
        "{:?}",
        dns.queries()
    );
    // The suffix of a wildcard is not below it.
    assert!(client(&env, &["resolve", "fx.test"])["error"].is_string());
    // An address nobody resolved: refused, although the resolver hands out its neighbours.
    assert!(!client(&env, &["resolve", "a.fx.test"])["addr"].is_null());
    assert_eq!(connect(&env, "198.18.200.200"), 1);
    // The same policy with `unlisted: alert` lets the lookup through and reports it, but the
    // address it got is still refused (no rule allows it).
    drop(agent);
    let agent = env.agent(&domain_policy("{unlisted: alert}", FX));
    let r = client(&env, &["resolve", "other.evil.test"]);
    let addr = r["addr"].as_str().expect("resolved").to_owned();
    let pid = r["pid"].as_u64().expect("pid");
    let ev = agent.wait_event("reported query", |e| e["kind"] == "dns" && e["pid"] == pid && e["phase"] == "query");
    assert_eq!(ev["verdict"], "alert", "{ev}");
    // Refused, and still named: operators rolling out a policy see which names they miss.
    let r = client(&env, &["rounds", "other2.evil.test", "1", "443", "4"]);
    assert_eq!(r["n_refused"], 1, "{r}");
    let pid = r["pid"].as_u64().expect("pid");
    let ev = agent.wait_event("refused named", |e| e["kind"] == "connect" && e["pid"] == pid && e["dport"] == 443);
    assert_eq!((ev["verdict"].as_str(), ev["domain"].as_str()), (Some("deny"), Some("other2.evil.test")), "{ev}");
    assert!(ev["domain_rule"].is_null(), "{ev}");
    assert_eq!(connect(&env, &addr), 1);
}

#[test]
fn addresses_expire_after_ttl_plus_grace() {
    let (env, _dns) = setup("dns-expiry", 1);
    let _agent = env.agent(&domain_policy("{grace: 1s}", FX));
    let r = client(&env, &["resolve", "exp.fx.test"]);
    let addr = r["addr"].as_str().expect("resolved").to_owned();
    assert_eq!(connect(&env, &addr), 0, "allowed within TTL + grace");
    sleep(Duration::from_millis(2600));
    assert_eq!(connect(&env, &addr), 1, "refused once TTL (1 s) + grace (1 s) passed with no new answer");
}

#[test]
fn cname_chains_aaaa_many_answers_edns_and_tcp() {
    let (env, dns) = setup("dns-shapes", 30);
    let _agent = env.agent(&domain_policy("{unlisted: deny}", FX));
    // CNAME chain: the allowed name is the one asked for; the address belongs to real.*.
    let a = dig(&env, &["alias.fx.test", "A"]);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(connect(&env, &a[0]), 0);
    // AAAA.
    let a = dig(&env, &["dual.fx.test", "AAAA"]);
    assert!(a.len() == 1 && a[0].contains(':'), "{a:?}");
    assert_eq!(connect(&env, &a[0]), 0);
    // 40 answers in one datagram: the last one is allowed too.
    let a = dig(&env, &["many40.fx.test", "A"]);
    assert_eq!(a.len(), 40);
    assert_eq!(connect(&env, &a[39]), 0);
    // EDNS0, a 1.6 KB answer over UDP.
    let a = dig(&env, &["+bufsize=4096", "many100.fx.test", "A"]);
    assert_eq!(a.len(), 100);
    assert_eq!(connect(&env, &a[99]), 0);
    assert!(dns.queries().iter().any(|q| q["name"] == "many100.fx.test" && q["proto"] == "udp" && q["tc"] == false));
    // Without EDNS the answer is truncated and dig asks again over TCP.
    let a = dig(&env, &["+noedns", "+ignore", "many101.fx.test", "A"]);
    assert!(a.is_empty(), "a truncated answer has no records: {a:?}");
    let a = dig(&env, &["+noedns", "many102.fx.test", "A"]);
    assert_eq!(a.len(), 102);
    assert!(dns.queries().iter().any(|q| q["name"] == "many102.fx.test" && q["proto"] == "tcp"));
    assert_eq!(connect(&env, &a[101]), 0);
    // Plain DNS over TCP.
    let a = dig(&env, &["+tcp", "tcp.fx.test", "A"]);
    assert_eq!(a.len(), 1);
    assert_eq!(connect(&env, &a[0]), 0);
    // Over IPv6 to the resolver, UDP and TCP.
    for transport in ["+notcp", "+tcp"] {
        let a = dig(&env, &["@2001:db8::53", transport, "v6.fx.test", "AAAA"]);
        assert_eq!(a.len(), 1, "{transport}: {a:?}");
        assert_eq!(connect(&env, &a[0]), 0, "{transport}");
    }
}

/// A node-local cache (dnsmasq on 127.0.0.53, as systemd-resolved or a Kubernetes node-local
/// DNS would be) outside the watched cgroup, forwarding to the resolver: the application asks
/// the cache, and the cache's answers teach the addresses.
#[test]
fn a_node_local_cache_on_127_0_0_53() {
    let (mut env, _dns) = setup("dns-cache", 1);
    let pidfile = env.path("dnsmasq.pid");
    let child = Command::new("ip")
        .args(["netns", "exec", &env.netns, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts"])
        .args(["--listen-address=127.0.0.53", "--bind-interfaces", "--server=198.18.0.53", "--cache-size=1000"])
        .arg(format!("--pid-file={}", pidfile.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    env.adopt(child);
    let etc = Path::new("/etc/netns").join(&env.netns).join("resolv.conf");
    std::fs::write(&etc, "nameserver 127.0.0.53\noptions timeout:1 attempts:2\n").expect("resolv.conf");
    sleep(Duration::from_millis(300));
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  dns: {{unlisted: deny}}\n  allow:\n    - {{name: cache, cidr: 127.0.0.53/32, ports: [53]}}\n  vendors:\n{FX}"
    )));
    let r = client(&env, &["rounds", "c{}.fx.test", "100", "443", "46"]);
    assert_eq!((r["ok"].as_u64(), r["n_refused"].as_u64()), (Some(100), Some(0)), "{r}\n{}", agent.log());
    let d = agent.wait_event("answer from the cache", |e| e["kind"] == "dns" && e["phase"] == "answer");
    assert_eq!(d["server"], "127.0.0.53", "{d}");
    // The cache's answer to an unlisted name never comes: the query is refused on the way out.
    assert!(client(&env, &["resolve", "unlisted.example"])["error"].is_string());
}

/// The documented choice for DNS over TCP: an answer is read from the segment that starts it.
/// With a 1280-byte MTU (and no segmentation offload) a 102-record answer spans two segments:
/// the records in the first are learnt, the rest are not, and the event says so.
#[test]
fn a_tcp_answer_is_learnt_up_to_the_end_of_its_first_segment() {
    let (env, _dns) = setup("dns-tcpseg", 30);
    env.ip(&["link", "set", "lo", "mtu", "1280"]);
    env.ip(&["link", "set", "lo", "gso_max_size", "1280"]);
    let agent = env.agent(&domain_policy("{unlisted: deny}", FX));
    let a = dig(&env, &["+tcp", "many102.fx.test", "A"]);
    assert_eq!(a.len(), 102, "{a:?}");
    assert_eq!(connect(&env, &a[0]), 0, "the first segment's records are learnt");
    assert_eq!(connect(&env, &a[101]), 1, "records in a later segment are not");
    let ev = agent.wait_event("the partial answer", |e| e["kind"] == "dns" && e["phase"] == "answer");
    assert!(ev["problems"].as_array().is_some_and(|p| p.iter().any(|x| x == "parse_limit")), "{ev}");
    let learnt = ev["learnt"].as_u64().expect("learnt");
    assert!(learnt > 10 && learnt < 102, "{ev}");
    // The program's own diagnostic (aya-log) for the rare path reaches the agent's log.
    wait_for(
        Duration::from_secs(5),
        || agent.log().contains("dns answer learnt in part"),
        || format!("no kernel diagnostic in the agent log:\n{}", agent.log()),
    );
}

/// A forged answer opens nothing. The victim (in the watched cgroup) asks the resolver for a
/// name it never answers (`silent.*`), so only the forgery can arrive.
#[test]
fn forged_answers_open_nothing() {
    let (env, _dns) = setup("dns-forge", 30);
    env.ip(&["addr", "add", "198.18.0.54/32", "dev", "lo"]);
    let agent = env.agent(&domain_policy("{unlisted: deny}", FX));
    let forge = |kind: &str, sport: u16, forged: &str| -> (Value, Value) {
        let txid = "4660";
        let script = format!(
            "import subprocess, sys; p = subprocess.Popen([sys.executable, {:?}, 'wait-query', 'silent.fx.test', '{txid}', '{sport}', '{forged}'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True); pid = p.stdout.readline(); print(pid.strip(), flush=True); p.stdin.write(sys.stdin.readline()); p.stdin.flush(); print(p.stdout.readline().strip(), flush=True)",
            py("dns_client.py")
        );
        let held = Held::start(&env, "python3", &script);
        // The query is on its way; forge the answer from outside the cgroup, as the network would.
        let f = Command::new("ip")
            .args([
                "netns",
                "exec",
                &env.netns,
                "python3",
                &py("dns_client.py"),
                "forge",
                kind,
                "silent.fx.test",
                txid,
                &sport.to_string(),
                forged,
            ])
            .output()
            .expect("forge");
        assert!(f.status.success(), "forge {kind}: {}", String::from_utf8_lossy(&f.stderr));
        let f: Value = serde_json::from_slice(&f.stdout).expect("forge output");
        assert_eq!(f["errno"], 0, "{kind}: the forgery was not sent: {f}");
        sleep(Duration::from_millis(100));
        let victim: Value = serde_json::from_str(&held.go()).expect("victim output");
        (f, victim)
    };
    // From port 53 of another local address: delivered to the application, learns nothing.
    let (_, v) = forge("wrong-source", 40001, "198.18.201.1");
    assert!(v["received_from"].is_array(), "the application got the forgery: {v}");
    assert_eq!(v["errno"], 1, "wrong source: {v}");
    // The resolver's own address and port (a raw socket), but a transaction id or a question
    // that matches no outstanding query of that socket.
    let (_, v) = forge("wrong-txid", 40002, "198.18.201.2");
    assert_eq!(v["errno"], 1, "wrong txid: {v}");
    let (_, v) = forge("wrong-question", 40003, "198.18.201.3");
    assert_eq!(v["errno"], 1, "wrong question: {v}");
    // A bad UDP checksum: the kernel drops it after the DNS program ran; it must not have
    // taught anything.
    let (_, v) = forge("bad-checksum", 40004, "198.18.201.4");
    assert!(v["received_from"].is_null(), "the kernel drops a bad checksum: {v}");
    assert_eq!(v["errno"], 1, "bad checksum: {v}");
    // Control: the very same forgery with a good checksum is indistinguishable from the resolver
    // (an off-path attacker who guessed port and id): it is accepted, which shows the refusals
    // above came from what differed.
    let (_, v) = forge("good-checksum", 40005, "198.18.201.5");
    assert!(v["received_from"].is_array(), "{v}");
    assert_eq!(
        v["errno"],
        0,
        "control: {v}\n{:#?}",
        agent.events().into_iter().filter(|e| e["kind"] == "dns").map(|e| e["problems"].clone()).collect::<Vec<_>>()
    );
    let rejected: Vec<Value> =
        agent.events().into_iter().filter(|e| e["kind"] == "dns" && e["phase"] == "rejected").collect();
    for why in ["wrong_source", "no_matching_query", "wrong_question", "bad_checksum"] {
        assert!(
            rejected.iter().any(|e| e["problems"].as_array().is_some_and(|p| p.iter().any(|x| x == why))),
            "no rejected event for {why}: {rejected:#?}"
        );
    }
    // A process that forges the resolver's answer to itself from a raw socket: refused on the
    // way out, reported, and nothing learnt.
    let held = Held::start(
        &env,
        "python3",
        &format!(
            "import subprocess, sys; p = subprocess.Popen([sys.executable, {:?}, 'self-spoof', 'silent.fx.test', '4661', '40006', '198.18.201.6'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True); print(p.stdout.readline().strip(), flush=True); p.stdin.write(sys.stdin.readline()); p.stdin.flush(); print(p.stdout.readline().strip(), flush=True)",
            py("dns_client.py")
        ),
    );
    let v: Value = serde_json::from_str(&held.go()).expect("self-spoof output");
    assert_eq!(v["spoof_errno"], 1, "the raw-socket forgery must be refused on egress: {v}");
    assert_eq!(v["errno"], 1, "{v}");
    agent.wait_event("spoof event", |e| e["kind"] == "dns" && e["phase"] == "spoof" && e["verdict"] == "deny");
}

/// Outstanding queries are kept per socket: a process that floods queries cannot push another
/// process's outstanding query out (with one shared table of 8,192, a flood could).
#[test]
fn a_flood_of_queries_cannot_push_out_another_process_query() {
    let (env, _dns) = setup("dns-flood", 30);
    let agent = env.agent(&domain_policy("{unlisted: deny}", FX));
    let script = format!(
        "import subprocess, sys; p = subprocess.Popen([sys.executable, {:?}, 'wait-query', 'silent.fx.test', '4662', '40007', '198.18.203.1'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True); print(p.stdout.readline().strip(), flush=True); p.stdin.write(sys.stdin.readline()); p.stdin.flush(); print(p.stdout.readline().strip(), flush=True)",
        py("dns_client.py")
    );
    let victim = Held::start(&env, "python3", &script);
    let flood = client(&env, &["flood", "40000"]);
    assert_eq!(flood["sent"], 40000, "{flood}");
    // The resolver's answer to the victim arrives only now (sent from its address and port).
    let f = Command::new("ip")
        .args(["netns", "exec", &env.netns, "python3", &py("dns_client.py"), "forge", "good-checksum"])
        .args(["silent.fx.test", "4662", "40007", "198.18.203.1"])
        .output()
        .expect("answer");
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    sleep(Duration::from_millis(100));
    let v: Value = serde_json::from_str(&victim.go()).expect("victim output");
    assert_eq!(v["errno"], 0, "the victim's answer must still be trusted after the flood: {v}\n{}", agent.log());
}

/// An unprivileged process makes its own user and network namespace, where it may bind port 53
/// and answer its own query for an allowed name: what it learns there stays there. Its parent
/// namespace (the host's, here the test's) does not get the forged address.
#[test]
fn an_answer_forged_in_a_namespace_of_its_own_opens_nothing_outside_it() {
    let (env, _dns) = setup("dns-userns", 30);
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  allow:\n    - {{name: loopback, cidr: 127.0.0.0/8}}\n    - {{name: resolver, cidr: {DNS4}/32, ports: [53]}}\n  vendors:\n{FX}"
    )));
    let script =
        format!("ip link set lo up && exec python3 {} userns-forge x.fx.test 198.18.202.1", py("dns_client.py"));
    let out = env
        .in_cgroup(
            "setpriv",
            &["--reuid", "65534", "--regid", "65534", "--clear-groups", "unshare", "-Urn", "sh", "-c", &script],
        )
        .output()
        .expect("userns forger");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("forger output");
    assert_eq!(r["answered"], true, "the forgery was answered inside the namespace: {r}");
    let ev = agent.wait_event("the forged answer", |e| e["kind"] == "dns" && e["phase"] == "answer");
    assert_eq!(ev["learnt"], 1, "learnt, for that namespace: {ev}");
    assert_eq!(connect(&env, "198.18.202.1"), 1, "the forged address must stay refused outside that namespace");
}

#[test]
fn two_vendors_sharing_an_address_each_keep_their_processes() {
    let (env, _dns) = setup("dns-shared", 30);
    let vendors = "    - name: a\n      destinations: [{domain: shared.a.test}]\n      ports: [443]\n      processes: [{comm: client-a}]\n    - name: b\n      destinations: [{domain: shared.b.test}]\n      ports: [443]\n      processes: [{comm: client-b}]\n";
    let agent = env.agent(&domain_policy("{unlisted: alert}", vendors));
    let run = |proc_name: &str, name: &str| -> Value {
        client_named(&env, Some(proc_name), &["rounds", name, "1", "443", "4"])
    };
    // Both names resolve to the same CDN address; each vendor's process reaches it.
    let a = run("client-a", "shared.a.test");
    assert_eq!(a["ok"], 1, "{a}\n{}", agent.log());
    let b = run("client-b", "shared.b.test");
    assert_eq!(b["ok"], 1, "{b}");
    // Another process that resolved one of the names is refused: the address is reserved.
    let c = run("client-c", "shared.a.test");
    assert_eq!(c["n_refused"], 1, "{c}");
    let pid = c["pid"].as_u64().expect("pid");
    let ev = agent.wait_event("refused shared", |e| e["kind"] == "connect" && e["pid"] == pid && e["dport"] == 443);
    assert_eq!((ev["verdict"].as_str(), ev["reason"].as_str()), (Some("deny"), Some("process")), "{ev}");
    assert_eq!(ev["dst"], "198.18.200.1");
    assert_eq!(ev["domain"], "shared.a.test");
}

#[test]
fn a_reload_keeps_learnt_addresses_of_names_still_in_the_policy() {
    let (env, _dns) = setup("dns-reload", 60);
    let agent = env.agent(&domain_policy("{unlisted: alert}", FX));
    let policy_path = env.path("policy.yaml");
    let addr = client(&env, &["resolve", "keep.fx.test"])["addr"].as_str().expect("resolved").to_owned();
    // Another vendor joins: the address learnt before is still allowed, without a new lookup.
    let more = format!("{FX}    - name: other\n      destinations: [{{domain: other.test}}]\n      ports: [443]\n");
    write_atomic(&policy_path, &domain_policy("{unlisted: alert}", &more));
    wait_for(Duration::from_secs(10), || agent.log().contains("generation=2"), || agent.log());
    assert_eq!(connect(&env, &addr), 0, "{}", agent.log());
    // The name leaves the policy: its address goes with it at once.
    write_atomic(
        &policy_path,
        &domain_policy(
            "{unlisted: alert}",
            "    - name: other\n      destinations: [{domain: other.test}]\n      ports: [443]\n",
        ),
    );
    wait_for(Duration::from_secs(10), || agent.log().contains("generation=3"), || agent.log());
    assert_eq!(connect(&env, &addr), 1);
}

#[test]
fn the_kill_switch_refuses_a_domain_vendors_learnt_addresses_and_new_answers() {
    let (env, _dns) = setup("dns-kill", 30);
    let agent = env.agent(&domain_policy("{grace: 1s, unlisted: deny}", FX));
    let addr = client(&env, &["resolve", "a.fx.test"])["addr"].as_str().expect("an address").to_owned();
    assert_eq!(connect(&env, &addr), 0, "{}", agent.log());
    let out = agent.admin("block", &["fx", "--reason", "test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The address learnt before the block, and one learnt after it, are both refused.
    assert_eq!(connect(&env, &addr), i64::from(libc::EPERM), "a learnt address of a killed vendor");
    let r = client(&env, &["rounds", "k{}.fx.test", "3", "443", "46"]);
    assert_eq!((r["ok"].as_u64(), r["n_refused"].as_u64()), (Some(0), Some(3)), "{r}\n{}", agent.log());
    let ev = agent.wait_event("a kill switch refusal of a learnt address", |e| {
        e["kind"] == "connect" && e["dst"] == addr.as_str() && e["verdict"] == "deny"
    });
    assert_eq!(
        (ev["reason"].as_str(), ev["vendor"].as_str(), ev["kill_switch"].as_bool()),
        (Some("kill_switch"), Some("fx"), Some(true)),
        "{ev}"
    );
    assert_eq!(ev["domain_rule"], "*.fx.test", "{ev}");
    // DNS itself (an infrastructure rule) still works, and unblocking restores the vendor.
    assert!(agent.admin("unblock", &["fx"]).status.success());
    assert_eq!(connect(&env, &addr), 0);
    let r = client(&env, &["rounds", "u{}.fx.test", "3", "443", "46"]);
    assert_eq!(r["ok"].as_u64(), Some(3), "{r}");
}
