//! The kernel's counters, read every second: events lost to a full ring, the DNS path's rare
//! events, flows a full table could not track. Each is logged once when it moves, and fed to the
//! metrics.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{flows::FlowCounters, Datapath};
use crate::{events, sinks::metrics::Metrics};

/// Reports what the DNS path counted since the last call: addresses the learnt tables evicted
/// (entries created minus entries present), patterns evicted from shared addresses, answers not
/// trusted or parsed in part, refused queries.
pub fn dns_housekeeping(dp: &mut Datapath, seen: &mut DnsSeen, m: &Metrics) {
    use agent_common::dns_counter as c;
    let counters = match dp.dns_counters() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "reading the DNS counters failed");
            return;
        }
    };
    let new = |i: u32| counters[i as usize].saturating_sub(seen.counters[i as usize]);
    m.dns_answers.inc_by(new(c::LEARNT));
    m.dns_rejected.inc_by(new(c::ANSWER_REJECTED));
    m.dns_refused.inc_by(new(c::QUERY_DENIED));
    if new(c::LEARNT_NEW) > 0 || seen.last_stats.elapsed() >= Duration::from_secs(10) {
        match dp.learnt_stats(events::monotonic_now_ns()) {
            Ok(s) => {
                let evicted = counters[c::LEARNT_NEW as usize].saturating_sub(s.live + s.expired);
                if evicted > seen.evicted {
                    warn!(
                        evicted = evicted - seen.evicted,
                        total = evicted,
                        live = s.live,
                        "learnt-address tables full: least recently used entries were evicted (a live one evicted makes its next connection wait for a new answer)"
                    );
                    seen.evicted = evicted;
                }
                debug!(live = s.live, expired = s.expired, "learnt addresses");
                m.learnt_addresses.set(s.live as i64);
            }
            Err(e) => warn!(error = %e, "counting learnt addresses failed"),
        }
        seen.last_stats = Instant::now();
    }
    // (counter, warning rather than info, message)
    const REPORTS: [(u32, bool, &str); 6] = [
        (c::LEARN_FULL, true, "addresses from answers could not be learnt"),
        (c::SLOT_EVICTED, true, "an address carried too many domain patterns: the soonest to expire was replaced"),
        (c::PARSE_LIMIT, true, "DNS answers were parsed only in part (record limit or a later TCP segment)"),
        (c::NEST_OVERFLOW, true, "egress packets refused: DNS programs nested deeper than they have state for"),
        (
            c::ANSWER_REJECTED,
            false,
            "DNS answers not trusted (no matching query, wrong source, bad checksum or malformed)",
        ),
        (c::QUERY_DENIED, false, "DNS queries (or forged answers) refused"),
    ];
    for (counter, is_warning, what) in REPORTS {
        let n = new(counter);
        match (n, is_warning) {
            (0, _) => {}
            (_, true) => warn!(count = n, "{what}"),
            (_, false) => info!(count = n, "{what}"),
        }
    }
    seen.counters = counters;
}

/// What [`dns_housekeeping`] reported already.
pub struct DnsSeen {
    counters: [u64; agent_common::dns_counter::COUNT as usize],
    evicted: u64,
    last_stats: Instant,
}

impl Default for DnsSeen {
    fn default() -> Self {
        DnsSeen { counters: [0; agent_common::dns_counter::COUNT as usize], evicted: 0, last_stats: Instant::now() }
    }
}

/// Reports flows the kernel could not track (table full) since the last call, and counts what
/// the kill switch refused and dropped.
pub fn flow_housekeeping(dp: &mut Datapath, seen: &mut FlowCounters, m: &Metrics) {
    match dp.flow_counters() {
        Ok(c) => {
            if c.full > seen.full {
                m.flows_untracked.inc_by(c.full - seen.full);
                warn!(
                    untracked = c.full - seen.full,
                    total = c.full,
                    "flow table full: new flows were decided and reported but not counted"
                );
            }
            m.kill_refused.inc_by(c.killed.saturating_sub(seen.killed));
            m.kill_packets.inc_by(c.killed_packets.saturating_sub(seen.killed_packets));
            m.source_routed_packets.inc_by(c.source_routed.saturating_sub(seen.source_routed));
            *seen = c;
        }
        Err(e) => warn!(error = %e, "reading the flow counters failed"),
    }
}

pub fn report_drops(dp: &mut Datapath, seen: &mut u64, m: &Metrics) {
    match dp.events_dropped() {
        Ok(total) if total > *seen => {
            m.events_dropped.inc_by(total - *seen);
            warn!(dropped = total - *seen, total, "kernel dropped events: the ring buffer was full");
            *seen = total;
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "reading the dropped-events counter failed"),
    }
}

/// Sets `egress_kernel_table_entries` and `_capacity` for every kernel table.
pub fn table_metrics(
    dp: &mut Datapath,
    policy: &crate::policy::CompiledPolicy,
    counted: &super::tables::Counted,
    m: &Metrics,
) {
    match dp.table_fill(policy, counted) {
        Ok(tables) => {
            for t in tables {
                m.table_entries.with_label_values(&[t.table]).set(t.entries as i64);
                m.table_capacity.with_label_values(&[t.table]).set(t.capacity as i64);
            }
        }
        Err(e) => warn!(error = %e, "counting the kernel tables failed"),
    }
}
