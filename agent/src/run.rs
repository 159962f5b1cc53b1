//! `egress-agent run`: load the policy, load and attach the kernel programs, then turn kernel
//! events into JSON lines until SIGINT/SIGTERM. SIGHUP reloads the policy file; a policy that
//! fails validation is refused and the running one stays in force.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};
use tracing::{error, info, warn};

use crate::{
    btf, cgroup,
    datapath::{Datapath, DatapathError},
    enrich::Enricher,
    events, output,
    policy::{self, CompiledPolicy, PolicyError},
};

pub struct RunArgs {
    pub policy: Option<PathBuf>,
    pub cgroup: Option<PathBuf>,
    pub events: PathBuf,
    pub cmdline: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("events output {path}: {source}")]
    Output { path: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

impl RunError {
    /// Errors the operator fixes by changing the command line or the policy.
    pub fn is_usage(&self) -> bool {
        matches!(self, RunError::Policy(_) | RunError::Cgroup(_))
    }
}

/// Loads and compiles the policy at `path`, or the embedded default.
pub fn load_policy(path: Option<&Path>) -> Result<CompiledPolicy, PolicyError> {
    match path {
        Some(p) => policy::compile::compile(&p.display().to_string(), &policy::load_file(p)?),
        None => policy::compile::compile(policy::EMBEDDED_NAME, &policy::parse(policy::EMBEDDED_NAME, policy::EMBEDDED_DEFAULT)?),
    }
}

/// Policies by generation: the one in force and the one before it, so that events decided just
/// before a reload still name their rule.
struct Generations {
    current: u32,
    by_gen: BTreeMap<u32, Arc<CompiledPolicy>>,
}

impl Generations {
    fn push(&mut self, p: CompiledPolicy) -> u32 {
        self.current += 1;
        self.by_gen.insert(self.current, Arc::new(p));
        while self.by_gen.len() > 2 {
            self.by_gen.pop_first();
        }
        self.current
    }
}

pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let compiled = load_policy(args.policy.as_deref())?;
    let mount = cgroup::cgroup2_mount()?;
    let watched = cgroup::resolve_watched(args.cgroup.as_deref())?;

    let offsets = match btf::kernel_offsets(Path::new(btf::VMLINUX)) {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "kernel BTF unusable: events will carry no executable identity");
            Default::default()
        }
    };
    let mut dp = Datapath::load(offsets)?;
    let mut gens = Generations { current: 0, by_gen: BTreeMap::new() };
    let (name, mode) = (compiled.name.clone(), compiled.mode);
    let gen = gens.push(compiled);
    dp.install(&gens.by_gen[&gen], gen)?;
    // Policy first, then attach: the first attempt the hooks see is already decided by it.
    dp.attach(&watched)?;

    let mut sink = output::Sink::open(&args.events).map_err(|source| RunError::Output { path: args.events.display().to_string(), source })?;
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it lives,
    // which is as long as the AsyncFd that owns it.
    let ring = unsafe { AsyncFd::register(dp.take_events()?) }
        .map_err(|e| RunError::Io { what: "polling the event ring buffer", source: e.into() })?;
    let mut enricher = Enricher::new(mount, args.cmdline);
    let ts_offset = events::monotonic_to_realtime_offset();

    let sig = |kind, what| signal(kind).map_err(|source| RunError::Io { what, source });
    let mut sigint = sig(SignalKind::interrupt(), "installing the SIGINT handler")?;
    let mut sigterm = sig(SignalKind::terminate(), "installing the SIGTERM handler")?;
    let mut sighup = sig(SignalKind::hangup(), "installing the SIGHUP handler")?;
    let mut drop_check = tokio::time::interval(Duration::from_secs(10));
    // The kernel only wakes us for a full batch (see agent-ebpf `wakeup_flags`): poll for the rest.
    let mut poll = tokio::time::interval(Duration::from_millis(agent_common::EVENTS_POLL_MS));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropped_seen = 0u64;

    info!(cgroup = %watched.display(), policy = %name, mode = ?mode, generation = gen, "egress-agent ready");
    let mut ring = ring;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| RunError::Io { what: "polling the event ring buffer", source })?;
                drain(guard.get_inner_mut(), &mut sink, &mut enricher, &gens, ts_offset, &args.events)?;
                guard.clear_ready();
            }
            _ = poll.tick() => drain(ring.get_mut(), &mut sink, &mut enricher, &gens, ts_offset, &args.events)?,
            _ = sigint.recv() => { info!("SIGINT: detaching"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: detaching"); break; }
            _ = sighup.recv() => reload(&mut dp, &mut gens, args.policy.as_deref()),
            _ = drop_check.tick() => report_drops(&mut dp, &mut dropped_seen),
        }
    }
    drain(ring.get_mut(), &mut sink, &mut enricher, &gens, ts_offset, &args.events)?;
    report_drops(&mut dp, &mut dropped_seen);
    drop(ring);
    drop(dp); // detaches every program
    info!(cgroup = %watched.display(), "detached");
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    sink: &mut output::Sink,
    enricher: &mut Enricher,
    gens: &Generations,
    ts_offset: i128,
    path: &Path,
) -> Result<(), RunError> {
    let out_err = |source| RunError::Output { path: path.display().to_string(), source };
    while let Some(item) = ring.next() {
        let decoded = events::decode(&item);
        drop(item);
        let ev = match decoded {
            Some(events::Record::Connect(ev)) => ev,
            Some(events::Record::Exec(exec)) => {
                enricher.on_exec(&exec);
                continue;
            }
            None => {
                warn!("malformed event record ignored");
                continue;
            }
        };
        let who = enricher.enrich(&ev);
        let policy = gens.by_gen.get(&ev.generation).map(Arc::as_ref);
        sink.write(&output::record(&ev, &who, policy, ts_offset)).map_err(out_err)?;
    }
    sink.flush().map_err(out_err)
}

fn reload(dp: &mut Datapath, gens: &mut Generations, path: Option<&Path>) {
    let Some(path) = path else {
        info!("SIGHUP: running the embedded default policy, nothing to reload");
        return;
    };
    match load_policy(Some(path)) {
        Ok(p) => {
            let name = p.name.clone();
            let gen = gens.push(p);
            match dp.install(&gens.by_gen[&gen], gen) {
                Ok(()) => info!(policy = %name, generation = gen, "policy reloaded"),
                Err(e) => error!(error = %e, "installing the reloaded policy failed; the previous policy stays in force"),
            }
        }
        Err(e) => error!(error = %e, "policy refused; the previous policy stays in force"),
    }
}

fn report_drops(dp: &mut Datapath, seen: &mut u64) {
    match dp.events_dropped() {
        Ok(total) if total > *seen => {
            warn!(dropped = total - *seen, total, "kernel dropped events: the ring buffer was full");
            *seen = total;
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "reading the dropped-events counter failed"),
    }
}
