//! The one path every kernel record takes: decode → who made it (enrich, resolved names) →
//! flows and the rate limit → inventory, baselines and responses (`baseline::watch`) → sinks (every
//! configured one whose filter takes the record, see `sinks::fanout`). `run` owns the loop and
//! calls [`Pipeline::drain`] when the ring has records and [`Pipeline::tick`] every second.

use std::{collections::BTreeMap, num::NonZeroUsize, sync::Arc, time::Duration};

use agent_common::{dns_phase, Event, FlowKey, FlowStats};
use aya::maps::{MapData, RingBuf};
use lru::LruCache;
use tracing::{info, warn};

use crate::{
    baseline::watch::Watch,
    control::recent::Recent,
    dns::{self, ids::DomainIds, names::ResolvedNames},
    events::{
        self,
        connect::{self, RuleNames},
        enrich::{Enriched, Enricher},
        flows::{self, FlowReport, FlowTable, FlowTracker, OpenFlow},
        flows_kept,
        pods::PodSeries,
        ratelimit::{Folded, RateLimiter},
    },
    kernel::Datapath,
    policy::CompiledPolicy,
    sinks::{fanout::Sinks, metrics::Metrics},
};

/// Records handled per pass over the ring buffer, so signals and reloads are served under load.
pub const DRAIN_BATCH: usize = 4096;

/// The policies events may name: the one in force and the few before it.
pub struct PolicyView<'a> {
    pub by_gen: &'a BTreeMap<u32, Arc<CompiledPolicy>>,
    pub current: u32,
    pub domain_ids: &'a DomainIds,
}

/// Settings of the pipeline that come from the command line.
pub struct Settings {
    pub cmdline: bool,
    /// Capacity of the kernel's flow table.
    pub max_flows: u32,
    /// How often a long-lived flow is reported (0: only when it ends).
    pub flow_update: Duration,
    /// Connect records per key per second before the rest are folded (0: never fold).
    pub events_per_key: u32,
}

pub struct Pipeline {
    enricher: Enricher,
    names: ResolvedNames,
    pub flows: FlowTracker,
    limiter: RateLimiter,
    /// Every sink records go to; `sinks.health()` says how each is doing.
    pub sinks: Sinks,
    /// Rule names by (generation, rule id), shared by the flows they name. Only generations
    /// still in `PolicyView::by_gen` are kept (see `forget_generations`).
    rule_names: LruCache<(u32, u32), Arc<RuleNames>>,
    /// Inventory, baselines and automated responses.
    pub watch: Watch,
    pub metrics: Arc<Metrics>,
    /// Which pods have a series in `egress_pod_connections_total`.
    pods: PodSeries,
    /// Per-vendor counts over the last hour, for `status`.
    pub recent: Recent,
    /// What the metrics have already been given of cumulative totals.
    seen_evicted: u64,
    seen_suppressed: u64,
}

impl Pipeline {
    pub fn new(sinks: Sinks, enricher: Enricher, s: &Settings, watch: Watch, metrics: Arc<Metrics>) -> Self {
        metrics.flows_capacity.set(i64::from(s.max_flows));
        let cap = NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN);
        Pipeline {
            pods: PodSeries::new(enricher.mount().to_path_buf()),
            enricher,
            names: ResolvedNames::default(),
            flows: FlowTracker::new(s.max_flows as usize, s.flow_update.as_nanos() as u64),
            limiter: RateLimiter::new(1_000_000_000, s.events_per_key),
            sinks,
            rule_names: LruCache::new(cap),
            watch,
            metrics,
            recent: Recent::default(),
            seen_evicted: 0,
            seen_suppressed: 0,
        }
    }

    /// Handles up to [`DRAIN_BATCH`] records; returns how many.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, view: &PolicyView<'_>, dp: &mut Datapath) -> usize {
        // Computed per batch, so wall-clock steps (NTP, suspend) do not skew timestamps for long.
        let ts_offset = events::monotonic_to_realtime_offset();
        let mut n = 0;
        // The kernel time of the batch's first connect record, for the ring's lag.
        let mut oldest = None;
        while n < DRAIN_BATCH {
            let Some(item) = ring.next() else { break };
            n += 1;
            let decoded = events::decode(&item);
            drop(item);
            match decoded {
                Some(events::Record::Connect(ev)) => {
                    oldest.get_or_insert(ev.ts_ns);
                    self.on_connect(&ev, view, dp, ts_offset);
                }
                Some(events::Record::Exec(exec)) => self.enricher.on_exec(&exec),
                Some(events::Record::Dns(d)) => self.on_dns(&d, view, ts_offset),
                Some(events::Record::FlowEnd(end)) => self.flows.ended(end.cookie, end.ts_ns),
                None => warn!("malformed event record ignored"),
            }
        }
        if n > 0 {
            self.flush();
        }
        if let Some(t) = oldest {
            let lag = events::monotonic_now_ns().saturating_sub(t);
            self.metrics.ring_lag.set(lag as f64 / 1e9);
        } else if n == 0 {
            self.metrics.ring_lag.set(0.0);
        }
        n
    }

    /// What the kernel tables' fill needs from the agent's own counts: open flows, the flow
    /// table's capacity, and the live learnt addresses (for `status` and the metrics).
    pub fn table_counts(&self) -> crate::kernel::tables::Counted {
        crate::kernel::tables::Counted {
            flows: self.flows.open_count() as u64,
            flows_capacity: self.metrics.flows_capacity.get().max(0) as u64,
            learnt: self.metrics.learnt_addresses.get().max(0) as u64,
        }
    }

    /// The fill of every in-memory table that grows with what the agent sees, for `status`.
    pub fn caches(&self) -> Vec<crate::memory::CacheFill> {
        let mut out = self.enricher.fill().to_vec();
        out.extend(self.names.fill());
        out.push(self.limiter.fill());
        out.extend(self.flows.fill());
        out.push(crate::memory::CacheFill::new("rule_names", self.rule_names.len(), self.rule_names.cap().get()));
        out.extend(self.watch.fill());
        out
    }

    /// Writes a record the agent made itself (kill switch), at once.
    pub fn emit(&mut self, rec: &serde_json::Value) {
        self.write(rec);
        self.flush();
    }

    fn on_connect(&mut self, ev: &Event, view: &PolicyView<'_>, dp: &mut Datapath, ts_offset: i128) {
        let enricher = &mut self.enricher;
        let proc = self.flows.shared_proc(ev, || enricher.enrich(ev));
        let who = proc.who.clone();
        let names = self.rule_names(ev, view);
        // Every attempt the kernel reported, folded or not.
        let vendor = names.vendor.as_deref().unwrap_or("none");
        self.metrics.connections.with_label_values(&[vendor, events::verdict(ev), events::proto(ev)]).inc();
        self.recent.attempt(vendor, events::verdict(ev), now_s());
        self.pods.count(&self.metrics, &who, events::verdict(ev));
        let learnt = ev.flags & agent_common::event_flags::LEARNT != 0;
        let domain = self.names.name(ev.pid, ev.start_ns, events::dst(ev), learnt);
        let domain_rule = if learnt { view.domain_ids.pattern(ev.domain_id).map(ToString::to_string) } else { None };
        let (write, pushed) = self.limiter.admit(ev, &who, &domain, &domain_rule);
        if let Some(f) = pushed {
            self.write_folded(&f, view, ts_offset);
        }
        if write {
            let rec = connect::record(ev, &who, &names, ts_offset, domain.clone(), domain_rule.clone());
            self.write(&rec);
        }
        if ev.verdict != agent_common::verdict::DENY {
            let outs = self.watch.on_connect(dp, ev, &who, names.vendor.as_deref(), domain.as_deref());
            self.write_all(&outs);
        }
        if let Some(key) = FlowTracker::key_of(ev) {
            let flow = OpenFlow::new(ev, proc, names, domain.map(Arc::from), domain_rule.map(Arc::from));
            self.flows.open(key, flow);
        }
    }

    fn on_dns(&mut self, d: &agent_common::DnsEvent, view: &PolicyView<'_>, ts_offset: i128) {
        let pattern = view.domain_ids.pattern(d.domain_id).map(ToString::to_string);
        if d.phase == dns_phase::ANSWER {
            let name: Arc<str> = Arc::from(dns::event::query_name(d));
            for a in dns::event::answer_addrs(d) {
                self.names.record(d.pid, d.start_ns, a, &name);
            }
        }
        let who = if d.pid == 0 { Enriched::default() } else { self.enricher.enrich(&dns::event::identity(d)) };
        // Named by the policy in force now: a pattern's rules are those of the slot the kernel
        // uses for it from now on.
        let policy = view.by_gen.get(&view.current).map(Arc::as_ref);
        let rec = dns::event::record(d, &who, policy, pattern, ts_offset);
        self.write(&rec);
    }

    fn rule_names(&mut self, ev: &Event, view: &PolicyView<'_>) -> Arc<RuleNames> {
        let key = (ev.generation, ev.rule_id);
        if let Some(n) = self.rule_names.get(&key) {
            return n.clone();
        }
        let n = Arc::new(RuleNames::of(ev, view.by_gen.get(&ev.generation).map(Arc::as_ref)));
        // Only cache names from a known policy: an unknown generation may become known.
        if view.by_gen.contains_key(&ev.generation) {
            self.rule_names.put(key, n.clone());
        }
        n
    }

    fn write_folded(&mut self, f: &Folded, view: &PolicyView<'_>, ts_offset: i128) {
        let names = self.rule_names(&f.event, view);
        let mut rec = connect::record(&f.event, &f.who, &names, ts_offset, f.domain.clone(), f.domain_rule.clone());
        rec.suppressed = f.suppressed;
        self.write(&rec);
    }

    fn write<T: serde::Serialize>(&mut self, rec: &T) {
        self.sinks.write(rec);
    }

    fn write_all(&mut self, outs: &[serde_json::Value]) {
        for o in outs {
            if o["kind"] == "anomaly" {
                let kind = o["anomaly"].as_str().unwrap_or("unknown");
                self.metrics.anomalies.with_label_values(&[kind]).inc();
            }
            self.write(o);
        }
    }

    fn flush(&mut self) {
        // Audit records the observers wrote (automated blocks) go out with the batch.
        for rec in self.watch.take_audit() {
            self.sinks.write_value(&rec);
        }
        self.sinks.flush();
    }

    /// Appends to the audit trail and hands the record to the sinks that ask for audit records.
    pub fn audit(&mut self, kind: &str, detail: serde_json::Value) {
        self.watch.audit(kind, detail);
        self.flush();
    }

    fn write_flow(&mut self, dp: &mut Datapath, r: &FlowReport, ts_offset: i128) {
        let rec = flows::record(r, ts_offset);
        self.write(&rec);
        let vendor = r.flow.names.vendor.as_deref().unwrap_or("none");
        self.metrics.flow_bytes.with_label_values(&[vendor, "out"]).inc_by(r.delta_out);
        self.metrics.flow_bytes.with_label_values(&[vendor, "in"]).inc_by(r.delta_in);
        self.recent.bytes(vendor, r.delta_out, r.delta_in, now_s());
        let outs = self.watch.on_flow(dp, r);
        self.write_all(&outs);
    }

    /// Every second: folded attempts whose window ended, finished and long-lived flows,
    /// evictions, and the observers' own work.
    pub fn tick(&mut self, dp: &mut Datapath, view: &PolicyView<'_>) {
        let ts_offset = events::monotonic_to_realtime_offset();
        let now = events::monotonic_now_ns();
        for f in self.limiter.expired(now) {
            self.write_folded(&f, view, ts_offset);
        }
        let evicted = self.flows.totals.evicted;
        for r in self.flows.tick(dp, now) {
            self.write_flow(dp, &r, ts_offset);
        }
        if self.flows.totals.evicted > evicted {
            warn!(
                evicted = self.flows.totals.evicted - evicted,
                total = self.flows.totals.evicted,
                "flow table nearly full: the oldest flows were reported and evicted"
            );
        }
        let outs = self.watch.tick(dp);
        self.write_all(&outs);
        self.flush();
        self.forget_generations(view);
        let m = &self.metrics;
        m.flows_open.set(self.flows.open_count() as i64);
        m.flows_inherited.set(self.flows.inherited_count() as i64);
        m.flows_evicted.inc_by(self.flows.totals.evicted.saturating_sub(self.seen_evicted));
        self.seen_evicted = self.flows.totals.evicted;
        m.events_suppressed.inc_by(self.limiter.total_suppressed.saturating_sub(self.seen_suppressed));
        self.seen_suppressed = self.limiter.total_suppressed;
        m.blocks_active.set(self.watch.blocks_active() as i64);
        self.pods.sweep(m);
        self.sinks.publish(m);
    }

    /// Drops the rule names of generations no longer kept: no event can be named from them again
    /// (an event of a generation not kept names its rule `unknown`), and a reload every few
    /// seconds would otherwise fill the cache to its bound with dead names.
    fn forget_generations(&mut self, view: &PolicyView<'_>) {
        let Some(&oldest) = view.by_gen.keys().next() else { return };
        let stale: Vec<(u32, u32)> = self.rule_names.iter().map(|(k, _)| *k).filter(|(g, _)| *g < oldest).collect();
        for k in &stale {
            self.rule_names.pop(k);
        }
    }

    /// Removes flows the kernel has and the agent never heard of (see `FlowTracker::sweep`).
    pub fn sweep(&mut self, dp: &mut Datapath) {
        let n = self.flows.sweep(dp, events::monotonic_now_ns());
        if n > 0 {
            warn!(flows = n, "flows whose connect record was lost (ring buffer full) were removed untracked");
        }
    }

    /// The agent is stopping: everything folded and every open flow is written. With `keep`
    /// (the datapath stays pinned), open flows stay in the kernel's table and what the next
    /// agent needs to resume them goes to `keep`'s state directory, if there is one.
    pub fn finish(&mut self, dp: &mut Datapath, view: &PolicyView<'_>, keep: Option<Keep<'_>>) {
        let ts_offset = events::monotonic_to_realtime_offset();
        for f in self.limiter.drain() {
            self.write_folded(&f, view, ts_offset);
        }
        let now = events::monotonic_now_ns();
        match keep {
            None => {
                for r in self.flows.finish_all(dp, now) {
                    self.write_flow(dp, &r, ts_offset);
                }
            }
            Some(Keep { state, datapath }) => {
                let (reports, kept) = self.flows.keep_all(dp, now);
                for r in &reports {
                    self.write_flow(dp, r, ts_offset);
                }
                if let Some(dir) = state {
                    let flows: Vec<flows_kept::KeptFlow> = kept
                        .iter()
                        .map(|(k, f, start_ns)| {
                            let domain = (f.domain.as_deref(), f.domain_rule.as_deref());
                            let reported = (f.reported_out, f.reported_in);
                            flows_kept::KeptFlow::new(&f.event(k), &f.names, reported, *start_ns, domain)
                        })
                        .collect();
                    let n = flows.len();
                    match flows_kept::save(dir, &flows_kept::Kept { datapath, flows }) {
                        Ok(()) => info!(flows = n, "open flows kept for the agent that adopts the datapath"),
                        Err(e) => warn!(error = %e, "open flows not kept: the next agent inherits them unnamed"),
                    }
                }
            }
        }
        self.watch.save();
        self.flush();
    }

    /// At every start: flows an earlier agent kept (see `flows_kept`) for the datapath this
    /// agent adopted (`adopted`: its id) are tracked again from where it left them; the others
    /// the kernel has are inherited (kept, counted, never swept as orphans). A kept list for
    /// another datapath (a reboot, a layout change, another pin directory) is discarded.
    /// Returns (resumed, inherited).
    pub fn resume_flows(
        &mut self,
        dp: &mut Datapath,
        state: Option<&std::path::Path>,
        adopted: Option<&str>,
    ) -> (usize, usize) {
        let kept = match state.map(flows_kept::take) {
            Some(Ok(Some(k))) if Some(k.datapath.as_str()) == adopted => k.flows,
            Some(Ok(Some(k))) => {
                info!(
                    flows = k.flows.len(),
                    kept_for = k.datapath,
                    "open flows kept for another datapath (or boot) are not resumed"
                );
                Vec::new()
            }
            Some(Ok(None)) | None => Vec::new(),
            Some(Err(e)) => {
                warn!(error = %e, "the open flows an earlier agent kept cannot be read: they are inherited unnamed");
                Vec::new()
            }
        };
        if adopted.is_none() {
            return (0, 0);
        }
        let now = events::monotonic_now_ns();
        let mut resumed = 0;
        for k in kept {
            let Some(ev) = k.event() else { continue };
            let Some(key) = FlowTracker::key_of(&ev) else { continue };
            // Ended while no agent ran and already removed, or another flow now: nothing to resume.
            if dp.read(&key).is_none_or(|s| s.start_ns != k.start_ns) {
                continue;
            }
            let enricher = &mut self.enricher;
            let proc = self.flows.shared_proc(&ev, || enricher.enrich(&ev));
            let flow = OpenFlow::new(&ev, proc, k.names(), k.domain.map(Arc::from), k.domain_rule.map(Arc::from))
                .resumed(k.reported_out, k.reported_in, now);
            self.flows.open(key, flow);
            resumed += 1;
        }
        let inherited = self.flows.inherit(dp);
        self.metrics.flows_inherited.set(inherited as i64);
        (resumed, inherited)
    }

    /// The last records are written: queued sinks get a few seconds to deliver theirs.
    pub fn close(&mut self) {
        self.flush();
        self.sinks.close();
        self.sinks.publish(&self.metrics);
    }
}

/// An agent stopping without detaching: its open flows stay in the kernel's table, and what it
/// knew of them goes to `state` for the agent that adopts `datapath` (see `flows_kept`).
pub struct Keep<'a> {
    pub state: Option<&'a std::path::Path>,
    pub datapath: String,
}

/// Wall-clock seconds, for the last hour's buckets.
fn now_s() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

impl FlowTable for Datapath {
    fn read(&mut self, key: &FlowKey) -> Option<FlowStats> {
        self.flow(key).unwrap_or_else(|e| {
            warn!(error = %e, "reading a flow failed");
            None
        })
    }

    fn take(&mut self, key: &FlowKey) -> Option<FlowStats> {
        self.take_flow(key).unwrap_or_else(|e| {
            warn!(error = %e, "removing a flow failed");
            None
        })
    }

    fn all(&mut self) -> Vec<(FlowKey, FlowStats)> {
        self.flows().unwrap_or_else(|e| {
            warn!(error = %e, "listing flows failed");
            Vec::new()
        })
    }
}
