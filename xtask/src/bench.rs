//! `cargo xtask bench connect`: the cost the agent adds to connect(), measured side by side with
//! no agent, the agent in monitor mode and in enforce mode, in one run, on the same machine.
//! Prints ratios against the no-agent baseline; absolute times are printed for context only.
//!
//! The client runs inside a private namespace and a child cgroup (see the tests' harness), and
//! connects to a listener on the namespace's loopback. Two operations are timed:
//! - TCP connect + close: what an application pays per new connection;
//! - UDP connect(): a syscall that sends no packet, so the hook's share is seen undiluted.
//! Configurations are interleaved round by round, and the median of the rounds is reported, so
//! drift on the machine affects all three alike.

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
    let Which::Connect { rounds, tcp, udp } = which;
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs and creates a network namespace: run it as root");
    }
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
                    &["bench-client", "--addr", ADDR4, "--port", &PORT.to_string(), "--tcp", &tcp.to_string(), "--udp", &udp.to_string()],
                )
                .output()
                .context("running the bench client")?;
            if !out.status.success() {
                bail!("bench client failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text.split_whitespace().map(str::parse::<f64>);
            let (Some(Ok(t)), Some(Ok(u))) = (it.next(), it.next()) else { bail!("bench client printed {text:?}") };
            if let Some(a) = &agent {
                let events = std::fs::read_to_string(&a.events).unwrap_or_default().lines().count();
                eprintln!("round {round} {cfg}: tcp {t:.0} ns, udp {u:.0} ns, {events} events written");
            } else {
                eprintln!("round {round} {cfg}: tcp {t:.0} ns, udp {u:.0} ns");
            }
            results[i].push((t, u));
            drop(agent);
            // Removing the events file keeps later rounds from paying for a growing file.
            let _ = Command::new("sh").arg("-c").arg(format!("rm -f {}/events-*.jsonl", env.dir.display())).status();
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let med: Vec<(f64, f64)> = results.iter().map(|r| (median(r.iter().map(|x| x.0).collect()), median(r.iter().map(|x| x.1).collect()))).collect();
    println!("\nconnect() cost, median of {rounds} rounds ({tcp} TCP connect+close, {udp} UDP connect per round)");
    println!("{:<10} {:>14} {:>10} {:>14} {:>10}", "agent", "tcp ns/op", "tcp ratio", "udp ns/op", "udp ratio");
    for (cfg, (t, u)) in configs.iter().zip(&med) {
        println!("{:<10} {:>14.0} {:>10.3} {:>14.0} {:>10.3}", cfg, t, t / med[0].0, u, u / med[0].1);
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
    println!("{tcp_ns} {udp_ns}");
    Ok(())
}

/// Closes with RST (SO_LINGER 0) so no TIME_WAIT piles up: thousands of connections per round
/// would otherwise exhaust ephemeral ports and make later rounds slower for reasons unrelated to
/// the agent.
fn close_with_reset(s: TcpStream) {
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
