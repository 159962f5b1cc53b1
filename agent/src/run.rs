//! `egress-agent run`: load the policy, load and attach the kernel programs, then turn kernel
//! events into JSON lines until SIGINT/SIGTERM.
//!
//! The policy is reloaded on SIGHUP and when its files change (including the atomic `..data`
//! symlink swap of a mounted Kubernetes ConfigMap). A policy that fails validation is refused and
//! the running one stays in force. Selectors are resolved again when their directories change
//! and every few seconds (a package upgrade gives a binary a new inode; a restarted service or a
//! new pod gets a new cgroup), and the policy is compiled again when a temporary approval expires.
#![expect(
    clippy::result_large_err,
    reason = "RunError wraps DatapathError (see datapath.rs); it is returned once, when the agent stops"
)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use serde_json::json;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    baseline::watch::Watch,
    cgroup,
    control::{
        self,
        killswitch::KillSwitch,
        verbs::{self, AgentInfo, Ctx},
    },
    events::enrich::Enricher,
    in_force::{log_warnings, PolicyState},
    kernel::{
        btf,
        counters::{self, DnsSeen},
        flows::FlowCounters,
        pin::{self, FailMode, Pins},
        Datapath, DatapathError,
    },
    pipeline::{self, Pipeline, DRAIN_BATCH},
    policy::{self, compile, PolicyError},
    sinks::{self, fanout::Sinks, metrics::Metrics, probes::Probes, spec::SinkSpec},
    systemd, watch,
};

pub struct RunArgs {
    pub ring_bytes: u32,
    pub policy: Vec<PathBuf>,
    /// How a policy bundle URL in `policy` is fetched and verified.
    pub policy_source: crate::central::SourceOptions,
    pub cgroup: Option<PathBuf>,
    pub events: PathBuf,
    pub pipeline: pipeline::Settings,
    /// Where inventory and baselines are kept (`--state`).
    pub state: Option<PathBuf>,
    /// `learn`: watch in monitor mode for a while, then write a policy.
    pub learn: Option<Learning>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// JSON lines, or a line a person reads.
    pub format: sinks::json::Format,
    /// The admin socket's path, if one is served.
    pub admin: Option<PathBuf>,
    /// Where the datapath is pinned, and what a deliberate stop does; None: not pinned (the
    /// programs live as long as the agent).
    pub pin: Option<(PathBuf, FailMode)>,
    /// The host's root when the agent runs in a container (`hostRoot:`).
    pub host_root: Option<PathBuf>,
    /// Where pod metadata comes from (`kubernetes:`).
    pub kubernetes: crate::kube::KubeConfig,
}

/// The sinks of a run: `None` writes `events` alone in `format` (what `learn` does); `run`
/// passes what `sinks::spec::resolve` made of the flags and the configuration.
pub struct Outputs {
    pub sinks: Option<Vec<SinkSpec>>,
    /// stdout is a terminal: stdout sinks with no format write text.
    pub terminal: bool,
}

/// What `learn` asks of a run.
pub struct Learning {
    pub duration: Duration,
    pub out: PathBuf,
    pub name: String,
}

/// Runs the agent to its end on a single-threaded runtime; the exit code says how it ended.
pub fn run_blocking(args: RunArgs) -> std::process::ExitCode {
    run_blocking_with(args, Outputs { sinks: None, terminal: false })
}

/// [`run_blocking`] with the sinks the flags and the configuration file name.
pub fn run_blocking_with(args: RunArgs, outputs: Outputs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "starting the async runtime failed");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args, outputs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %crate::cli::error_chain(&e), "egress-agent stopped");
            if e.is_usage() {
                ExitCode::from(crate::EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Central(#[from] crate::central::CentralError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("events output {path}: {source}")]
    Output { path: String, source: std::io::Error },
    #[error(transparent)]
    Sink(#[from] sinks::fanout::SinkError),
    #[error(transparent)]
    Kubernetes(#[from] crate::kube::client::EndpointError),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error(
        "no policy bundle, cached or fetched, and a pinned datapath enforces the previous policy: it stays in force; start again once the policy source is reachable"
    )]
    NoPolicy,
}

impl RunError {
    /// Errors the operator fixes by changing the command line or the policy.
    pub fn is_usage(&self) -> bool {
        matches!(self, RunError::Policy(_) | RunError::Central(_) | RunError::Cgroup(_) | RunError::Kubernetes(_))
    }
}

/// How often the kernel tables' fill is measured for the metrics.
const TABLE_CHECK: Duration = Duration::from_secs(10);
/// How often the kernel's flow table is swept for flows nobody announced.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Changes in selector directories within this window are resolved once.
const SELECTOR_DEBOUNCE: Duration = Duration::from_millis(20);
/// How often process selectors are resolved again (a restarted service's new cgroup, an
/// upgraded binary's new inode are picked up within this).
const RESOLVE_EVERY: Duration = Duration::from_secs(compile::RESOLVE_EVERY_SECS);
/// A change is read once the policy files have been quiet this long (an editor or kubelet writes
/// in steps) ...
const DEBOUNCE: Duration = Duration::from_millis(250);
/// ... or this long after the first change at the latest.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

pub async fn run(args: RunArgs, outputs: Outputs) -> Result<(), RunError> {
    // Served from the start, so that /readyz says "not ready" (503) while the policy loads and
    // the programs attach, instead of refusing the connection.
    let probes = Arc::new(Probes::new());
    let metrics = Arc::new(
        Metrics::new().map_err(|e| RunError::Io { what: "creating the metrics", source: std::io::Error::other(e) })?,
    );
    if let Some(addr) = args.metrics {
        sinks::metrics::serve(metrics.clone(), probes.clone(), addr);
    }
    // Selectors are resolved again at once when their directories change or the pod list does.
    let (sel_tx, mut sel_rx) = mpsc::unbounded_channel();
    // Fetched once before the policy is compiled, so pod selectors resolve from the start.
    let pods = crate::kube::Pods::start(&args.kubernetes, metrics.clone(), sel_tx.clone())?;
    let resolver = policy::resolve::HostResolver::new().with_host_root(args.host_root.clone()).with_pods(pods.clone());
    // Local files, or a central bundle (the cached one, so a boot without the network enforces).
    let crate::central::Start { merged, mut compiled, warnings, central, embedded_fallback } =
        crate::central::load(&args.policy, &args.policy_source, args.state.as_deref(), &resolver)?;
    // The embedded default refuses nothing: it must not replace a pinned datapath that still
    // enforces the last policy (a restart whose cache was lost, with the source unreachable).
    // Stop instead; the pinned policy goes on, and the service manager retries.
    if embedded_fallback && args.pin.as_ref().is_some_and(|(root, _)| root.join("links").exists()) {
        return Err(RunError::NoPolicy);
    }
    let monitor_only = args.learn.is_some();
    if monitor_only {
        compiled.monitor_only();
    }
    log_warnings(&warnings);
    let mount = cgroup::cgroup2_mount()?;
    let watched = cgroup::resolve_watched(args.cgroup.as_deref())?;

    let offsets = match btf::kernel_offsets(Path::new(btf::VMLINUX)) {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "kernel BTF unusable: no executable identity, so `exe` selectors match nothing");
            Default::default()
        }
    };
    // Open the outputs before attaching: a bad --events must not leave a half-started enforcer.
    let specs = outputs.sinks.unwrap_or_else(|| vec![SinkSpec::primary(&args.events, Some(args.format))]);
    let sinks = Sinks::open(&specs, outputs.terminal)?;
    if args.pin.as_ref().is_none_or(|(root, _)| root != std::path::Path::new(pin::DEFAULT_ROOT))
        && std::path::Path::new(pin::DEFAULT_ROOT).join("links").exists()
        && args.learn.is_none()
    {
        warn!(pinned = pin::DEFAULT_ROOT, "a datapath is pinned at the default place and this agent does not adopt it: its programs go on deciding beside this agent's (`egress-agent uninstall` removes it)");
    }
    let mut pins = match &args.pin {
        Some((root, _)) => Some(
            Pins::open(root, &pin::layout_id(args.ring_bytes, args.pipeline.max_flows)).map_err(DatapathError::from)?,
        ),
        None => None,
    };
    let mut dp = Datapath::load(offsets, args.ring_bytes, args.pipeline.max_flows, pins.as_ref())?;
    let (name, mode) = (compiled.name.clone(), compiled.mode);
    // An adopted datapath goes on counting generations, so events name the policy right.
    let first_gen = dp.adopted_generation().map_or(1, |g| g + 1);
    dp.install(&compiled, first_gen)?;
    // Kills kept from before a restart are in force before the first attempt is decided.
    let (mut kills, kills_ended, kills_lost) = KillSwitch::load(args.state.as_deref());
    // What the adopted datapath still refuses stays refused, kept list or not.
    let mut kills_kept = Vec::new();
    if pins.as_ref().is_some_and(|p| p.adopted) {
        match dp.kernel_kills() {
            Ok((all_until, vendors)) => {
                let all = (all_until != 0).then_some((None, all_until));
                for (vendor, until) in all.into_iter().chain(vendors.into_iter().map(|(v, u)| (Some(v), u))) {
                    kills_kept.extend(kills.import(vendor, until));
                }
            }
            Err(e) => warn!(error = %e, "reading the adopted datapath's kill switch failed"),
        }
    }
    kills.apply(&mut dp)?;
    let fingerprint = compiled.fingerprint.clone();
    let mut state = PolicyState {
        paths: args.policy.clone(),
        merged,
        fingerprint,
        merged_changed: false,
        resolver,
        generation: first_gen,
        by_gen: BTreeMap::from([(first_gen, Arc::new(compiled))]),
        domain_ids: dp.domain_ids().clone(),
        monitor_only,
        audit: Vec::new(),
        central,
    };
    // Policy first, then attach: the first attempt the hooks see is already decided by it.
    match pins.as_mut() {
        Some(p) => dp.attach_pinned(&watched, p)?,
        None => dp.attach(&watched)?,
    }
    // Processes already running: what they executed, before a prctl can say otherwise.
    let watched_rel = format!("/{}", watched.strip_prefix(&mount).unwrap_or(Path::new("")).display());
    match dp.seed_exec_ids(&watched_rel) {
        Ok(n) => info!(processes = n, "executables of running processes recorded"),
        Err(e) => {
            warn!(error = %e, "recording the executables of running processes failed: exe selectors trust what their exe link says")
        }
    }

    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it lives,
    // which is as long as the AsyncFd that owns it.
    let mut ring = unsafe { AsyncFd::register(dp.take_events()?) }
        .map_err(|e| RunError::Io { what: "polling the event ring buffer", source: e.into() })?;
    // The programs log only on rare paths, so their log is read on the drain timer.
    let mut kernel_log = match dp.take_logger() {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(error = %e, "the kernel programs' diagnostics will not be logged");
            None
        }
    };
    let mut watch = Watch::new(args.state.clone(), &state.merged);
    watch.audit(
        "agent_start",
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "policy": name,
            "mode": format!("{mode:?}").to_lowercase(),
            "generation": first_gen,
            "adopted": pins.as_ref().is_some_and(|p| p.adopted),
            "sha256": state.current().sha256,
            "cgroup": watched.display().to_string(),
        }),
    );
    metrics.policy_generation.set(i64::from(first_gen));
    metrics.policy_reload_time.set(time::OffsetDateTime::now_utc().unix_timestamp());
    let mut pipe = Pipeline::new(
        sinks,
        Enricher::new(mount.clone(), args.pipeline.cmdline).with_pods(pods.clone()),
        &args.pipeline,
        watch,
        metrics,
    );
    let datapath_id = pins.as_ref().map(|p| crate::events::flows_kept::datapath_id(p.layout_dir()));
    let adopted = datapath_id.as_deref().filter(|_| pins.as_ref().is_some_and(|p| p.adopted));
    let (resumed, inherited) = pipe.resume_flows(&mut dp, args.state.as_deref(), adopted);
    // Blocks an adopted datapath (or a layout change) carried over, tracked again.
    let blocks = pipe.watch.resume_blocks(&mut dp);
    if resumed + inherited + blocks > 0 {
        info!(resumed, inherited, blocks, "open flows and automated blocks of the adopted datapath");
    }
    let mut dns_seen = DnsSeen::default();
    if let Some(problem) = kills_lost {
        pipe.audit("kill_switch_state_lost", json!({"problem": problem}));
    }
    for k in &kills_kept {
        warn!(
            vendor = k.vendor.as_deref().unwrap_or("--all"),
            "a kill in force in the adopted datapath was not in the kept list: it stays in force"
        );
        verbs::report(&mut pipe, k, "kept");
    }
    if !kills_kept.is_empty() {
        if let Err(e) = kills.save() {
            warn!(error = %e, "kill switch not persisted");
        }
    }
    for k in &kills_ended {
        verbs::report(&mut pipe, k, "expired");
    }
    for k in kills.active() {
        warn!(vendor = k.vendor.as_deref().unwrap_or("--all"), until = ?k.until, "kill switch in force since before this start");
    }
    verbs::sync_metrics(&kills, &pipe);
    let info = AgentInfo {
        started: Instant::now(),
        started_at: time::OffsetDateTime::now_utc(),
        cgroup: watched.clone(),
        state: args.state.clone(),
        pods: pods.clone(),
    };
    let (admin_tx, mut admin_rx) = mpsc::channel(16);
    let _admin = args.admin.as_deref().and_then(|p| match control::admin::serve(p, admin_tx) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(socket = %p.display(), error = %e, "admin socket not served: status, reload and block are unavailable");
            None
        }
    });
    let mut table_check = tokio::time::interval(TABLE_CHECK);

    let sig = |kind, what| signal(kind).map_err(|source| RunError::Io { what, source });
    let mut sigint = sig(SignalKind::interrupt(), "installing the SIGINT handler")?;
    let mut sigterm = sig(SignalKind::terminate(), "installing the SIGTERM handler")?;
    let mut sighup = sig(SignalKind::hangup(), "installing the SIGHUP handler")?;
    // Dropped events are counted in the kernel; report new ones promptly (one map read).
    let mut drop_check = tokio::time::interval(Duration::from_secs(1));
    // Counted since the datapath was created: what an earlier agent (or none, while it was
    // down) lost is said once, and only new losses are reported from here.
    let mut dropped_seen = dp.events_dropped().unwrap_or(0);
    if dropped_seen > 0 {
        warn!(
            dropped = dropped_seen,
            "events lost before this start (the ring buffer filled while no agent read it, or earlier)"
        );
        // In the metric too: a scrape after a restart shows what the downtime lost.
        pipe.metrics.events_dropped.inc_by(dropped_seen);
    }
    let mut flows_seen = FlowCounters::default();
    // The kernel only wakes us for a full batch (see agent-ebpf `wakeup_flags`): poll for the rest.
    let mut poll = tokio::time::interval(Duration::from_millis(agent_common::EVENTS_POLL_MS));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resolve = tokio::time::interval_at(tokio::time::Instant::now() + RESOLVE_EVERY, RESOLVE_EVERY);
    resolve.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // A central source is polled on a thread of its own; what it fetches is installed here.
    let mut fetched_rx = crate::central::start_polling(&mut state);
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let local: &[PathBuf] = if state.central.is_some() { &[] } else { &args.policy };
    let _watcher = match watch::watch(local, changed_tx) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the policy files; reload with SIGHUP");
            None
        }
    };
    let mut sel_dirs = watch::selector_dirs(&state.merged, &mount);
    let mut sel_watcher = arm_selector_watch(&sel_dirs, &sel_tx);
    let mut pending_resolve: Option<tokio::time::Instant> = None;
    let mut recheck_dirs = false;
    let mut pending_change: Option<tokio::time::Instant> = None;
    let mut first_change: Option<tokio::time::Instant> = None;

    let drain_now = |pipe: &mut Pipeline, ring: &mut RingBuf<MapData>, state: &PolicyState, dp: &mut Datapath| {
        pipe.drain(ring, &state.view(), dp)
    };
    // Flows the kernel has that no connect record announced are looked for once a minute.
    let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    let learn_until = args.learn.as_ref().map(|l| tokio::time::Instant::now() + l.duration);

    // Loading parsed the kernel's BTF and the object's: give that memory back to the system
    // rather than keep it as the process's high-water mark.
    // SAFETY: plain libc call without pointers.
    unsafe { libc::malloc_trim(0) };
    info!(cgroup = %watched.display(), policy = %name, mode = ?mode, generation = first_gen, "egress-agent ready");
    probes.set_ready();
    systemd::ready(&ready_status(&state, &watched));
    loop {
        let debounce = sleep_until_if(pending_change);
        let resolve_soon = sleep_until_if(pending_resolve);
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| RunError::Io { what: "polling the event ring buffer", source })?;
                // A full batch means more is waiting: stay ready and come back after the other
                // branches had their turn.
                if drain_now(&mut pipe, guard.get_inner_mut(), &state, &mut dp) < DRAIN_BATCH {
                    guard.clear_ready();
                }
            }
            _ = poll.tick() => {
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                if let Some(l) = kernel_log.as_mut() {
                    l.flush();
                }
            }
            _ = sigint.recv() => { info!("SIGINT: detaching"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: detaching"); break; }
            _ = sighup.recv() => {
                // Events decided by the old policy are written before the swap.
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                systemd::reloading();
                let _ = state.reload(&mut dp, "SIGHUP");
                systemd::ready(&ready_status(&state, &watched));
            }
            // Each event extends the quiet period (a file written in several steps is read once
            // complete), up to DEBOUNCE_MAX after the first, so a stream of changes cannot
            // postpone reloading forever; the reload reads whatever the files are then.
            Some(()) = changed_rx.recv() => {
                let now = tokio::time::Instant::now();
                let first = *first_change.get_or_insert(now);
                pending_change = Some((now + DEBOUNCE).min(first + DEBOUNCE_MAX));
            }
            () = debounce => {
                pending_change = None;
                first_change = None;
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                systemd::reloading();
                let _ = state.reload(&mut dp, "policy files changed");
                systemd::ready(&ready_status(&state, &watched));
            }
            Some(got) = fetched_rx.recv() => {
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                let result = crate::central::apply(&mut state, &mut dp, got);
                pipe.metrics.policy_fetches.with_label_values(&[result]).inc();
            }
            Some(()) = sel_rx.recv() => {
                pending_resolve.get_or_insert_with(|| tokio::time::Instant::now() + SELECTOR_DEBOUNCE);
            }
            () = resolve_soon => {
                pending_resolve = None;
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                state.recompile(&mut dp, "selector directories changed", false);
                recheck_dirs = true;
            }
            _ = resolve.tick() => {
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                state.recompile(&mut dp, "selectors re-resolved", false);
                recheck_dirs = true;
            }
            () = tokio::time::sleep(state.until_expiry()) => {
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                state.recompile(&mut dp, "a vendor approval expired", true);
            }
            _ = drop_check.tick() => {
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                probes.beat();
                pipe.tick(&mut dp, &state.view());
                counters::report_drops(&mut dp, &mut dropped_seen, &pipe.metrics);
                counters::dns_housekeeping(&mut dp, &mut dns_seen, &pipe.metrics);
                counters::flow_housekeeping(&mut dp, &mut flows_seen, &pipe.metrics);
                verbs::expire(&mut kills, &mut dp, &mut pipe);
            }
            _ = table_check.tick() => {
                counters::table_metrics(&mut dp, state.current(), &pipe.table_counts(), &pipe.metrics);
            }
            Some(cmd) = admin_rx.recv() => {
                // Events decided before the request are written before its effect.
                drain_now(&mut pipe, ring.get_mut(), &state, &mut dp);
                // `systemctl reload` runs `egress-agent reload`: the unit shows it reloading.
                let reload = matches!(cmd.request, control::admin::Request::Reload {});
                if reload {
                    systemd::reloading();
                }
                let mut ctx = Ctx { state: &mut state, dp: &mut dp, pipe: &mut pipe, kills: &mut kills, info: &info };
                let _ = cmd.reply.send(verbs::handle(cmd.request, cmd.uid, &mut ctx));
                if reload {
                    systemd::ready(&ready_status(&state, &watched));
                }
            }
            _ = sweep.tick() => pipe.sweep(&mut dp),
            () = sleep_until_if(learn_until) => { info!("learning period over"); break; }
        }
        for (kind, detail) in std::mem::take(&mut state.audit) {
            let result = if kind == "policy_installed" { "installed" } else { "refused" };
            if kind == "policy_installed" {
                // A new policy may name a killed vendor it did not name before.
                if let Err(e) = kills.apply(&mut dp) {
                    error!(error = %e, "the kill switch could not be written to the kernel");
                }
            }
            pipe.metrics.policy_reloads.with_label_values(&[result]).inc();
            pipe.metrics.policy_reload_time.set(time::OffsetDateTime::now_utc().unix_timestamp());
            pipe.metrics.policy_generation.set(i64::from(state.generation));
            pipe.audit(kind, detail);
        }
        // A reload may name other selectors (watch their directories instead) and other
        // baseline settings; pods and containers come and go (watch where they appear).
        let merged_changed = std::mem::take(&mut state.merged_changed);
        if merged_changed {
            pipe.watch.set_policy(&state.merged);
        }
        if merged_changed || std::mem::take(&mut recheck_dirs) {
            let dirs = watch::selector_dirs(&state.merged, &mount);
            if dirs != sel_dirs {
                sel_watcher = arm_selector_watch(&dirs, &sel_tx);
                sel_dirs = dirs;
            }
        }
    }
    probes.set_stopping();
    systemd::stopping();
    drop(sel_watcher);
    while drain_now(&mut pipe, ring.get_mut(), &state, &mut dp) == DRAIN_BATCH {}
    counters::report_drops(&mut dp, &mut dropped_seen, &pipe.metrics);
    // Closed: the datapath stays pinned, and its open flows with it for the next agent.
    let closed = matches!(args.pin.as_ref().map(|p| p.1), Some(FailMode::Closed));
    let keep =
        datapath_id.filter(|_| closed).map(|datapath| crate::pipeline::Keep { state: args.state.as_deref(), datapath });
    pipe.finish(&mut dp, &state.view(), keep);
    pipe.audit("agent_stop", json!({"generation": state.generation, "events_dropped": dropped_seen}));
    pipe.close();
    drop(ring);
    match (pins, args.pin.as_ref().map(|p| p.1)) {
        (Some(p), Some(FailMode::Closed)) => {
            info!(pinned = %p.root.display(), "fail-closed stop: the last policy stays enforcing until an agent adopts it or `egress-agent uninstall` removes it");
        }
        (Some(p), _) => {
            let removed = p.release();
            info!(unpinned = removed.len(), "fail-open stop: the pinned datapath is removed");
        }
        (None, _) => {}
    }
    drop(dp); // detaches every program not pinned
    info!(cgroup = %watched.display(), events_dropped = dropped_seen, "detached");
    if let Some(l) = &args.learn {
        crate::cli::write_learnt(l, &pipe.watch.inventory, &args.policy, &state)?;
    }
    Ok(())
}

/// What `systemctl status` shows of a ready agent.
fn ready_status(state: &PolicyState, watched: &Path) -> String {
    let p = state.current();
    let mode = format!("{:?}", p.mode).to_lowercase();
    format!("policy {} ({mode} mode), generation {}, watching {}", p.name, state.generation, watched.display())
}

/// Sleeps until `at`, or forever when nothing is pending.
async fn sleep_until_if(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn arm_selector_watch(dirs: &[PathBuf], tx: &mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    match watch::watch_dirs(dirs, tx.clone()) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch selector directories; selectors are re-resolved on the timer only");
            None
        }
    }
}
