//! `cargo xtask bench dns`: the latency the agent adds to a DNS lookup and to the first connect to
//! the address it answered, measured side by side with no agent, in one run, on the same machine.
//!
//! The client runs inside the test namespace and cgroup and does what an application does: a
//! lookup as glibc's resolver makes it (a fresh UDP socket, connect, send, wait for the answer),
//! then a TCP connect to the answered address. Every name is fresh and every answer is an address
//! never seen before, so in enforce mode each connect is allowed only because the kernel learned
//! the address from that very answer: the synchronous path, with no help from userspace. The
//! listener runs in the namespace but outside the watched cgroup, as a remote server would.
//!
//! Configurations are interleaved round by round and the median of the rounds is reported, as in
//! the connect benchmark. Each round reports the median per operation (a latency, not a
//! throughput), and its 99th percentile for the tail.

use std::{
    io::BufRead as _,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use egress_agent_tests::{policy, Agent, TestEnv, DNS4};
use hickory_proto::{
    op::{Message, MessageType, Query},
    rr::{Name, RData, RecordType},
};

use super::close_with_reset;

const PORT: u16 = 7000;
/// Answers stay valid for the whole run: expiry is not what is measured.
const TTL: u32 = 300;
/// Lookups (each with its connect) before the timed ones: page in code, fill caches.
const WARMUP: u32 = 200;
/// Local to the namespace (the resolver's answer range is made local) but never answered: the
/// resolver hands out at most 32,000 addresses from 198.18.128.1. A connect to it tells whether
/// the agent enforces at all, so a fast "enforce" round cannot be an agent that let all through.
pub(crate) const UNANSWERED: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 254);
/// A connect that takes longer has lost its SYN: reported as a failure rather than waited for
/// (a blocking connect would retry for two minutes).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct ClientArgs {
    /// Be the TCP listener on 0.0.0.0:PORT instead (prints "ready", accepts until killed).
    #[arg(long)]
    serve: bool,
    /// Timed lookups (each followed by a connect).
    #[arg(long, default_value_t = 0)]
    lookups: u32,
    /// Makes this run's names unique (r<i>-<tag>.bench.test), so no name was asked before.
    #[arg(long, default_value = "x")]
    tag: String,
}

/// What one client run measured: latencies in ns.
struct Round {
    lookup_med: f64,
    lookup_p99: f64,
    connect_med: f64,
    connect_p99: f64,
    failed: u64,
    /// Whether the connect to [`UNANSWERED`] succeeded.
    unanswered_connected: bool,
}

fn spec() -> String {
    policy(&format!(
        "  mode: enforce
  default: deny
  dns: {{grace: 5s, unlisted: deny}}
  allow:
    - {{name: resolver, cidr: {DNS4}/32, ports: [53], protocols: [udp, tcp]}}
  vendors:
    - name: bench
      destinations: [{{domain: \"*.bench.test\"}}]
      ports: [{PORT}]
      protocols: [tcp]
"
    ))
}

/// The listener process; killed when dropped (also when the benchmark fails half-way).
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(agent_bin: &Path, rounds: u32, lookups: u32) -> Result<()> {
    let dns_bin = crate::build_bin("egress-agent-tests", "ea-dns-server", true)?;
    let mut env = TestEnv::new("bench-dns");
    env.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
    let _resolver = env.dns(&dns_bin, TTL);
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &env.netns])
        .arg(&xtask)
        .args(["bench-dns-client", "--serve"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the bench listener")?;
    let stdout = child.stdout.take().context("listener stdout")?;
    let _listener = Listener(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).context("waiting for the bench listener")?;
    if line.trim() != "ready" {
        bail!("the bench listener did not start (printed {line:?})");
    }

    let path = env.path("enforce.yaml");
    std::fs::write(&path, spec())?;
    let configs = ["none", "enforce"];
    let mut results: Vec<Vec<Round>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, cfg) in configs.iter().enumerate() {
            let agent =
                (*cfg == "enforce").then(|| Agent::start(agent_bin, &path, &env.cgroup, &env.dir, &["--no-cmdline"]));
            let out = env
                .in_cgroup(
                    &xtask.display().to_string(),
                    &["bench-dns-client", "--lookups", &lookups.to_string(), "--tag", &format!("{cfg}{round}")],
                )
                .output()
                .context("running the bench client")?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                let log = agent.as_ref().map(Agent::log).unwrap_or_default();
                bail!("bench client failed in round {round} ({cfg}): {stderr}\nagent log:\n{log}");
            }
            let r = parse_round(&String::from_utf8_lossy(&out.stdout))?;
            if r.failed > 0 {
                let log = agent.as_ref().map(Agent::log).unwrap_or_default();
                bail!(
                    "round {round} ({cfg}): {} of {} first connects to a just-answered address FAILED; \
                     with the agent, the synchronous path (address learned from the answer in the kernel) \
                     is broken:\n{stderr}\nagent log:\n{log}",
                    r.failed,
                    lookups + WARMUP
                );
            }
            match (agent.is_some(), r.unanswered_connected) {
                (true, true) => bail!(
                    "round {round}: the agent let a connect to {UNANSWERED} (never answered) through: \
                     it is not enforcing, so its figures mean nothing"
                ),
                (false, false) => bail!("round {round}: without the agent, a connect to {UNANSWERED} failed"),
                _ => {}
            }
            let events = agent
                .as_ref()
                .map(|a| std::fs::read_to_string(&a.events).unwrap_or_default().lines().count().to_string())
                .unwrap_or_else(|| "-".into());
            eprintln!(
                "round {round} {cfg}: lookup {:.1} µs (p99 {:.1}), first connect {:.1} µs (p99 {:.1}), {events} events",
                r.lookup_med / 1e3,
                r.lookup_p99 / 1e3,
                r.connect_med / 1e3,
                r.connect_p99 / 1e3,
            );
            results[i].push(r);
            drop(agent);
            // Removing the events file keeps later rounds from paying for a growing file.
            let _ = Command::new("sh").arg("-c").arg(format!("rm -f {}/events-*.jsonl", env.dir.display())).status();
        }
    }

    let of = |i: usize, f: fn(&Round) -> f64| median(results[i].iter().map(f).collect()) / 1e3;
    let (base_l, base_c) = (of(0, |r| r.lookup_med), of(0, |r| r.connect_med));
    println!(
        "\nDNS lookup, then first connect to the answer: median of {rounds} rounds \
         ({lookups} lookups per round, each round's median per operation)"
    );
    println!(
        "{:<10} {:>10} {:>8} {:>10} {:>12} {:>8} {:>10} {:>14} {:>14}",
        "agent", "lookup µs", "ratio", "added µs", "connect µs", "ratio", "added µs", "lookup p99 µs", "connect p99 µs"
    );
    for (i, cfg) in configs.iter().enumerate() {
        let (l, c) = (of(i, |r| r.lookup_med), of(i, |r| r.connect_med));
        println!(
            "{:<10} {:>10.1} {:>8.3} {:>10.1} {:>12.1} {:>8.3} {:>10.1} {:>14.1} {:>14.1}",
            cfg,
            l,
            l / base_l,
            l - base_l,
            c,
            c / base_c,
            c - base_c,
            of(i, |r| r.lookup_p99),
            of(i, |r| r.connect_p99),
        );
    }
    Ok(())
}

fn parse_round(text: &str) -> Result<Round> {
    let v: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bench client printed {text:?}"))?;
    let [lookup_med, lookup_p99, connect_med, connect_p99, failed, unanswered] = v[..] else {
        bail!("bench client printed {text:?}")
    };
    Ok(Round {
        lookup_med,
        lookup_p99,
        connect_med,
        connect_p99,
        failed: failed as u64,
        unanswered_connected: unanswered != 0.0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The value at quantile `q` of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs inside the namespace: the listener (`--serve`, outside the cgroup), or the client (inside
/// it), which prints "<lookup median> <lookup p99> <connect median> <connect p99> <failed
/// connects> <1 if the unanswered address connected>", times in ns.
pub fn client(args: &ClientArgs) -> Result<()> {
    if args.serve {
        return serve();
    }
    let server: SocketAddr = (DNS4.parse::<Ipv4Addr>()?, 53).into();
    let mut buf = vec![0u8; 4096];
    let (mut lookup_ns, mut connect_ns) = (Vec::new(), Vec::new());
    let mut failed = 0u64;
    for i in 0..WARMUP + args.lookups {
        let name = format!("{}{i}-{}.bench.test.", if i < WARMUP { "w" } else { "r" }, args.tag);
        let query = encode_query(&name, i as u16)?;
        let t0 = Instant::now();
        let addr = lookup(server, &query, i as u16, &mut buf).with_context(|| format!("looking up {name}"))?;
        let t1 = Instant::now();
        let conn = TcpStream::connect_timeout(&(addr, PORT).into(), CONNECT_TIMEOUT);
        let t2 = Instant::now();
        match conn {
            Ok(c) => close_with_reset(c),
            Err(e) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("connect to {addr}:{PORT} (answer for {name}) failed: {e}");
                }
            }
        }
        if i >= WARMUP {
            lookup_ns.push((t1 - t0).as_nanos() as f64);
            connect_ns.push((t2 - t1).as_nanos() as f64);
        }
    }
    let unanswered = TcpStream::connect_timeout(&(UNANSWERED, PORT).into(), CONNECT_TIMEOUT).map(close_with_reset);
    lookup_ns.sort_by(f64::total_cmp);
    connect_ns.sort_by(f64::total_cmp);
    println!(
        "{} {} {} {} {failed} {}",
        quantile(&lookup_ns, 0.5),
        quantile(&lookup_ns, 0.99),
        quantile(&connect_ns, 0.5),
        quantile(&connect_ns, 0.99),
        u8::from(unanswered.is_ok())
    );
    Ok(())
}

pub(crate) fn encode_query(name: &str, id: u16) -> Result<Vec<u8>> {
    let mut msg = Message::new(id, MessageType::Query, hickory_proto::op::OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(msg.to_vec()?)
}

/// One lookup as glibc makes it: a fresh socket, connected to the server, one query, its answer.
fn lookup(server: SocketAddr, query: &[u8], id: u16, buf: &mut [u8]) -> Result<Ipv4Addr> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.send(query)?;
    loop {
        let n = sock.recv(buf).context("no answer within 2 s")?;
        let msg = Message::from_vec(&buf[..n])?;
        if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
            continue;
        }
        return msg
            .answers
            .iter()
            .find_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .with_context(|| format!("answer without an A record: {msg:?}"));
    }
}

/// Accepts and closes until killed. It runs outside the watched cgroup, as a remote server would,
/// so the agent sees the client's side only; accepting promptly keeps the accept queue short.
fn serve() -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).context("bench listener")?;
    println!("ready");
    for s in listener.incoming() {
        drop(s);
    }
    Ok(())
}
