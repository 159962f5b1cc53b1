//! Flows as the agent tracks them: each starts with the connect record the kernel wrote when it
//! created the flow, is counted in the kernel's `FLOWS` table, and ends when its socket is
//! released (a `FlowEnd` record). The tracker joins the two and writes one `kind: "flow"` record
//! per finished flow, an update for long-lived ones, and reports and evicts the oldest when the
//! table nears its capacity.
//!
//! Memory: an open flow costs about 150 bytes here (its key, the per-flow fields of its connect
//! record and counters; the process and rule names are shared), so 100,000 open flows stay
//! around 20 MiB with the hash table's slack.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroUsize,
    sync::Arc,
};

use agent_common::{event_flags, verdict, Event, FlowKey, FlowStats};
use lru::LruCache;
use serde::Serialize;

use super::{
    connect::{self, Record, RuleNames},
    enrich::Enriched,
};

/// A flow is read and removed this long after its socket was released: TCP may still be
/// sending what the application wrote before close() (at most its send buffer), and those bytes
/// belong to the flow. What it sends later than this is not counted.
pub const END_GRACE_NS: u64 = 2_000_000_000;
/// How early an update may come (see `tick`).
const TICK_SLACK_NS: u64 = 200_000_000;
/// Flow records written per tick at most (ended flows, then updates); the rest wait a tick.
const REPORTS_PER_TICK: usize = 25_000;
/// Flows older than this that the kernel has and the agent never heard of (their connect record
/// was lost to a full ring) are removed by the sweep.
const ORPHAN_AGE_NS: u64 = 10_000_000_000;

/// Where the kernel's counters are read (the datapath; a fake in tests).
pub trait FlowTable {
    fn read(&mut self, key: &FlowKey) -> Option<FlowStats>;
    /// Reads and removes.
    fn take(&mut self, key: &FlowKey) -> Option<FlowStats>;
    fn all(&mut self) -> Vec<(FlowKey, FlowStats)>;
}

/// What the flows of one process (as one thread name and user) share: kept once, not per flow.
pub struct FlowProc {
    pub who: Arc<Enriched>,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe_dev: u32,
    pub cgroup_id: u64,
    pub exe_ino: u64,
    pub start_ns: u64,
    pub comm: [u8; 16],
}

type ProcKey = (u32, u64, u64, u64, u32, u32, [u8; 16]);

fn proc_key(ev: &Event) -> ProcKey {
    (ev.pid, ev.start_ns, ev.exe_ino, ev.cgroup_id, ev.uid, ev.gid, ev.comm)
}

/// A tracked flow: the connect record that started it, kept compact (its process in a shared
/// [`FlowProc`], its destination in its key), and what was reported of it so far.
#[derive(Clone)]
pub struct OpenFlow {
    pub proc: Arc<FlowProc>,
    pub names: Arc<RuleNames>,
    pub domain: Option<Arc<str>>,
    pub domain_rule: Option<Arc<str>>,
    ts_ns: u64,
    /// Counters already reported (updates report the delta to baselines).
    pub reported_out: u64,
    pub reported_in: u64,
    last_report_ns: u64,
    /// When its socket was released (0: still open).
    ended_ns: u64,
    tid: u32,
    rule_id: u32,
    generation: u32,
    domain_id: u32,
    verdict: u8,
    hook: u8,
    flags: u8,
}

impl OpenFlow {
    pub fn new(
        ev: &Event,
        proc: Arc<FlowProc>,
        names: Arc<RuleNames>,
        domain: Option<Arc<str>>,
        domain_rule: Option<Arc<str>>,
    ) -> Self {
        OpenFlow {
            proc,
            names,
            domain,
            domain_rule,
            ts_ns: ev.ts_ns,
            reported_out: 0,
            reported_in: 0,
            last_report_ns: ev.ts_ns,
            ended_ns: 0,
            tid: ev.tid,
            rule_id: ev.rule_id,
            generation: ev.generation,
            domain_id: ev.domain_id,
            verdict: ev.verdict,
            hook: ev.hook,
            flags: ev.flags,
        }
    }

    /// A flow an earlier agent tracked and reported up to `out` and `in_` bytes (see
    /// `flows_kept`): reports go on from there.
    pub fn resumed(mut self, out: u64, in_: u64, now_ns: u64) -> Self {
        self.reported_out = out;
        self.reported_in = in_;
        self.last_report_ns = now_ns;
        self
    }

    /// The connect record that started the flow `key`.
    pub fn event(&self, key: &FlowKey) -> Event {
        let p = &self.proc;
        Event {
            kind: agent_common::record::CONNECT,
            pid: p.pid,
            tid: self.tid,
            uid: p.uid,
            gid: p.gid,
            exe_dev: p.exe_dev,
            rule_id: self.rule_id,
            generation: self.generation,
            ts_ns: self.ts_ns,
            cookie: key.cookie,
            cgroup_id: p.cgroup_id,
            exe_ino: p.exe_ino,
            start_ns: p.start_ns,
            daddr: key.addr,
            comm: p.comm,
            // ICMP flows are keyed without a port; their records had none either.
            dport: key.port,
            family: key.family,
            proto: key.proto,
            verdict: self.verdict,
            hook: self.hook,
            flags: self.flags,
            flags2: 0,
            domain_id: self.domain_id,
            sock_type: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    /// The socket was released: final counters.
    End,
    /// Still open: counters so far (long-lived flows, every update interval).
    Update,
    /// Pushed out of a full table: counters so far; it is no longer tracked.
    Evicted,
    /// The agent is stopping: counters so far.
    Stopped,
}

/// A flow to write, and the bytes it added since it was last reported.
pub struct FlowReport {
    /// The connect record that started it.
    pub ev: Event,
    pub flow: OpenFlow,
    pub stats: FlowStats,
    pub state: FlowState,
    /// CLOCK_MONOTONIC time the report is for (the end, or now).
    pub at_ns: u64,
    pub delta_out: u64,
    pub delta_in: u64,
}

/// What the tracker did, for logs and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlowTotals {
    pub evicted: u64,
    pub orphaned: u64,
    /// Flows of an earlier agent that this one could not resume (see `flows_kept`), whose
    /// socket has since been released.
    pub inherited_ended: u64,
}

pub struct FlowTracker {
    /// A hash map, not a B-tree: cookies grow monotonically, and a B-tree filled in order keeps
    /// its nodes half empty (about 100 bytes more per flow).
    open: HashMap<FlowKey, OpenFlow>,
    /// Sockets released (cookie → when), whose flows end once [`END_GRACE_NS`] has passed.
    released: HashMap<u64, u64>,
    capacity: usize,
    update_every_ns: u64,
    /// Process descriptions shared by the flows of one process.
    procs: LruCache<ProcKey, Arc<FlowProc>>,
    /// Flows an earlier agent left in the kernel's table that this one does not know (see
    /// `flows_kept`): kept there until their socket is released, never swept as orphans.
    inherited: HashSet<FlowKey>,
    pub totals: FlowTotals,
}

impl FlowTracker {
    /// `capacity`: the kernel table's; `update_every_ns`: how often a long-lived flow is reported.
    pub fn new(capacity: usize, update_every_ns: u64) -> Self {
        let cache = NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN);
        FlowTracker {
            open: HashMap::new(),
            released: HashMap::new(),
            capacity,
            update_every_ns,
            procs: LruCache::new(cache),
            inherited: HashSet::new(),
            totals: FlowTotals::default(),
        }
    }

    /// The fill of its tables (open flows are bounded by the kernel's table, see `tick`).
    pub fn fill(&self) -> [crate::memory::CacheFill; 3] {
        use crate::memory::CacheFill;
        [
            CacheFill::new("flows_open", self.open.len() + self.inherited.len(), self.capacity),
            CacheFill::new("flows_released", self.released.len(), self.capacity),
            CacheFill::new("flow_processes", self.procs.len(), self.procs.cap().get()),
        ]
    }

    /// Flows tracked now.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The key the kernel counts a connect event's flow under, if the kernel tracks it.
    pub fn key_of(ev: &Event) -> Option<FlowKey> {
        if ev.verdict == verdict::DENY || ev.flags & event_flags::NO_FLOW != 0 {
            return None;
        }
        let port = if ev.proto == 6 || ev.proto == 17 { ev.dport } else { 0 };
        Some(FlowKey { cookie: ev.cookie, addr: ev.daddr, port, family: ev.family, proto: ev.proto, _pad: 0 })
    }

    /// One shared description per process, so that many flows of one process cost one;
    /// `enrich` describes it when it is not known yet.
    pub fn shared_proc(&mut self, ev: &Event, enrich: impl FnOnce() -> Enriched) -> Arc<FlowProc> {
        let key = proc_key(ev);
        if let Some(p) = self.procs.get(&key) {
            return p.clone();
        }
        let p = Arc::new(FlowProc {
            who: Arc::new(enrich()),
            pid: ev.pid,
            uid: ev.uid,
            gid: ev.gid,
            exe_dev: ev.exe_dev,
            cgroup_id: ev.cgroup_id,
            exe_ino: ev.exe_ino,
            start_ns: ev.start_ns,
            comm: ev.comm,
        });
        self.procs.put(key, p.clone());
        p
    }

    /// Starts tracking the flow of a connect record (a second record for a flow already tracked,
    /// a UDP socket connected again to the same peer, changes nothing).
    pub fn open(&mut self, key: FlowKey, flow: OpenFlow) {
        // A flow opened while no agent ran: its record was waiting in the ring.
        self.inherited.remove(&key);
        self.open.entry(key).or_insert(flow);
    }

    /// Every flow the kernel has that is not tracked (after [`Self::open`] of those resumed) is
    /// inherited from an earlier agent. Returns how many.
    pub fn inherit(&mut self, table: &mut dyn FlowTable) -> usize {
        for (k, _) in table.all() {
            if !self.open.contains_key(&k) {
                self.inherited.insert(k);
            }
        }
        self.inherited.len()
    }

    /// Inherited flows still in the table.
    pub fn inherited_count(&self) -> usize {
        self.inherited.len()
    }

    /// A socket was released: its flows end (they are read once [`END_GRACE_NS`] has passed).
    pub fn ended(&mut self, cookie: u64, ts_ns: u64) {
        self.released.entry(cookie).or_insert(ts_ns.max(1));
    }

    /// Ended flows past their grace, updates of long-lived flows, and evictions when the table
    /// is nearly full.
    pub fn tick(&mut self, table: &mut dyn FlowTable, now_ns: u64) -> Vec<FlowReport> {
        let mut out = Vec::new();
        for (k, f) in &mut self.open {
            if f.ended_ns == 0 {
                if let Some(&at) = self.released.get(&k.cookie) {
                    f.ended_ns = at;
                }
            }
        }
        // Bounded per tick, so that 100,000 sockets closing at once are written over a few
        // ticks rather than held in memory together.
        let done: Vec<FlowKey> = self
            .open
            .iter()
            .filter(|(_, f)| f.ended_ns != 0 && now_ns.saturating_sub(f.ended_ns) >= END_GRACE_NS)
            .map(|(k, _)| *k)
            .take(REPORTS_PER_TICK)
            .collect();
        // Inherited flows of a released socket: nobody reports them, so they go at once.
        if !self.inherited.is_empty() && !self.released.is_empty() {
            let released = &self.released;
            let gone: Vec<FlowKey> =
                self.inherited.iter().filter(|k| released.contains_key(&k.cookie)).copied().collect();
            for k in gone {
                self.inherited.remove(&k);
                table.take(&k);
                self.totals.inherited_ended += 1;
            }
        }
        // Every flow of a released socket is marked now: the socket's entry is done with.
        self.released.clear();
        for k in done {
            if let Some(f) = self.open.remove(&k) {
                let stats = table.take(&k).unwrap_or_else(|| zero(&f));
                let at = f.ended_ns;
                out.push(report(&k, f, stats, FlowState::End, at));
            }
        }
        if self.update_every_ns > 0 {
            let due: Vec<FlowKey> = self
                .open
                .iter()
                .filter(|(_, f)| {
                    // Ticks come about a second apart, never exactly: without the slack, an
                    // update due every second would slip to every other tick.
                    f.ended_ns == 0 && now_ns.saturating_sub(f.last_report_ns) + TICK_SLACK_NS >= self.update_every_ns
                })
                .map(|(k, _)| *k)
                .take(REPORTS_PER_TICK)
                .collect();
            for k in due {
                let Some(stats) = table.read(&k) else { continue };
                if let Some(f) = self.open.get_mut(&k) {
                    f.last_report_ns = now_ns;
                    // An idle flow has nothing new to say: no record until it moves or ends.
                    if stats.bytes_out == f.reported_out && stats.bytes_in == f.reported_in {
                        continue;
                    }
                    let r = report(&k, f.clone(), stats, FlowState::Update, now_ns);
                    f.reported_out = stats.bytes_out;
                    f.reported_in = stats.bytes_in;
                    out.push(r);
                }
            }
        }
        // Inherited flows count against the table too, and go first: nobody reports them, and
        // one whose end was lost while no agent ran would stay for ever.
        if (self.open.len() + self.inherited.len()) * 10 > self.capacity * 9 && !self.inherited.is_empty() {
            let target = self.capacity * 8 / 10;
            let excess = (self.open.len() + self.inherited.len()).saturating_sub(target).min(self.inherited.len());
            let mut by_age: Vec<(u64, FlowKey)> =
                self.inherited.iter().map(|k| (table.read(k).map_or(0, |s| s.start_ns), *k)).collect();
            by_age.sort_unstable_by_key(|(ts, _)| *ts);
            for (_, k) in by_age.into_iter().take(excess) {
                self.inherited.remove(&k);
                table.take(&k);
                self.totals.evicted += 1;
            }
        }
        // Report and evict the oldest before the kernel's table is full, so that new flows are
        // still tracked: down to 80% once past 90%.
        if self.open.len() * 10 > self.capacity * 9 {
            let target = self.capacity * 8 / 10;
            let mut by_age: Vec<(u64, FlowKey)> = self.open.iter().map(|(k, f)| (f.ts_ns, *k)).collect();
            by_age.sort_unstable_by_key(|(ts, _)| *ts);
            let excess = self.open.len().saturating_sub(target);
            for (_, k) in by_age.into_iter().take(excess) {
                if let Some(f) = self.open.remove(&k) {
                    let stats = table.take(&k).unwrap_or_else(|| zero(&f));
                    out.push(report(&k, f, stats, FlowState::Evicted, now_ns));
                    self.totals.evicted += 1;
                }
            }
        }
        out
    }

    /// Removes flows the kernel has and the agent never heard of (their connect record was lost
    /// with a full ring: already counted as dropped events). Returns how many.
    pub fn sweep(&mut self, table: &mut dyn FlowTable, now_ns: u64) -> u64 {
        let mut n = 0;
        for (k, s) in table.all() {
            if !self.open.contains_key(&k)
                && !self.inherited.contains(&k)
                && now_ns.saturating_sub(s.start_ns) >= ORPHAN_AGE_NS
            {
                table.take(&k);
                n += 1;
            }
        }
        self.totals.orphaned += n;
        n
    }

    /// Every tracked flow, as the agent stops leaving the datapath pinned: reported with its
    /// counters so far and left in the kernel's table (an agent that adopts the datapath resumes
    /// it from what is returned). Flows whose socket is already released end here, as in
    /// [`Self::finish_all`].
    /// The kept flows come with the kernel's start time of each (which a resuming agent checks:
    /// a socket cookie alone could be another flow's after a reboot).
    pub fn keep_all(
        &mut self,
        table: &mut dyn FlowTable,
        now_ns: u64,
    ) -> (Vec<FlowReport>, Vec<(FlowKey, OpenFlow, u64)>) {
        let released = std::mem::take(&mut self.released);
        let mut reports = Vec::new();
        let mut kept = Vec::new();
        for (k, mut f) in std::mem::take(&mut self.open) {
            if f.ended_ns == 0 {
                f.ended_ns = released.get(&k.cookie).copied().unwrap_or(0);
            }
            if f.ended_ns != 0 {
                let stats = table.take(&k).unwrap_or_else(|| zero(&f));
                let at = f.ended_ns;
                reports.push(report(&k, f, stats, FlowState::End, at));
                continue;
            }
            // Gone from the table (it never should be): nothing to resume.
            let Some(stats) = table.read(&k) else { continue };
            let mut resumed = f.clone();
            resumed.reported_out = stats.bytes_out;
            resumed.reported_in = stats.bytes_in;
            reports.push(report(&k, f, stats, FlowState::Stopped, now_ns));
            kept.push((k, resumed, stats.start_ns));
        }
        (reports, kept)
    }

    /// Every tracked flow, as the agent stops (removed from the kernel's table).
    pub fn finish_all(&mut self, table: &mut dyn FlowTable, now_ns: u64) -> Vec<FlowReport> {
        let released = std::mem::take(&mut self.released);
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(k, mut f)| {
                if f.ended_ns == 0 {
                    f.ended_ns = released.get(&k.cookie).copied().unwrap_or(0);
                }
                (k, f)
            })
            .map(|(k, f)| {
                let stats = table.take(&k).unwrap_or_else(|| zero(&f));
                let (state, at) =
                    if f.ended_ns != 0 { (FlowState::End, f.ended_ns) } else { (FlowState::Stopped, now_ns) };
                report(&k, f, stats, state, at)
            })
            .collect()
    }
}

/// Counters of a flow the kernel no longer has (it never should): nothing counted.
fn zero(f: &OpenFlow) -> FlowStats {
    FlowStats { start_ns: f.ts_ns, ..FlowStats::default() }
}

fn report(key: &FlowKey, flow: OpenFlow, stats: FlowStats, state: FlowState, at_ns: u64) -> FlowReport {
    let delta_out = stats.bytes_out.saturating_sub(flow.reported_out);
    let delta_in = stats.bytes_in.saturating_sub(flow.reported_in);
    FlowReport { ev: flow.event(key), flow, stats, state, at_ns, delta_out, delta_in }
}

/// `kind: "flow"`: the connect record's fields, and what the flow carried.
#[derive(Serialize)]
pub struct FlowRecord<'a> {
    #[serde(flatten)]
    pub conn: Record<'a>,
    pub state: FlowState,
    /// When the connect hook created the flow.
    pub start: String,
    /// When the socket was released (`end` records only).
    pub end: Option<String>,
    pub duration_ms: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
}

pub fn record<'a>(r: &'a FlowReport, ts_offset: i128) -> FlowRecord<'a> {
    let f = &r.flow;
    let domain = f.domain.as_deref().map(str::to_owned);
    let domain_rule = f.domain_rule.as_deref().map(str::to_owned);
    let mut conn = connect::record(&r.ev, &f.proc.who, &f.names, ts_offset, domain, domain_rule);
    conn.kind = "flow";
    conn.ts = super::rfc3339(ts_offset + i128::from(r.at_ns));
    let start_ns = if r.stats.start_ns != 0 { r.stats.start_ns } else { f.ts_ns };
    FlowRecord {
        conn,
        state: r.state,
        start: super::rfc3339(ts_offset + i128::from(start_ns)),
        end: (r.state == FlowState::End).then(|| super::rfc3339(ts_offset + i128::from(r.at_ns))),
        duration_ms: r.at_ns.saturating_sub(start_ns) / 1_000_000,
        bytes_out: r.stats.bytes_out,
        bytes_in: r.stats.bytes_in,
        packets_out: r.stats.packets_out,
        packets_in: r.stats.packets_in,
    }
}

#[cfg(test)]
#[path = "flows_tests.rs"]
mod tests;
