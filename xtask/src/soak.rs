//! `cargo xtask soak --minutes N`: the real agent under churn for N minutes, watched for leaks
//! and for attempts it failed to account for. Run by hand (it is not part of `cargo xtask test`).
//!
//! Set-up, with the kernel tests' harness (`TestEnv`, `Agent`) and the benchmarks' server: a
//! network namespace and a child cgroup of their own (`ea-soak-<pid>-<n>`), the test resolver
//! (`ea-dns-server`, TTL 5 s) in the namespace, the events benchmark's accept-and-close TCP
//! server and UDP sink outside the cgroup, and the agent (the release build, as the benchmarks
//! run it) attached to the child cgroup only, enforcing a policy with a vendor by CIDR, a vendor
//! by domain (`*.soak.test`, learnt from the resolver's answers) and default deny. The agent has
//! a syslog sink to a unix socket the soak binds and unbinds: up 20 s, gone 10 s, over and over.
//!
//! Churn, for the whole run: the client (module [`client`]) in the cgroup makes short TCP
//! connections and sends UDP datagrams to allowed and denied destinations, looks names up and
//! connects to the learnt addresses, and looks up names of 16 fresh addresses each (filling the
//! agent's cache of resolved names to its bound in the first minutes); the driver replaces the policy file with the other of
//! two valid texts every second and asks for a reload over the admin socket (each text differs
//! from the other, so each reload installs a new generation), and removes the events file every
//! minute (the agent reopens it, as after logrotate).
//!
//! Every minute it prints the agent's VmRSS (and its parts), its open fds, the C heap's figures,
//! the fill of the agent's caches and of the kernel tables (`status --json`) and its counters
//! (`/metrics`). The warm-up sample is the first, from 20 % of the run on, at which every cache
//! has settled: is at its bound, or grew by less than 1 % of it in the minute before (until
//! then, memory that grows may be a cache filling up to its bound); it must come by half the run.
//! It fails if, from the warm-up sample to the last, VmRSS or the fd count grew by more than
//! 10 %; if the caches did not settle by half the run; if the client saw a wrong verdict; if the
//! sink never recovered; or if the attempts do not add up. With, read from `/metrics` once the agent has drained,
//!   A = Σ egress_connections_total{verdict="allow"|"alert"},
//!   R = Σ egress_connections_total{verdict="deny"},
//!   D = egress_events_dropped_total (records the kernel lost: each may have been an attempt),
//! and, counted by the client, `attempts` (every connect() and sendto() it made) of which
//! `refused` got EPERM, the accounting holds when
//!   A + R ≤ attempts ≤ A + R + D,  R ≤ refused ≤ R + D,  A ≤ attempts − refused ≤ A + D
//! (so with nothing lost: attempts = A + R, refused = R, exactly).
//!
//! Ctrl-C, SIGTERM, an error or a panic all end in the same clean-up: the client and servers
//! killed, the agent stopped (it detaches), the cgroup removed, the namespace deleted.

pub mod client;

use std::{
    io::Read as _,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use egress_agent_tests::{policy, write_atomic, Agent, TestEnv, ADDR4, DNS4};
use serde_json::Value;

use crate::bench::{
    events::{STATSD_PORT as UDP_PORT, TCP_PORT},
    flows::start_server,
};

/// Learnt addresses expire (TTL + the policy's 5 s grace) and are replaced all the time.
const TTL: u32 = 5;
/// The syslog receiver is there this long, then gone for [`SINK_DOWN`], over and over.
const SINK_UP: Duration = Duration::from_secs(20);
const SINK_DOWN: Duration = Duration::from_secs(10);
/// Growth of VmRSS or of the fd count, from the warm-up sample to the last, that fails the soak.
const MAX_GROWTH: f64 = 0.10;
/// A cache of the agent has settled once it is at its bound or grew by less than this share of
/// its bound over the minute before.
const SETTLED: f64 = 0.01;

/// Set by SIGINT/SIGTERM: the main loop returns an error, and the drops clean up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Both policy texts enforce the same verdicts for the soak's traffic (the accounting must not
/// depend on which generation decided); they differ in a vendor nothing contacts.
fn spec(variant: u8) -> String {
    policy(&format!(
        "  mode: enforce
  default: deny
  dns: {{grace: 5s, unlisted: deny}}
  allow:
    - {{name: resolver, cidr: {DNS4}/32, ports: [53], protocols: [udp]}}
  vendors:
    - name: by-cidr
      destinations: [{{cidr: {ADDR4}}}]
      ports: [{TCP_PORT}, {UDP_PORT}]
      protocols: [tcp, udp]
    - name: by-domain
      destinations: [{{domain: \"*.soak.test\"}}]
      ports: [{TCP_PORT}]
      protocols: [tcp]
    - name: spare
      destinations: [{{cidr: 198.19.{variant}.0/24}}]
      ports: [443]
      protocols: [tcp]
"
    ))
}

fn agent_config(socket: &Path) -> String {
    format!(
        "sinks:
  - name: syslog
    type: syslog
    address: unix://{}
    queueSize: 1000
    retries: 2
    maxBackoff: 1s
    filter: {{kinds: [connect, audit]}}
",
        socket.display()
    )
}

pub fn run(agent_bin: &Path, minutes: u32, rate: u32) -> Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the soak loads eBPF programs and creates a network namespace: run it as root");
    }
    if minutes < 4 {
        bail!("--minutes {minutes}: at least 4 (the warm-up ends at minute 2 at the earliest, and the run must go on as long again)");
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
    let dns_bin = crate::build_bin("egress-agent-tests", "ea-dns-server", true)?;
    let mut made = None;
    let result = soak(agent_bin, &dns_bin, minutes, rate, &mut made);
    // Everything was dropped inside `soak`: check that nothing is left.
    if let Some((netns, cgroup)) = made {
        let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
        let ns_left = String::from_utf8_lossy(&listed).lines().any(|l| l.split_whitespace().next() == Some(&netns));
        if ns_left || cgroup.exists() {
            eprintln!(
                "soak: clean-up incomplete: namespace {netns} left: {ns_left}; {} left: {}",
                cgroup.display(),
                cgroup.exists()
            );
        } else {
            eprintln!(
                "soak: cleaned up (agent stopped, cgroup {} removed, namespace {netns} deleted)",
                cgroup.display()
            );
        }
    }
    result
}

fn soak(agent_bin: &Path, dns_bin: &Path, minutes: u32, rate: u32, made: &mut Option<(String, PathBuf)>) -> Result<()> {
    // Declared first, dropped last: everything below is stopped before the namespace and the
    // cgroup go.
    let mut env = TestEnv::new("soak");
    *made = Some((env.netns.clone(), env.cgroup.clone()));
    eprintln!("soak: namespace {}, cgroup {}, scratch {}", env.netns, env.cgroup.display(), env.dir.display());
    env.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
    env.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let _resolver = env.dns(dns_bin, TTL);
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    start_server(&mut env, &xtask, "bench-events-client")?;
    let receiver = Receiver::start(env.path("syslog.sock"));

    let metrics = format!("127.0.0.1:{}", free_port()?);
    let config = env.path("agent.yaml");
    std::fs::write(&config, agent_config(&receiver.path))?;
    let policy_path = env.path("policy.yaml");
    std::fs::write(&policy_path, spec(0))?;
    let cfg = config.display().to_string();
    let mut agent =
        Agent::start(agent_bin, &policy_path, &env.cgroup, &env.dir, &["--config", &cfg, "--metrics", &metrics]);
    let pid = agent.pid().context("the agent's pid")?;
    let probe = Probe { agent_bin, admin: agent.admin.clone(), metrics: metrics.clone(), pid };
    let mut client = Client::start(&env, &xtask, rate)?;
    // The first 20 % of the run at least; then until every cache has settled (see `warm_up`).
    let earliest = minutes.div_ceil(5).max(2);
    let latest = minutes.div_ceil(2);
    eprintln!(
        "soak: {minutes} min, agent pid {pid}, metrics {metrics}; warm-up sample: the first from minute \
         {earliest} at which every cache of the agent is at its bound or grew by less than {:.0} % of it in a \
         minute (minute {latest} at the latest); RSS and fds may grow by at most {:.0} % after it",
        SETTLED * 100.0,
        MAX_GROWTH * 100.0
    );

    let t0 = Instant::now();
    let (mut writes, mut reload_errors, mut variant) = (0u64, 0u64, 0u8);
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_reload = t0 + Duration::from_secs(1);
    let mut next_sample = t0 + Duration::from_secs(60);
    loop {
        if STOP.load(Ordering::SeqCst) {
            bail!("soak: interrupted after {:.0} s", t0.elapsed().as_secs_f64());
        }
        if let Some(status) = agent.exited() {
            bail!(
                "soak: the agent exited ({status}) after {:.0} s:\n{}",
                t0.elapsed().as_secs_f64(),
                tail(&agent.log(), 40)
            );
        }
        if let Some(status) = client.exited() {
            bail!("soak: the client exited early ({status}): {}", client.stderr());
        }
        let now = Instant::now();
        if now >= next_reload {
            variant ^= 1;
            write_atomic(&policy_path, &spec(variant));
            writes += 1;
            // The file watcher may install it first; then this says `unchanged`. Either way one
            // new generation per write.
            let ok = Command::new(agent_bin)
                .arg("reload")
                .arg("--admin")
                .arg(&agent.admin)
                .output()
                .is_ok_and(|o| o.status.success());
            reload_errors += u64::from(!ok);
            next_reload += Duration::from_secs(1);
            if next_reload < Instant::now() {
                next_reload = Instant::now() + Duration::from_secs(1);
            }
        }
        if now >= next_sample {
            let minute = samples.len() as u32 + 1;
            let s = probe.sample(minute, client.counts(), &receiver)?;
            s.print(minutes);
            samples.push(s);
            // As logrotate does: the agent notices and writes a new file.
            let _ = std::fs::remove_file(&agent.events);
            if minute >= minutes {
                break;
            }
            next_sample += Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let counts = client.finish()?;
    let (a, r, d) = probe.settled()?;
    let end = probe.sample(minutes, Some(counts.clone()), &receiver)?;
    let mut failures = Vec::new();

    // Leaks: the last sample against the warm-up one, once the caches hold all they will hold.
    let settled = warm_up(&samples, earliest as usize - 1);
    let latest_i = latest as usize - 1;
    let warm = match &settled {
        Some((i, _)) if *i <= latest_i => *i,
        _ => {
            failures.push(format!(
                "the agent's caches had not settled by minute {latest} (half the run), so growth after it \
                 could be a cache still filling: {} (run longer, or at a higher --rate)",
                unsettled(&samples[latest_i - 1], &samples[latest_i])
            ));
            latest_i
        }
    };
    let warmup = warm as u32 + 1;
    let (first, last) = (&samples[warm], &samples[samples.len() - 1]);
    let growth = |from: f64, to: f64| (to - from) / from.max(1.0);
    let rss_g = growth(first.rss_kib as f64, last.rss_kib as f64);
    let fds_g = growth(first.fds as f64, last.fds as f64);
    if rss_g > MAX_GROWTH {
        failures.push(format!(
            "VmRSS grew {:.1} % after the warm-up ({} → {} KiB)",
            rss_g * 100.0,
            first.rss_kib,
            last.rss_kib
        ));
    }
    if fds_g > MAX_GROWTH {
        failures.push(format!("open fds grew {:.1} % after the warm-up ({} → {})", fds_g * 100.0, first.fds, last.fds));
    }

    // Verdicts the client saw, and the accounting.
    let (mut attempts, mut refused, mut other) = (0u64, 0u64, 0u64);
    for (kind, allowed) in client::KINDS {
        let c = &counts[kind];
        let n = |f: &str| c[f].as_u64().unwrap_or(0);
        attempts += n("attempts");
        refused += n("eperm");
        other += n("other");
        let wrong = if allowed { n("eperm") } else { n("ok") + n("other") };
        if wrong > 0 {
            failures.push(format!(
                "{wrong} of {} `{kind}` attempts got the wrong verdict ({})",
                n("attempts"),
                if allowed { "refused, though allowed" } else { "let through, though denied" }
            ));
        }
    }
    let passed = attempts - refused;
    let within = |lo: u64, x: u64| lo <= x && x <= lo + d;
    let accounted = within(a + r, attempts) && within(r, refused) && within(a, passed);
    if !accounted {
        failures.push(format!(
            "the attempts do not add up: the client made {attempts} ({refused} refused with EPERM, {passed} not), \
             the agent counted allowed A = {a}, denied R = {r}, lost D = {d}; \
             expected A + R ≤ attempts ≤ A + R + D, R ≤ refused ≤ R + D, A ≤ attempts − refused ≤ A + D"
        ));
    }

    // The churn did happen: reloads installed, the sink failed and came back.
    if end.reloads_installed < writes / 2 || end.reloads_refused > 0 {
        failures.push(format!(
            "{writes} policy writes, but {} installs and {} refusals",
            end.reloads_installed, end.reloads_refused
        ));
    }
    let periods = receiver.periods();
    if end.sink_failed == 0 || periods.len() < 2 || periods.last().is_some_and(|&n| n == 0) {
        failures.push(format!(
            "the syslog sink did not fail and recover: {} failures, messages per receiver period {periods:?}",
            end.sink_failed
        ));
    }

    let status = agent.stop();
    if !status.success() {
        failures.push(format!("the agent exited with {status} on SIGTERM"));
    }

    println!("\nsoak: {minutes} min, client rate {rate} allowed TCP connections/s (and the rest in proportion)");
    match &settled {
        Some((i, why)) => println!("  warm-up      minute {}: {why}", i + 1),
        None => println!("  warm-up      never: caches still filling at the end"),
    }
    println!("  caches       minute {warmup} → minute {minutes}: {}", cache_change(first, last));
    println!(
        "  VmRSS        minute {warmup} (warm-up) {:.1} MiB → minute {minutes} {:.1} MiB ({:+.1} %)",
        first.rss_kib as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        rss_g * 100.0
    );
    println!("  open fds     minute {warmup} {} → minute {minutes} {} ({:+.1} %)", first.fds, last.fds, fds_g * 100.0);
    println!(
        "  attempts     {attempts} by the client ({refused} refused with EPERM, {other} other errors, \
         {} lookups unanswered)",
        counts["lookups_unanswered"].as_u64().unwrap_or(0)
    );
    println!(
        "  accounted    A {a} allowed + R {r} denied = {} (lost in the kernel D = {d}): {}",
        a + r,
        if accounted { "adds up" } else { "DOES NOT ADD UP" }
    );
    println!(
        "  reloads      {writes} policy writes, {} installed, {} refused, generation {} ({reload_errors} `reload` calls failed)",
        end.reloads_installed, end.reloads_refused, end.generation
    );
    println!(
        "  syslog sink  {} written, {} dropped, {} failures; receiver periods (messages each): {periods:?}",
        end.sink_written, end.sink_dropped, end.sink_failed
    );
    println!("  folded       {} connect records folded by the rate limit", end.suppressed);
    if failures.is_empty() {
        println!("soak: PASS");
        Ok(())
    } else {
        for f in &failures {
            eprintln!("soak: FAIL: {f}");
        }
        bail!("soak failed ({} problems, above); agent log tail:\n{}", failures.len(), tail(&agent.log(), 20))
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The client process in the cgroup; killed when dropped.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stats: PathBuf,
    stderr: PathBuf,
}

impl Client {
    fn start(env: &TestEnv, xtask: &Path, rate: u32) -> Result<Self> {
        let (stats, stderr) = (env.path("client.json"), env.path("client.err"));
        let mut child = env
            .in_cgroup(
                &xtask.display().to_string(),
                &["soak-client", "--stats", &stats.display().to_string(), "--rate", &rate.to_string()],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .context("starting the soak client")?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin, stats, stderr })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its counts so far (written every second).
    fn counts(&self) -> Option<Value> {
        serde_json::from_slice(&std::fs::read(&self.stats).ok()?).ok()
    }

    /// Hangs up (the client stops, finishes the attempts in flight) and returns its final counts.
    fn finish(&mut self) -> Result<Value> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            if Instant::now() > deadline {
                bail!("the soak client did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out)?;
        }
        if !status.success() {
            bail!("the soak client failed ({status}): {}", self.stderr());
        }
        serde_json::from_str(out.trim()).with_context(|| format!("the soak client printed {out:?}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The failing sink's receiver: a unix datagram socket that is bound for [`SINK_UP`], then
/// closed and its file removed for [`SINK_DOWN`]. Counts the messages of each period it was up.
struct Receiver {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    periods: Arc<Mutex<Vec<u64>>>,
    restarts: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let periods = Arc::new(Mutex::new(Vec::new()));
        let restarts = Arc::new(AtomicU64::new(0));
        let (p, s, per, res) = (path.clone(), stop.clone(), periods.clone(), restarts.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                let _ = std::fs::remove_file(&p);
                let Ok(sock) = UnixDatagram::bind(&p) else { return };
                let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
                let up = Instant::now();
                let mut n = 0u64;
                while up.elapsed() < SINK_UP && !s.load(Ordering::SeqCst) {
                    if sock.recv(&mut buf).is_ok() {
                        n += 1;
                    }
                }
                drop(sock);
                let _ = std::fs::remove_file(&p);
                per.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(n);
                let down = Instant::now();
                while down.elapsed() < SINK_DOWN && !s.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                res.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self { path, stop, periods, restarts, thread: Some(thread) }
    }

    /// Messages received in each completed up-period.
    fn periods(&self) -> Vec<u64> {
        self.periods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the per-minute figures come from.
struct Probe<'a> {
    agent_bin: &'a Path,
    admin: PathBuf,
    metrics: String,
    pid: u32,
}

struct Sample {
    minute: u32,
    rss_kib: u64,
    /// VmRSS in parts: anonymous (the heap, the stacks), file-backed, shared (the ring buffer).
    rss_parts: [u64; 3],
    fds: usize,
    tables: String,
    /// The C heap's figures and the agent's caches' fill, from `status --json` (`memory`).
    heap: String,
    caches: Vec<Fill>,
    allowed: u64,
    denied: u64,
    dropped: u64,
    suppressed: u64,
    sink_written: u64,
    sink_dropped: u64,
    sink_failed: u64,
    reloads_installed: u64,
    reloads_refused: u64,
    generation: u64,
    client_attempts: u64,
    client_refused: u64,
    receiver_restarts: u64,
}

impl Sample {
    fn print(&self, minutes: u32) {
        println!(
            "minute {}/{minutes}: VmRSS {:.1} MiB, {} fds; client {} attempts ({} refused); agent: allowed {}, \
             denied {}, lost {}, folded {}; reloads {} installed, {} refused, generation {}; syslog sink {} \
             written, {} dropped, {} failed (receiver restarted {} times)",
            self.minute,
            self.rss_kib as f64 / 1024.0,
            self.fds,
            self.client_attempts,
            self.client_refused,
            self.allowed,
            self.denied,
            self.dropped,
            self.suppressed,
            self.reloads_installed,
            self.reloads_refused,
            self.generation,
            self.sink_written,
            self.sink_dropped,
            self.sink_failed,
            self.receiver_restarts,
        );
        println!(
            "  memory: RSS anon {:.1} MiB, file {:.1} MiB, shmem {:.1} MiB; heap {}",
            self.rss_parts[0] as f64 / 1024.0,
            self.rss_parts[1] as f64 / 1024.0,
            self.rss_parts[2] as f64 / 1024.0,
            self.heap
        );
        let caches: Vec<String> = self
            .caches
            .iter()
            .filter(|c| c.entries > 0)
            .map(|c| format!("{} {}/{}", c.cache, c.entries, c.capacity))
            .collect();
        println!("  caches {}", caches.join(", "));
        println!("  tables {}", self.tables);
    }
}

impl Probe<'_> {
    fn scrape(&self) -> Result<String> {
        let out = crate::util::output(Command::new("curl").args([
            "-sf",
            "--max-time",
            "10",
            &format!("http://{}/metrics", self.metrics),
        ]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn status(&self) -> Result<Value> {
        let out =
            crate::util::output(Command::new(self.agent_bin).args(["status", "--json", "--admin"]).arg(&self.admin))?;
        serde_json::from_slice(&out.stdout).context("`status --json` is not JSON")
    }

    fn sample(&self, minute: u32, counts: Option<Value>, receiver: &Receiver) -> Result<Sample> {
        // The process's own figures first: a scrape or a status request holds an fd meanwhile.
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).context("the agent's status")?;
        let kib = |field: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {field} in /proc/{}/status", self.pid))
        };
        let rss_kib = kib("VmRSS:")?;
        let rss_parts = [kib("RssAnon:")?, kib("RssFile:")?, kib("RssShmem:")?];
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))?.count();
        let st = self.status()?;
        let tables = st["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| format!("{} {}/{}", t["table"].as_str().unwrap_or("?"), t["entries"], t["capacity"]))
            .collect::<Vec<_>>()
            .join(", ");
        let mib = |v: &Value| v.as_f64().map_or_else(|| "?".to_owned(), |b| format!("{:.1} MiB", b / 1048576.0));
        let h = &st["memory"]["heap"];
        let heap = format!(
            "allocated {}, free {}, arenas {}, mapped {}",
            mib(&h["allocated"]),
            mib(&h["free"]),
            mib(&h["arenas"]),
            mib(&h["mapped"])
        );
        let caches = st["memory"]["caches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Fill {
                cache: c["cache"].as_str().unwrap_or("?").to_owned(),
                entries: c["entries"].as_u64().unwrap_or(0),
                capacity: c["capacity"].as_u64().unwrap_or(0),
            })
            .collect();
        let m = self.scrape()?;
        let get = |name: &str, with: &[&str]| metric_sum(&m, name, with) as u64;
        let sink = r#"sink="syslog""#;
        let sum = |f: &str| -> u64 {
            counts.as_ref().map_or(0, |c| client::KINDS.iter().map(|(k, _)| c[k][f].as_u64().unwrap_or(0)).sum())
        };
        Ok(Sample {
            minute,
            rss_kib,
            rss_parts,
            fds,
            tables,
            heap,
            caches,
            allowed: get("egress_connections_total", &[r#"verdict="allow""#])
                + get("egress_connections_total", &[r#"verdict="alert""#]),
            denied: get("egress_connections_total", &[r#"verdict="deny""#]),
            dropped: get("egress_events_dropped_total", &[]),
            suppressed: get("egress_events_suppressed_total", &[]),
            sink_written: get("egress_sink_records_total", &[sink]),
            sink_dropped: get("egress_sink_dropped_total", &[sink]),
            sink_failed: get("egress_sink_failures_total", &[sink]),
            reloads_installed: get("egress_policy_reloads_total", &[r#"result="installed""#]),
            reloads_refused: get("egress_policy_reloads_total", &[r#"result="refused""#]),
            generation: get("egress_policy_generation", &[]),
            client_attempts: sum("attempts"),
            client_refused: sum("eperm"),
            receiver_restarts: receiver.restarts.load(Ordering::Relaxed),
        })
    }

    /// (A, R, D) once the counters have stopped moving for 2 s (the agent has read the ring
    /// buffer dry), at most 60 s.
    fn settled(&self) -> Result<(u64, u64, u64)> {
        let read = || -> Result<(u64, u64, u64)> {
            let m = self.scrape()?;
            let c = |v: &str| metric_sum(&m, "egress_connections_total", &[v]) as u64;
            Ok((
                c(r#"verdict="allow""#) + c(r#"verdict="alert""#),
                c(r#"verdict="deny""#),
                metric_sum(&m, "egress_events_dropped_total", &[]) as u64,
            ))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut last, mut since) = (read()?, Instant::now());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            let now = read()?;
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_secs(2) {
                break;
            }
        }
        Ok(last)
    }
}

/// One of the agent's caches, as `status --json` gives it (`memory.caches`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fill {
    cache: String,
    entries: u64,
    capacity: u64,
}

impl Fill {
    fn full(&self) -> bool {
        self.entries >= self.capacity
    }

    /// At its bound, or grew by less than [`SETTLED`] of it since `before`.
    fn settled(&self, before: Option<&Fill>) -> bool {
        let grew = self.entries.saturating_sub(before.map_or(0, |b| b.entries));
        self.full() || (grew as f64) < SETTLED * self.capacity as f64
    }
}

fn fill_of<'a>(s: &'a Sample, cache: &str) -> Option<&'a Fill> {
    s.caches.iter().find(|c| c.cache == cache)
}

/// The warm-up sample: the first from index `from` on at which every cache of the agent has
/// settled (see [`Fill::settled`]). The caches are what grows with the destinations, names,
/// processes and flows the agent sees; once each is at its bound or its steady state, the agent
/// holds all it will hold, and memory that grows after is a leak. Returns its index, and why.
fn warm_up(samples: &[Sample], from: usize) -> Option<(usize, String)> {
    (from.max(1)..samples.len()).find_map(|i| {
        let (before, now) = (&samples[i - 1], &samples[i]);
        if !now.caches.iter().all(|c| c.settled(fill_of(before, &c.cache))) {
            return None;
        }
        let full: Vec<String> = now
            .caches
            .iter()
            .filter(|c| c.full())
            .map(|c| format!("{} {}/{}", c.cache, c.entries, c.capacity))
            .collect();
        let full = if full.is_empty() { "none".to_owned() } else { full.join(", ") };
        Some((
            i,
            format!(
                "every cache settled — at its bound: {full}; each other grew by less than {:.0} % of its bound in \
                 the minute before",
                SETTLED * 100.0
            ),
        ))
    })
}

/// The caches that had not settled at `now`, with their fill then and a minute before.
fn unsettled(before: &Sample, now: &Sample) -> String {
    let v: Vec<String> = now
        .caches
        .iter()
        .filter(|c| !c.settled(fill_of(before, &c.cache)))
        .map(|c| {
            let b = fill_of(before, &c.cache).map_or(0, |b| b.entries);
            format!("{} {b} → {} of {}", c.cache, c.entries, c.capacity)
        })
        .collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// How the caches' fill changed from one sample to another (those that held anything).
fn cache_change(from: &Sample, to: &Sample) -> String {
    to.caches
        .iter()
        .filter(|c| c.entries > 0 || fill_of(from, &c.cache).is_some_and(|f| f.entries > 0))
        .map(|c| format!("{} {} → {}", c.cache, fill_of(from, &c.cache).map_or(0, |f| f.entries), c.entries))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sum of the samples of metric `name` whose labels include every `label="value"` of `with`.
fn metric_sum(text: &str, name: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').map_or((series, ""), |(n, rest)| (n, rest.trim_end_matches('}')));
            (n == name && with.iter().all(|w| labels.split(',').any(|kv| kv == *w)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{metric_sum, warm_up, Fill, Sample};

    fn sample(minute: u32, caches: &[(&str, u64, u64)]) -> Sample {
        Sample {
            minute,
            rss_kib: 0,
            rss_parts: [0; 3],
            fds: 0,
            tables: String::new(),
            heap: String::new(),
            caches: caches
                .iter()
                .map(|&(c, entries, capacity)| Fill { cache: c.to_owned(), entries, capacity })
                .collect(),
            allowed: 0,
            denied: 0,
            dropped: 0,
            suppressed: 0,
            sink_written: 0,
            sink_dropped: 0,
            sink_failed: 0,
            reloads_installed: 0,
            reloads_refused: 0,
            generation: 0,
            client_attempts: 0,
            client_refused: 0,
            receiver_restarts: 0,
        }
    }

    #[test]
    fn the_warm_up_waits_for_every_cache_to_settle() {
        let samples = [
            sample(1, &[("names", 20_000, 65_536), ("flows", 700, 131_072)]),
            sample(2, &[("names", 40_000, 65_536), ("flows", 690, 131_072)]),
            sample(3, &[("names", 60_000, 65_536), ("flows", 720, 131_072)]),
            // Full: settled, whatever it grew by.
            sample(4, &[("names", 65_536, 65_536), ("flows", 705, 131_072)]),
            sample(5, &[("names", 65_536, 65_536), ("flows", 710, 131_072)]),
        ];
        let (i, why) = warm_up(&samples, 1).expect("settled");
        assert_eq!(i, 3);
        assert!(why.contains("names 65536/65536"), "{why}");
        // Not before the earliest minute asked for.
        assert_eq!(warm_up(&samples, 4).map(|w| w.0), Some(4));
        // Growth under 1 % of the bound is a steady state; more is not.
        let slow = [sample(1, &[("keys", 100, 16_384)]), sample(2, &[("keys", 250, 16_384)])];
        assert_eq!(warm_up(&slow, 1).map(|w| w.0), Some(1));
        let filling = [sample(1, &[("keys", 100, 16_384)]), sample(2, &[("keys", 1_300, 16_384)])];
        assert_eq!(warm_up(&filling, 1), None);
    }

    #[test]
    fn sums_the_matching_series() {
        let text = "# HELP x\negress_connections_total{proto=\"tcp\",vendor=\"a\",verdict=\"allow\"} 3\n\
                    egress_connections_total{proto=\"udp\",vendor=\"none\",verdict=\"deny\"} 4\n\
                    egress_connections_total{proto=\"tcp\",vendor=\"b\",verdict=\"allow\"} 5\n\
                    egress_events_dropped_total 2\n";
        assert_eq!(metric_sum(text, "egress_connections_total", &["verdict=\"allow\""]), 8.0);
        assert_eq!(metric_sum(text, "egress_connections_total", &["verdict=\"deny\""]), 4.0);
        assert_eq!(metric_sum(text, "egress_events_dropped_total", &[]), 2.0);
        assert_eq!(metric_sum(text, "egress_events", &[]), 0.0);
    }
}
