//! `cargo xtask bench events`: how many events, and how many bytes of JSON, the agent writes for
//! two chatty but ordinary workloads, both to one allowed destination:
//! - statsd: one unconnected UDP socket sending datagrams as fast as it can (every `sendto`
//!   with an address goes through the sendmsg hook);
//! - connection churn: a service making TCP connections at a fixed rate to a local server that
//!   accepts and closes.
//!
//! Each workload runs once with no agent (the sender's own rate, for context) and once with the
//! agent enforcing a policy that allows it. After the client exits, the bench waits until the
//! events file stops growing (the agent has drained), stops the agent, and counts the lines by
//! `kind`, the bytes, and the events the kernel dropped (ring buffer full, from the agent's log).
//! Nothing is asserted.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use egress_agent_tests::{policy, Agent, TestEnv, ADDR4};

use super::{
    close_with_reset,
    flows::{agent_pid, clear_events, start_server, stop_and_dropped, wait_drained},
};

pub(crate) const TCP_PORT: u16 = 7000;
pub(crate) const STATSD_PORT: u16 = 8125;

#[derive(Args)]
pub struct ClientArgs {
    /// Be the server instead (TCP accept-and-close on TCP_PORT, UDP sink on STATSD_PORT).
    #[arg(long)]
    serve: bool,
    /// Send this many datagrams from one unconnected UDP socket.
    #[arg(long)]
    statsd: Option<u32>,
    /// Make TCP connections at this rate per second ...
    #[arg(long)]
    rate: Option<u32>,
    /// ... for this many seconds.
    #[arg(long, default_value_t = 5)]
    secs: u32,
}

fn spec() -> String {
    policy(&format!(
        "  mode: enforce
  default: deny
  allow:
    - {{name: service, cidr: {ADDR4}/32, ports: [{TCP_PORT}], protocols: [tcp]}}
    - {{name: statsd, cidr: {ADDR4}/32, ports: [{STATSD_PORT}], protocols: [udp]}}
"
    ))
}

/// What one client run did.
struct Run {
    attempts: u64,
    errors: u64,
    secs: f64,
}

pub fn run(agent_bin: &Path, datagrams: u32, rate: u32, secs: u32, no_cmdline: bool) -> Result<()> {
    let mut env = TestEnv::new("bench-events");
    env.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
    env.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    start_server(&mut env, &xtask, "bench-events-client")?;
    let path = env.path("enforce.yaml");
    std::fs::write(&path, spec())?;
    let extra: &[&str] = if no_cmdline { &["--no-cmdline"] } else { &[] };

    let workloads = [
        (
            format!("statsd: {datagrams} datagrams, one unconnected UDP socket, as fast as it can"),
            vec!["--statsd".to_owned(), datagrams.to_string()],
        ),
        (
            format!("TCP churn: {rate} connections/s for {secs} s (paced), server accepts and closes"),
            vec!["--rate".to_owned(), rate.to_string(), "--secs".to_owned(), secs.to_string()],
        ),
    ];
    let mut report = String::new();
    for (title, args) in &workloads {
        let mut cmd: Vec<&str> = vec!["bench-events-client"];
        cmd.extend(args.iter().map(String::as_str));
        let base = client(&env, &xtask, &cmd, None)?;
        eprintln!("{title}: no agent: {} attempts in {:.2} s", base.attempts, base.secs);

        let agent = Agent::start(agent_bin, &path, &env.cgroup, &env.dir, extra);
        agent_pid(&agent.events)?; // it is running
        let with = client(&env, &xtask, &cmd, Some(&agent))?;
        let t_end = Instant::now();
        let drained = wait_drained(&agent.events, Duration::from_secs(2), Duration::from_secs(120));
        // The file stopped growing 2 s before the wait returned.
        let drain_s = (t_end.elapsed().as_secs_f64() - 2.0).max(0.0);
        let events_path = agent.events.clone();
        let dropped = stop_and_dropped(agent);
        let text = std::fs::read(&events_path).unwrap_or_default();
        let bytes = text.len();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        let mut total = 0u64;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            total += 1;
            let kind = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["kind"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "(not JSON)".to_owned());
            *kinds.entry(kind).or_default() += 1;
        }
        clear_events(&env);

        let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let rate_base = base.attempts as f64 / base.secs;
        let rate_with = with.attempts as f64 / with.secs;
        let w = |s: &mut String, l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        w(&mut report, format!("\n{title}"));
        w(&mut report, format!("  attempts              {} ({} failed)", with.attempts, with.errors));
        w(
            &mut report,
            format!(
                "  attempt rate          {:.0}/s with the agent, {:.0}/s without (ratio {:.3})",
                rate_with,
                rate_base,
                rate_with / rate_base
            ),
        );
        w(
            &mut report,
            format!(
                "  events written        {total} ({})",
                if by_kind.is_empty() { "none".into() } else { by_kind.join(", ") }
            ),
        );
        w(
            &mut report,
            format!(
                "  bytes written         {bytes} ({:.1} MiB, {:.0} bytes/event)",
                bytes as f64 / 1048576.0,
                if total > 0 { bytes as f64 / total as f64 } else { 0.0 }
            ),
        );
        w(
            &mut report,
            format!(
                "  events per second     {:.0} (events / the client's {:.2} s); {:.0} bytes/s",
                total as f64 / with.secs,
                with.secs,
                bytes as f64 / with.secs
            ),
        );
        w(
            &mut report,
            format!("  kernel-dropped events {}", dropped.map_or_else(|| "unknown".to_owned(), |d| d.to_string())),
        );
        w(
            &mut report,
            format!(
                "  drain                 the events file stopped growing {drain_s:.1} s after the client exited{}",
                if drained { "" } else { " (still growing after 120 s: counts are partial)" }
            ),
        );
    }
    println!(
        "\nevents the agent writes (enforce, both workloads allowed; {})",
        if no_cmdline { "--no-cmdline" } else { "command lines included" }
    );
    print!("{report}");
    Ok(())
}

/// Runs the client in the cgroup; prints its failure with the agent's log.
fn client(env: &TestEnv, xtask: &Path, args: &[&str], agent: Option<&Agent>) -> Result<Run> {
    let out = env.in_cgroup(&xtask.display().to_string(), args).output().context("running the bench client")?;
    if !out.status.success() {
        let log = agent.map(Agent::log).unwrap_or_default();
        bail!("bench client {args:?} failed: {}\nagent log:\n{log}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<&str> = text.split_whitespace().collect();
    let [a, e, s] = v[..] else { bail!("bench client printed {text:?}") };
    Ok(Run { attempts: a.parse()?, errors: e.parse()?, secs: s.parse()? })
}

/// Runs inside the namespace: the server (`--serve`), or one workload, printing
/// "<attempts> <failed> <seconds>".
pub fn client_main(args: &ClientArgs) -> Result<()> {
    if args.serve {
        return serve();
    }
    let target: std::net::SocketAddr = (ADDR4.parse::<Ipv4Addr>()?, 0).into();
    let (attempts, errors, t0) = if let Some(n) = args.statsd {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        let dst = std::net::SocketAddr::new(target.ip(), STATSD_PORT);
        let msg = b"bench.requests:1|c|#service:bench";
        let mut errors = 0u64;
        let t0 = Instant::now();
        for _ in 0..n {
            if sock.send_to(msg, dst).is_err() {
                errors += 1;
            }
        }
        (u64::from(n), errors, t0)
    } else if let Some(rate) = args.rate {
        let dst = std::net::SocketAddr::new(target.ip(), TCP_PORT);
        let total = u64::from(rate) * u64::from(args.secs);
        let (mut done, mut errors) = (0u64, 0u64);
        let t0 = Instant::now();
        // Paced in small bursts: each connection is due at done/rate seconds; sleeping per
        // connection would undershoot (timer slack), so sleep only while ahead of schedule.
        while done < total {
            let due = ((t0.elapsed().as_secs_f64() * f64::from(rate)) as u64 + 1).min(total);
            if done >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            while done < due {
                match TcpStream::connect_timeout(&dst, Duration::from_secs(2)) {
                    Ok(c) => close_with_reset(c),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("connect: {e}");
                        }
                    }
                }
                done += 1;
            }
        }
        (total, errors, t0)
    } else {
        bail!("bench-events-client: --serve, --statsd or --rate");
    };
    println!("{attempts} {errors} {}", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Accepts and closes TCP connections and drains the UDP sink, until killed.
fn serve() -> Result<()> {
    let listener = super::listen_with_udp_sink(TCP_PORT, STATSD_PORT)?;
    for s in listener.incoming() {
        drop(s);
    }
    Ok(())
}
