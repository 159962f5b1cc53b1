//! Tests of the flow tracker against a fake kernel table.
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
    (e.pid, e.tid, e.generation, e.ts_ns, e.cookie, e.dport, e.proto, e.hook) = (1, 1, 1, ts_ns, cookie, port, 17, 3);
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
    let (key, f, _) = kept.into_iter().next().expect("kept");
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
fn inherited_flows_are_evicted_first_when_the_table_fills() {
    let (mut t, mut k) = (FlowTracker::new(10, 0), Fake::default());
    for c in 0..8 {
        k.0.insert(FlowKey { cookie: c, ..FlowKey::default() }, FlowStats { start_ns: c, ..FlowStats::default() });
    }
    assert_eq!(t.inherit(&mut k), 8);
    for c in 100..102 {
        open(&mut t, &mut k, ev(c, 53, 1_000), 1);
    }
    assert!(t.tick(&mut k, 2_000).is_empty(), "nothing of this agent's is evicted");
    assert_eq!((t.inherited_count(), t.open_count()), (6, 2), "down to 80%, the oldest inherited first");
    assert!(!k.0.contains_key(&FlowKey { cookie: 0, ..FlowKey::default() }));
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
