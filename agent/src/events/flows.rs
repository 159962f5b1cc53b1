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
            _pad1: 0,
            domain_id: self.domain_id,
            _pad2: 0,
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
            let gone: Vec<FlowKey> = self.inherited.iter().filter(|k| released.contains_key(&k.cookie)).copied().collect();
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
    pub fn keep_all(&mut self, table: &mut dyn FlowTable, now_ns: u64) -> (Vec<FlowReport>, Vec<(FlowKey, OpenFlow)>) {
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
            kept.push((k, resumed));
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
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake(HashMap<FlowKey, FlowStats>);

    impl FlowTable for Fake {
        fn read(&mut self, key: &FlowKey) -> Option<FlowStats> {
            self.0.get(key).copied()
        }
        fn take(&mut self, key: &FlowKey) -> Option<FlowStats> {
            self.0.remove(key)
        }
        fn all(&mut self) -> Vec<(FlowKey, FlowStats)> {
            self.0.iter().map(|(k, v)| (*k, *v)).collect()
        }
    }

    fn ev(cookie: u64, port: u16, ts_ns: u64) -> Event {
        let mut e = crate::events::test_event();
        (e.pid, e.tid, e.generation, e.ts_ns, e.cookie, e.dport, e.proto, e.hook) =
            (1, 1, 1, ts_ns, cookie, port, 17, 3);
        e.daddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e
    }

    fn open(t: &mut FlowTracker, k: &mut Fake, e: Event, out: u64) -> FlowKey {
        let key = FlowTracker::key_of(&e).expect("tracked");
        k.0.insert(key, FlowStats { start_ns: e.ts_ns, bytes_out: out, ..FlowStats::default() });
        let p = t.shared_proc(&e, Enriched::default);
        t.open(key, OpenFlow::new(&e, p, Arc::new(RuleNames::default()), None, None));
        key
    }

    #[test]
    fn a_released_socket_ends_all_its_flows_after_the_grace() {
        let (mut t, mut k) = (FlowTracker::new(100, 0), Fake::default());
        open(&mut t, &mut k, ev(7, 53, 10), 100);
        open(&mut t, &mut k, ev(7, 54, 11), 200);
        open(&mut t, &mut k, ev(8, 53, 12), 300);
        t.ended(7, 1_000);
        assert!(t.tick(&mut k, 1_000 + END_GRACE_NS - 1).is_empty(), "not before the grace");
        let r = t.tick(&mut k, 1_000 + END_GRACE_NS);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.state == FlowState::End && r.at_ns == 1_000));
        assert_eq!(r.iter().map(|r| r.delta_out).sum::<u64>(), 300);
        assert_eq!(t.open.len(), 1);
        assert_eq!(k.0.len(), 1, "read and removed from the kernel's table");
    }

    #[test]
    fn long_lived_flows_report_updates_with_deltas() {
        let (mut t, mut k) = (FlowTracker::new(100, 1_000), Fake::default());
        let key = open(&mut t, &mut k, ev(7, 53, 0), 100);
        let r = t.tick(&mut k, 1_000);
        assert_eq!((r.len(), r[0].state, r[0].delta_out), (1, FlowState::Update, 100));
        k.0.get_mut(&key).expect("flow").bytes_out = 250;
        let r = t.tick(&mut k, 2_000);
        assert_eq!(r[0].delta_out, 150, "only what is new since the last report");
        assert_eq!(r[0].stats.bytes_out, 250);
    }

    #[test]
    fn a_nearly_full_table_reports_and_evicts_the_oldest() {
        let (mut t, mut k) = (FlowTracker::new(10, 0), Fake::default());
        for i in 0..10 {
            open(&mut t, &mut k, ev(i, 53, 100 + i), 1);
        }
        let r = t.tick(&mut k, 1_000);
        assert_eq!(r.len(), 2, "down to 80%");
        assert!(r.iter().all(|r| r.state == FlowState::Evicted));
        assert_eq!(r.iter().map(|r| r.ev.cookie).collect::<Vec<_>>(), vec![0, 1], "oldest first");
        assert_eq!(t.totals.evicted, 2);
        assert_eq!(k.0.len(), 8);
    }

    #[test]
    fn the_sweep_removes_old_flows_nobody_reported() {
        let (mut t, mut k) = (FlowTracker::new(10, 0), Fake::default());
        open(&mut t, &mut k, ev(1, 53, 0), 1);
        let stray = FlowKey { cookie: 99, ..FlowKey::default() };
        k.0.insert(stray, FlowStats::default());
        assert_eq!(t.sweep(&mut k, ORPHAN_AGE_NS), 1);
        assert_eq!(k.0.len(), 1);
        assert_eq!(t.totals.orphaned, 1);
    }

    #[test]
    fn kept_flows_stay_in_the_table_and_resume_with_their_counters() {
        let (mut t, mut k) = (FlowTracker::new(10, 1_000), Fake::default());
        let live = open(&mut t, &mut k, ev(1, 53, 0), 100);
        open(&mut t, &mut k, ev(2, 53, 0), 50);
        t.ended(2, 500);
        let (reports, kept) = t.keep_all(&mut k, 900);
        let states: Vec<(u64, FlowState)> = reports.iter().map(|r| (r.ev.cookie, r.state)).collect();
        assert!(states.contains(&(1, FlowState::Stopped)) && states.contains(&(2, FlowState::End)), "{states:?}");
        assert_eq!((k.0.len(), kept.len()), (1, 1), "the live flow stays in the table; the ended one is gone");
        // The next agent: resumed from 100 bytes, so its next update says only what is new.
        let mut next = FlowTracker::new(10, 1_000);
        let (key, f) = kept.into_iter().next().expect("kept");
        assert_eq!(key, live);
        next.open(key, f.resumed(100, 0, 1_000));
        k.0.get_mut(&live).expect("flow").bytes_out = 160;
        let r = next.tick(&mut k, 2_000);
        assert_eq!((r.len(), r[0].delta_out), (1, 60));
    }

    #[test]
    fn inherited_flows_are_never_swept_and_go_when_their_socket_is_released() {
        let (mut t, mut k) = (FlowTracker::new(10, 0), Fake::default());
        let old = FlowKey { cookie: 5, ..FlowKey::default() };
        let came_later = FlowTracker::key_of(&ev(6, 53, 0)).expect("key");
        k.0.insert(old, FlowStats::default());
        k.0.insert(came_later, FlowStats::default());
        assert_eq!(t.inherit(&mut k), 2);
        // A connect record written while no agent ran, read now: tracked, no longer inherited.
        open(&mut t, &mut k, ev(6, 53, 0), 1);
        assert_eq!(t.inherited_count(), 1);
        assert_eq!(t.sweep(&mut k, 10 * ORPHAN_AGE_NS), 0, "inherited, not orphaned");
        assert!(k.0.contains_key(&old), "still enforced by the kernel");
        t.ended(5, 100);
        assert!(t.tick(&mut k, 200).is_empty(), "nobody reports it");
        assert!(!k.0.contains_key(&old) && t.inherited_count() == 0);
        assert_eq!(t.totals.inherited_ended, 1);
    }

    #[test]
    fn denied_and_untracked_attempts_have_no_flow() {
        let mut e = ev(1, 53, 0);
        e.verdict = verdict::DENY;
        assert!(FlowTracker::key_of(&e).is_none());
        let mut e = ev(1, 53, 0);
        e.flags = event_flags::NO_FLOW;
        assert!(FlowTracker::key_of(&e).is_none());
    }
}
