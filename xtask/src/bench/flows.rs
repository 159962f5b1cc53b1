//! `cargo xtask bench flows`: what the agent costs a long-lived flow, and what many open flows
//! cost the agent.
//!
//! 1. Throughput: one bulk TCP transfer each way (client→server, then server→client) over the
//!    test namespace's loopback, with the agent enforcing a policy that allows the transfer: from
//!    a client in the watched cgroup, and from one in a sibling cgroup the agent does not watch
//!    (no hook runs for its sockets, as with no agent). Rounds alternate the order so drift
//!    affects both alike; medians are reported, with their ratio, and the programs' exact run
//!    time from the kernel's bpf stats. Every
//!    client run also probes a port the policy does not allow: watched, it must get EPERM
//!    (else the agent is not enforcing and its figures mean nothing), without it must not.
//! 2. Memory: the agent's VmRSS and VmHWM (/proc/PID/status) idle after start, and while a
//!    client in the cgroup holds 100,000 connected UDP sockets to one allowed destination (one
//!    datagram sent on each); also the kernel memory of the agent's maps (the sum of `memlock`
//!    over its bpf-map fds), for information.
//!
//! The server runs in the namespace but outside the watched cgroup, as a remote server would.
//! No timing is asserted: the bench prints, a person judges.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use egress_agent_tests::{policy, py, Agent, TestEnv, ADDR4};

/// The bulk-transfer listener.
const TCP_PORT: u16 = 7000;
/// The UDP sink the 100,000 flows send to.
const UDP_PORT: u16 = 7001;
/// Nothing listens here and the policy does not allow it: the enforcement probe.
const PROBE_PORT: u16 = 7002;
/// Source addresses of the UDP flows, added to the namespace's loopback: one address has at most
/// 64,512 ephemeral ports, so 100,000 sockets to one destination need several.
const UDP_SOURCES: [&str; 4] = ["198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"];
/// Read/write size of the bulk transfer.
const CHUNK: usize = 1 << 20;

#[derive(Args)]
pub struct ClientArgs {
    /// Be the server instead (bulk TCP on TCP_PORT, UDP sink on UDP_PORT; prints "ready").
    #[arg(long)]
    serve: bool,
    /// Bytes to transfer each way.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
}

fn spec() -> String {
    policy(&format!(
        "  mode: enforce
  default: deny
  allow:
    - {{name: bulk, cidr: {ADDR4}/32, ports: [{TCP_PORT}], protocols: [tcp]}}
    - {{name: flows, cidr: {ADDR4}/32, ports: [{UDP_PORT}], protocols: [udp]}}
"
    ))
}

pub fn run(agent_bin: &Path, rounds: u32, mib: u64, flows: u32) -> Result<()> {
    let mut env = TestEnv::new("bench-flows");
    env.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
    for a in UDP_SOURCES {
        env.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    start_server(&mut env, &xtask, "bench-flows-client")?;
    let path = env.path("enforce.yaml");
    std::fs::write(&path, spec())?;

    // 1. Throughput. One agent runs throughout; "none" is a client in a sibling cgroup the agent
    // does not watch (no hook runs for its sockets), "enforce" one in the watched cgroup. Same
    // machine state for both, rounds alternating the order, so that only the hooks differ.
    let bytes = mib << 20;
    let configs = ["none", "enforce"];
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); configs.len()];
    let free = FreeCgroup::new(&env)?;
    let agent = Agent::start(agent_bin, &path, &env.cgroup, &env.dir, &[]);
    // The kernel's own accounting of the programs' run time: an exact cost where throughput on
    // a shared VM moves by ±10 % from one transfer to the next.
    let stats = BpfStats::enable()?;
    let pid = agent_pid(&agent.events)?;
    let before = skb_prog_time(pid);
    let before_each = skb_prog_times();
    let mut watched_secs = 0.0;
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let cfg = configs[i];
            let watched = cfg == "enforce";
            let args = ["bench-flows-client", "--bytes", &bytes.to_string()];
            let xt = xtask.display().to_string();
            let mut cmd = if watched { env.in_cgroup(&xt, &args) } else { free.command(&env, &xt, &args) };
            let out = cmd.output().context("running the bench client")?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                bail!("bench client failed in round {round} ({cfg}): {stderr}\nagent log:\n{}", agent.log());
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<&str> = text.split_whitespace().collect();
            let [up, down, probe] = v[..] else { bail!("bench client printed {text:?}") };
            let (up, down): (f64, f64) = (up.parse()?, down.parse()?);
            match (watched, probe) {
                (true, "eperm") | (false, "refused") => {}
                (true, p) => bail!(
                    "round {round}: with the agent, a connect to {ADDR4}:{PROBE_PORT} (not allowed) was not \
                     refused with EPERM ({p}): the agent is not enforcing, so its figures mean nothing"
                ),
                (false, p) => {
                    bail!("round {round}: outside the watched cgroup, the probe connect got {p}, not ECONNREFUSED")
                }
            }
            eprintln!("round {round} {cfg}: client→server {up:.0} MB/s, server→client {down:.0} MB/s");
            if watched {
                watched_secs += bytes as f64 / 1e6 / up + bytes as f64 / 1e6 / down;
            }
            results[i].push((up, down));
        }
    }
    let after = skb_prog_time(pid);
    let after_each = skb_prog_times();
    drop(stats);
    drop(agent);
    drop(free);
    clear_events(&env);
    let med = super::medians(&results);
    println!(
        "\nbulk TCP throughput over loopback, median of {rounds} rounds ({mib} MiB each way per round, \
         MB = 10^6 bytes; the agent enforcing a policy that allows the transfer)"
    );
    println!("{:<10} {:>18} {:>8} {:>18} {:>8}", "agent", "client→server MB/s", "ratio", "server→client MB/s", "ratio");
    for (cfg, (u, d)) in configs.iter().zip(&med) {
        println!("{:<10} {:>18.0} {:>8.3} {:>18.0} {:>8.3}", cfg, u, u / med[0].0, d, d / med[0].1);
    }
    let paired = |f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = results[1].iter().zip(&results[0]).map(|(a, b)| f(a) / f(b)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "ratio = agent / no agent (of the medians); target ≥ 0.97. Median of the per-round ratios: \
         client→server {:.3}, server→client {:.3}",
        paired(|r| r.0),
        paired(|r| r.1)
    );

    let (ns, runs) = (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1));
    let share = ns as f64 / 1e9 / watched_secs;
    println!(
        "the agent's packet programs (kernel bpf stats): {runs} runs, {:.0} ns each, {:.1} ms in {watched_secs:.1} s \
         of watched transfers = {:.1} % of the transfers' time; a CPU-bound transfer then keeps 1/(1 + that) = {:.3} \
         of its throughput",
        ns as f64 / runs.max(1) as f64,
        ns as f64 / 1e6,
        share * 100.0,
        1.0 / (1.0 + share)
    );
    for (name, (t, n)) in &after_each {
        let (t0, n0) = before_each.get(name).copied().unwrap_or_default();
        let (t, n) = (t.saturating_sub(t0), n.saturating_sub(n0));
        println!(
            "  {name}: {n} runs, {:.0} ns each, {:.1} ms = {:.2} % of the transfers' time",
            t as f64 / n.max(1) as f64,
            t as f64 / 1e6,
            t as f64 / 1e9 / watched_secs * 100.0
        );
    }

    // 2. Memory.
    memory(&env, agent_bin, &path, flows)?;
    Ok(())
}

/// `kernel.bpf_stats_enabled` on for the bench (the kernel then times every program run), and
/// back to what it was when dropped.
struct BpfStats(String);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let old = std::fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(BpfStats(old.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.0);
    }
}

/// (run time in ns, runs) of the agent's cgroup_skb programs (prog_type 8), from fdinfo.
fn skb_prog_time(pid: u32) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return total };
    for e in rd.flatten() {
        let Ok(info) = std::fs::read_to_string(e.path()) else { continue };
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse::<u64>().ok());
        if field("prog_type:") == Some(8) {
            total.0 += field("run_time_ns:").unwrap_or(0);
            total.1 += field("run_cnt:").unwrap_or(0);
        }
    }
    total
}

/// (run time in ns, runs) of each cgroup_skb program named `skb_*` (the agent's: no other runs
/// on a bench machine), by name.
fn skb_prog_times() -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for info in aya::programs::loaded_programs().flatten() {
        let Some(name) = info.name_as_str().filter(|n| n.starts_with("skb_")).map(str::to_owned) else { continue };
        if info.program_type() as u32 != 8 {
            continue;
        }
        let e = out.entry(name).or_insert((0, 0));
        e.0 += info.run_time().as_nanos() as u64;
        e.1 += info.run_count();
    }
    out
}

/// A sibling of the test's cgroup that the agent does not watch (removed when dropped).
struct FreeCgroup(PathBuf);

impl FreeCgroup {
    fn new(env: &TestEnv) -> Result<Self> {
        let mut name = env.cgroup.file_name().context("cgroup name")?.to_os_string();
        name.push("-free");
        let dir = env.cgroup.with_file_name(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(FreeCgroup(dir))
    }

    /// `program args` in this cgroup and the test's namespace.
    fn command(&self, env: &TestEnv, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", "echo $$ > \"$1/cgroup.procs\" && shift && exec ip netns exec \"$@\"", "sh"])
            .arg(&self.0)
            .arg(&env.netns)
            .arg(program)
            .args(args);
        c
    }
}

impl Drop for FreeCgroup {
    fn drop(&mut self) {
        // Its processes have exited (each client runs to completion): the cgroup is empty.
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn memory(env: &TestEnv, agent_bin: &Path, policy: &Path, flows: u32) -> Result<()> {
    let agent = Agent::start(agent_bin, policy, &env.cgroup, &env.dir, &[]);
    let pid = agent_pid(&agent.events)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss(pid)?;
    let maps_idle = map_memlock(pid);

    let srcs = UDP_SOURCES.join(",");
    let mut child = env
        .in_cgroup("python3", &[&py("udp_flows.py"), ADDR4, &UDP_PORT.to_string(), &flows.to_string(), &srcs])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the UDP flows client")?;
    let mut stdin = child.stdin.take().context("client stdin")?;
    let mut out = BufReader::new(child.stdout.take().context("client stdout")?);
    let mut line = String::new();
    out.read_line(&mut line).context("waiting for the UDP flows client")?;
    let opened: serde_json::Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(_) => {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            bail!("the UDP flows client failed (printed {line:?}): {err}");
        }
    };
    let open = opened["open"].as_u64().unwrap_or(0);
    eprintln!(
        "{open} connected UDP sockets open in {} processes ({} errors, first: {}) in {:.1} s; \
         waiting for the agent to catch up",
        opened["procs"],
        opened["errors"],
        opened["first_error"],
        opened["secs"].as_f64().unwrap_or(0.0)
    );
    std::thread::sleep(Duration::from_secs(3));
    let drained = wait_drained(&agent.events, Duration::from_secs(1), Duration::from_secs(60));
    let held = rss(pid)?;
    let maps_held = map_memlock(pid);
    let events_held = count_lines(&agent.events);

    // Close them all.
    let _ = stdin.write_all(b"close\n");
    line.clear();
    let _ = out.read_line(&mut line);
    let _ = child.wait();
    std::thread::sleep(Duration::from_secs(3));
    let closed = rss(pid)?;
    let dropped = stop_and_dropped(agent);

    let mib = |kb: u64| kb as f64 / 1024.0;
    println!(
        "\nagent memory (VmRSS / VmHWM from /proc/PID/status); flows: {open} connected UDP sockets from the \
         cgroup ({} processes, the file limit allowing) to {ADDR4}:{UDP_PORT}, one datagram sent on each, held open",
        opened["procs"]
    );
    println!("{:<34} {:>10} {:>10}", "", "RSS MiB", "HWM MiB");
    println!("{:<34} {:>10.1} {:>10.1}", "idle after start", mib(idle.0), mib(idle.1));
    println!("{:<34} {:>10.1} {:>10.1}   target ≤ 64 MiB", format!("with {open} flows open"), mib(held.0), mib(held.1));
    println!("{:<34} {:>10.1} {:>10.1}", "after they closed (+3 s)", mib(closed.0), mib(closed.1));
    let maps = |m: Option<(u64, usize)>| {
        m.map_or_else(|| "unavailable".to_owned(), |(b, n)| format!("{:.1} MiB in {n} maps", b as f64 / 1048576.0))
    };
    println!(
        "kernel memory of the agent's maps (memlock, fdinfo): idle {}, with flows {}",
        maps(maps_idle),
        maps(maps_held)
    );
    println!(
        "events written while the flows were open: {events_held}{}; kernel-dropped events: {}",
        if drained { "" } else { " (the events file was still growing after 60 s)" },
        dropped.map_or_else(|| "unknown".to_owned(), |d| d.to_string())
    );
    Ok(())
}

/// Starts `xtask <sub> --serve` in the namespace, outside the cgroup, and waits for "ready".
/// The environment kills it when dropped.
pub(crate) fn start_server(env: &mut TestEnv, xtask: &Path, sub: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &env.netns])
        .arg(xtask)
        .args([sub, "--serve"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the bench server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    env.adopt(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("waiting for the bench server")?;
    if line.trim() != "ready" {
        bail!("the bench server did not start (printed {line:?})");
    }
    Ok(())
}

/// Removes the events files, so later rounds do not pay for a growing file.
pub(super) fn clear_events(env: &TestEnv) {
    if let Ok(rd) = std::fs::read_dir(&env.dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("events-") && n.ends_with(".jsonl") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The pid of the agent writing `events` (the harness does not expose its child): the process
/// whose command line names that file.
pub(super) fn agent_pid(events: &Path) -> Result<u32> {
    let needle = events.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        if cmd.split(|&b| b == 0).any(|a| a == needle) && cmd.split(|&b| b == 0).nth(1) == Some(b"run") {
            return Ok(pid);
        }
    }
    bail!("no process runs with --events {}", events.display())
}

/// (VmRSS, VmHWM) in KiB.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading the agent's status")?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Sum of `memlock` over the process's bpf-map fds, and how many there are.
fn map_memlock(pid: u32) -> Option<(u64, usize)> {
    let (mut sum, mut n) = (0u64, 0usize);
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else { continue };
        if link.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy())).ok()?;
        let mem = info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse::<u64>().ok())?;
        sum += mem;
        n += 1;
    }
    (n > 0).then_some((sum, n))
}

/// Waits until `file` has not grown for `still` (the agent has written what it had), at most
/// `limit`. Returns whether it settled.
pub(super) fn wait_drained(file: &Path, still: Duration, limit: Duration) -> bool {
    let size = || std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + limit;
    let (mut last, mut since) = (size(), Instant::now());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = size();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= still {
            return true;
        }
    }
    false
}

pub(super) fn count_lines(file: &Path) -> usize {
    std::fs::read(file).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

/// Stops the agent and reads the kernel-dropped event total it logs when it detaches.
pub(super) fn stop_and_dropped(mut agent: Agent) -> Option<u64> {
    agent.stop();
    let log = super::strip_ansi(&agent.log());
    log.lines()
        .filter(|l| l.contains("detached"))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("events_dropped=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

/// Runs inside the namespace: the server (`--serve`, outside the cgroup), or the client (inside
/// it), which probes enforcement, then sends `bytes` to the server and receives `bytes` from it,
/// and prints "<client→server MB/s> <server→client MB/s> <probe result>".
pub fn client(args: &ClientArgs) -> Result<()> {
    if args.serve {
        return serve();
    }
    let probe =
        match TcpStream::connect_timeout(&(ADDR4.parse::<Ipv4Addr>()?, PROBE_PORT).into(), Duration::from_secs(2)) {
            Ok(_) => "connected".to_owned(),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => "eperm".to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
            Err(e) => format!("error:{}", e.raw_os_error().unwrap_or(0)),
        };
    let buf = vec![0x5au8; CHUNK];
    let mut rbuf = vec![0u8; CHUNK];

    // client → server: the server acknowledges with one byte once it has read everything.
    let t0 = Instant::now();
    let mut s = TcpStream::connect((ADDR4, TCP_PORT)).context("connect (upload)")?;
    let mut hdr = [0u8; 9];
    hdr[0] = b'U';
    hdr[1..].copy_from_slice(&args.bytes.to_le_bytes());
    s.write_all(&hdr)?;
    let mut left = args.bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).context("upload acknowledgement")?;
    let up = args.bytes as f64 / t0.elapsed().as_secs_f64() / 1e6;
    drop(s);

    // server → client.
    let t0 = Instant::now();
    let mut s = TcpStream::connect((ADDR4, TCP_PORT)).context("connect (download)")?;
    hdr[0] = b'D';
    s.write_all(&hdr)?;
    let mut got = 0u64;
    while got < args.bytes {
        let n = s.read(&mut rbuf)?;
        if n == 0 {
            bail!("download ended after {got} of {} bytes", args.bytes);
        }
        got += n as u64;
    }
    let down = args.bytes as f64 / t0.elapsed().as_secs_f64() / 1e6;
    println!("{up} {down} {probe}");
    Ok(())
}

/// Serves bulk transfers (one thread per connection: 'U' + length → read it all, ack one byte;
/// 'D' + length → send that much) and drains the UDP sink, until killed.
fn serve() -> Result<()> {
    let listener = super::listen_with_udp_sink(TCP_PORT, UDP_PORT)?;
    for s in listener.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut hdr = [0u8; 9];
            s.read_exact(&mut hdr)?;
            let mut len = [0u8; 8];
            len.copy_from_slice(&hdr[1..]);
            let len = u64::from_le_bytes(len);
            let mut buf = vec![0xa5u8; CHUNK];
            if hdr[0] == b'U' {
                let mut got = 0u64;
                while got < len {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    got += n as u64;
                }
                s.write_all(b"k")
            } else {
                let mut left = len;
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    s.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
        });
    }
    Ok(())
}
