//! `cargo xtask bench connect`: the cost the agent adds to connect(), measured side by side with
//! no agent, the agent in monitor mode and in enforce mode, in one run, on the same machine.
//! Prints ratios against the no-agent baseline; absolute times are printed for context only.
//!
//! The client runs inside a private namespace and a child cgroup (see the tests' harness), and
//! connects to a listener on the namespace's loopback. Two operations are timed:
//! - TCP connect + close: what an application pays per new connection;
//! - UDP connect(): a syscall that sends no packet, so the hook's share is seen undiluted;
//! - a one-byte round trip between two threads (two context switches at least): what the
//!   agent's host-wide `sched_switch` program (ptrace stops, for `untampered`) costs everything.
//!
//! Configurations are interleaved round by round, and the median of the rounds is reported, so
//! drift on the machine affects all three alike.
//!
//! `cargo xtask bench dns` (module [`dns`]): the latency the agent adds to a DNS lookup and to the
//! first connect to the answered address.
//!
//! `cargo xtask bench flows` (module [`flows`]): bulk TCP throughput with and without the agent,
//! and the agent's memory with 100,000 open flows. `cargo xtask bench events` (module [`events`]):
//! events and bytes of JSON the agent writes for chatty UDP and TCP clients.

pub mod dns;
pub mod events;
pub mod flows;

use std::{
    net::{TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use egress_agent_tests::{policy, Agent, TestEnv, ADDR4};

#[derive(Subcommand)]
pub enum Which {
    /// Policy reload time: a large policy (default 10,000 rules from the published cloud ranges in tests/data)
    /// against a 100-rule baseline, both reloaded in the same agent.
    Reload {
        #[arg(long, default_value_t = 10_000)]
        rules: usize,
        /// Reloads per size (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// connect() cost: no agent vs monitor vs enforce.
    Connect {
        /// Rounds per configuration (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// TCP connections per round.
        #[arg(long, default_value_t = 4000)]
        tcp: u32,
        /// UDP connect() calls per round.
        #[arg(long, default_value_t = 40000)]
        udp: u32,
    },
    /// DNS lookup and first-connect latency: no agent vs enforce with a domain vendor.
    Dns {
        /// Rounds per configuration (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Lookups (each followed by one connect to its answer) per round.
        #[arg(long, default_value_t = 2000)]
        lookups: u32,
    },
    /// Bulk TCP throughput (a client the agent does not watch vs one it does, enforcing) and
    /// the agent's memory with many open flows.
    Flows {
        /// Rounds per configuration (the median is reported). Loopback throughput on a VM moves
        /// by ±10 % from one transfer to the next: many short rounds beat a few long ones.
        #[arg(long, default_value_t = 15)]
        rounds: u32,
        /// MiB transferred each way per round.
        #[arg(long, default_value_t = 512)]
        mib: u64,
        /// Concurrently open UDP flows for the memory measurement.
        #[arg(long, default_value_t = 100_000)]
        flows: u32,
    },
    /// Events and bytes written for a statsd-style UDP sender and for TCP connection churn.
    Events {
        /// Datagrams the statsd client sends.
        #[arg(long, default_value_t = 200_000)]
        datagrams: u32,
        /// TCP connections per second ...
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        /// ... for this many seconds.
        #[arg(long, default_value_t = 5)]
        secs: u32,
        /// Run the agent with --no-cmdline (smaller events).
        #[arg(long)]
        no_cmdline: bool,
    },
}

#[derive(Args)]
pub struct ClientArgs {
    #[arg(long)]
    addr: String,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    tcp: u32,
    #[arg(long)]
    udp: u32,
}

const PORT: u16 = 7000;

pub fn run(which: Which, agent_bin: &Path) -> Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load eBPF programs and create a network namespace: run them as root");
    }
    match which {
        Which::Connect { rounds, tcp, udp } => connect(agent_bin, rounds, tcp, udp),
        Which::Reload { rules, rounds } => reload(agent_bin, rules, rounds),
        Which::Dns { rounds, lookups } => dns::run(agent_bin, rounds, lookups),
        Which::Flows { rounds, mib, flows } => flows::run(agent_bin, rounds, mib, flows),
        Which::Events { datagrams, rate, secs, no_cmdline } => {
            events::run(agent_bin, datagrams, rate, secs, no_cmdline)
        }
    }
}

/// `rules` allow rules over the published cloud ranges (tests/data): each CIDR once per port variant, cycling,
/// so a 10,000-rule policy has 6,000+ distinct, overlapping prefixes. `variant` shifts the ports
/// so that two variants differ and every reload installs new tables.
fn large_policy(rules: usize, variant: u16) -> Result<String> {
    let data = crate::util::workspace_root().join("tests/data/cloud-ranges.txt");
    let text = std::fs::read_to_string(&data)
        .with_context(|| format!("reading {} (the public cloud ranges copied into the repository)", data.display()))?;
    let cidrs: Vec<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_whitespace().nth(1)).collect();
    if cidrs.is_empty() {
        bail!("{} has no CIDRs", data.display());
    }
    let mut spec = String::from("  mode: enforce\n  default: deny\n  allow:\n");
    for i in 0..rules {
        let cidr = cidrs[i % cidrs.len()];
        // Host bits appear in published lists; the policy format refuses them.
        let net: std::net::IpAddr =
            cidr.split('/').next().unwrap_or(cidr).parse().with_context(|| format!("bad CIDR {cidr}"))?;
        let len: u8 = cidr.split('/').nth(1).unwrap_or("32").parse().with_context(|| format!("bad CIDR {cidr}"))?;
        let net = truncate(net, len);
        let port = 443 + variant + (i / cidrs.len()) as u16;
        spec.push_str(&format!("    - {{cidr: \"{net}/{len}\", ports: [{port}], protocols: [tcp]}}\n"));
    }
    Ok(policy(&spec))
}

fn truncate(addr: std::net::IpAddr, len: u8) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V4(a) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            std::net::Ipv4Addr::from(u32::from(a) & mask).into()
        }
        std::net::IpAddr::V6(a) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            std::net::Ipv6Addr::from(u128::from(a) & mask).into()
        }
    }
}

/// Reloads by SIGHUP and reads the agent's own measurement of each one from its log:
/// `load_us` (read, parse, validate, compile) and `install_us` (fill the inactive slot, swap).
fn reload(agent_bin: &Path, rules: usize, rounds: u32) -> Result<()> {
    let env = TestEnv::new("bench-reload");
    let path = env.path("policy.yaml");
    let sizes = [100, rules];
    std::fs::write(&path, large_policy(sizes[0], 0)?)?;
    let agent = Agent::start(agent_bin, &path, &env.cgroup, &env.dir, &["--no-cmdline"]);
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); sizes.len()];
    let mut variant = 1;
    for round in 0..rounds {
        for (i, &n) in sizes.iter().enumerate() {
            std::fs::write(&path, large_policy(n, variant)?)?;
            variant ^= 1;
            // Let the file watcher's own reload of this write happen first and settle, so the
            // timed reload below is the only work in flight.
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let before = agent.log().matches("policy installed").count();
            std::fs::write(&path, large_policy(n, variant)?)?;
            agent.signal(libc::SIGHUP);
            let deadline = Instant::now() + std::time::Duration::from_secs(120);
            let line = loop {
                let log = agent.log();
                if let Some(l) = log.lines().filter(|l| l.contains("policy installed")).nth(before) {
                    break l.to_owned();
                }
                if Instant::now() > deadline {
                    bail!("no reload of the {n}-rule policy within 120 s:\n{log}");
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            };
            let field = |name: &str| -> Result<f64> {
                let plain = strip_ansi(&line);
                let v = plain
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .with_context(|| format!("no {name} in {plain}"))?;
                Ok(v.parse::<f64>()? / 1000.0)
            };
            let (load, install) = (field("load_us")?, field("install_us")?);
            eprintln!("round {round} {n} rules: load {load:.1} ms, install {install:.1} ms");
            results[i].push((load, install));
        }
    }
    let med = medians(&results);
    println!("\npolicy reload (SIGHUP), median of {rounds} rounds; the swap itself is one map write");
    println!("{:<8} {:>12} {:>14} {:>12} {:>10}", "rules", "load ms", "install ms", "total ms", "ratio");
    let base = med[0].0 + med[0].1;
    for (n, (l, i)) in sizes.iter().zip(&med) {
        println!("{:<8} {:>12.1} {:>14.1} {:>12.1} {:>10.1}", n, l, i, l + i, (l + i) / base);
    }
    drop(agent);
    Ok(())
}

/// Per configuration, the medians of the two measurements over the rounds.
fn medians(results: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    results.iter().map(|r| (median(r.iter().map(|x| x.0).collect()), median(r.iter().map(|x| x.1).collect()))).collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn connect(agent_bin: &Path, rounds: u32, tcp: u32, udp: u32) -> Result<()> {
    let env = TestEnv::new("bench");
    env.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
    env.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let spec = |mode: &str| {
        policy(&format!(
            "  mode: {mode}\n  default: deny\n  vendors:\n    - {{name: bench, destinations: [{{cidr: {ADDR4}}}], ports: [{PORT}], protocols: [tcp, udp]}}\n"
        ))
    };
    let configs = ["none", "monitor", "enforce"];
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); configs.len()];
    let mut switches: Vec<Vec<(f64, f64)>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        for (i, cfg) in configs.iter().enumerate() {
            let agent = if *cfg == "none" {
                None
            } else {
                let path = env.path(&format!("{cfg}.yaml"));
                std::fs::write(&path, spec(cfg))?;
                Some(Agent::start(agent_bin, &path, &env.cgroup, &env.dir, &["--no-cmdline"]))
            };
            let out = env
                .in_cgroup(
                    &xtask.display().to_string(),
                    &[
                        "bench-client",
                        "--addr",
                        ADDR4,
                        "--port",
                        &PORT.to_string(),
                        "--tcp",
                        &tcp.to_string(),
                        "--udp",
                        &udp.to_string(),
                    ],
                )
                .output()
                .context("running the bench client")?;
            if !out.status.success() {
                bail!("bench client failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text.split_whitespace().map(str::parse::<f64>);
            let (Some(Ok(t)), Some(Ok(u)), Some(Ok(s))) = (it.next(), it.next(), it.next()) else {
                bail!("bench client printed {text:?}")
            };
            if let Some(a) = &agent {
                let events = std::fs::read_to_string(&a.events).unwrap_or_default().lines().count();
                eprintln!(
                    "round {round} {cfg}: tcp {t:.0} ns, udp {u:.0} ns, switch {s:.0} ns, {events} events written"
                );
            } else {
                eprintln!("round {round} {cfg}: tcp {t:.0} ns, udp {u:.0} ns, switch {s:.0} ns");
            }
            results[i].push((t, u));
            switches[i].push((s, s));
            drop(agent);
            // Removing the events file keeps later rounds from paying for a growing file.
            let _ = Command::new("sh").arg("-c").arg(format!("rm -f {}/events-*.jsonl", env.dir.display())).status();
        }
    }
    let med = medians(&results);
    let sw = medians(&switches);
    println!(
        "\nconnect() cost, median of {rounds} rounds ({tcp} TCP connect+close, {udp} UDP connect, {} thread round trips per round)",
        udp / 2
    );
    println!(
        "{:<10} {:>14} {:>10} {:>14} {:>10} {:>14} {:>12}",
        "agent", "tcp ns/op", "tcp ratio", "udp ns/op", "udp ratio", "switch ns/rt", "switch ratio"
    );
    for ((cfg, (t, u)), (s, _)) in configs.iter().zip(&med).zip(&sw) {
        println!(
            "{:<10} {:>14.0} {:>10.3} {:>14.0} {:>10.3} {:>14.0} {:>12.3}",
            cfg,
            t,
            t / med[0].0,
            u,
            u / med[0].1,
            s,
            s / sw[0].0
        );
    }
    Ok(())
}

/// Runs inside the namespace and cgroup: a listener, then the timed loops. Prints
/// "<tcp ns/op> <udp ns/op>".
pub fn client(args: &ClientArgs) -> Result<()> {
    let listener = TcpListener::bind((args.addr.as_str(), args.port)).context("bench listener")?;
    let target = (args.addr.as_str(), args.port);
    // Each connection is accepted by this same thread right after connect() returns, so the
    // listen backlog never overflows (a dropped SYN costs a 1 s retransmit and swamps the result).
    let once = || -> Result<()> {
        let c = TcpStream::connect(target).context("tcp connect")?;
        let (s, _) = listener.accept().context("accept")?;
        close_with_reset(c);
        drop(s);
        Ok(())
    };
    // Warm-up: page in code, fill caches, let the agent's reader settle.
    for _ in 0..200 {
        once()?;
    }
    let t0 = Instant::now();
    for _ in 0..args.tcp {
        once()?;
    }
    let tcp_ns = t0.elapsed().as_nanos() as f64 / f64::from(args.tcp.max(1));
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    for _ in 0..1000 {
        sock.connect(target)?;
    }
    let t0 = Instant::now();
    for _ in 0..args.udp {
        sock.connect(target).context("udp connect")?;
    }
    let udp_ns = t0.elapsed().as_nanos() as f64 / f64::from(args.udp.max(1));
    println!("{tcp_ns} {udp_ns} {}", switch_round_trip_ns(args.udp / 2)?);
    Ok(())
}

/// Nanoseconds per round trip of one byte between two threads over a socket pair: each blocking
/// read puts a thread to sleep, so every round trip is (at least) two context switches — what
/// the agent's host-wide `sched_switch` program costs everything on the host.
fn switch_round_trip_ns(trips: u32) -> Result<f64> {
    use std::{
        io::{Read as _, Write as _},
        os::unix::net::UnixStream,
    };
    let (mut a, mut b) = UnixStream::pair().context("socket pair")?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut byte = [0u8; 1];
        loop {
            if b.read(&mut byte)? == 0 {
                return Ok(());
            }
            b.write_all(&byte)?;
        }
    });
    let mut byte = [7u8; 1];
    let mut trip = |a: &mut UnixStream| -> Result<()> {
        a.write_all(&byte).context("ping")?;
        a.read_exact(&mut byte).context("pong")?;
        Ok(())
    };
    for _ in 0..1000 {
        trip(&mut a)?;
    }
    let t0 = Instant::now();
    for _ in 0..trips {
        trip(&mut a)?;
    }
    let ns = t0.elapsed().as_nanos() as f64 / f64::from(trips.max(1));
    drop(a);
    echo.join().map_err(|_| anyhow::anyhow!("echo thread panicked"))?.context("echo")?;
    Ok(ns)
}

/// Closes with RST (SO_LINGER 0) so no TIME_WAIT piles up: thousands of connections per round
/// would otherwise exhaust ephemeral ports and make later rounds slower for reasons unrelated to
/// the agent.
pub(crate) fn close_with_reset(s: TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid socket fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// A bench server's sockets: a TCP listener on `tcp_port`, and a UDP socket on `udp_port` that a
/// thread drains; prints `ready` (what the bench waits for) once both are bound.
pub(crate) fn listen_with_udp_sink(tcp_port: u16, udp_port: u16) -> Result<std::net::TcpListener> {
    use std::{io::Write as _, net::Ipv4Addr};
    let listener = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, tcp_port)).context("bench listener")?;
    let udp = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, udp_port)).context("bench UDP sink")?;
    std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        while udp.recv(&mut b).is_ok() {}
    });
    println!("ready");
    std::io::stdout().flush()?;
    Ok(listener)
}
