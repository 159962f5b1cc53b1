//! DNS in the kernel: cgroup_skb programs that make domain rules synchronous.
//!
//! - Egress (`dns_egress`): a query to port 53 is parsed, its name looked up in the slot's
//!   domain trie, and recorded as outstanding in its socket's storage (transaction id, type,
//!   question) with the domain id it maps to; a query for a name no rule covers is refused under
//!   `dns.unlisted: deny` in enforce mode. A DNS answer sent from a raw socket in the watched
//!   cgroup (a forgery) is refused in enforce mode and reported.
//! - Ingress (`dns_ingress`): runs before the datagram (or segment) is queued to the socket, so
//!   the addresses of an answer are learnt before the application can read it: the first
//!   connect after a lookup never races the table. An answer is trusted only if it matches an
//!   outstanding query of that very socket (transaction id, type and the whole question name),
//!   comes from the address and port the query went to (or a configured resolver), and carries a
//!   valid checksum when the kernel has not verified it yet.
//!
//! The parsing steps are shared with the host (`agent_common::dns`) and run from `bpf_loop`
//! (`steps`); `packet` reads headers and checksums, `pending` keeps queries and judges answers,
//! `learn` fills the learnt tables, `report` writes events. Addresses are learnt per network
//! namespace.

mod learn;
mod packet;
mod pending;
mod report;
mod steps;

pub use packet::L4;

use core::ffi::c_void;

use agent_common::{
    dns::{self as wire, status},
    dns_counter, dns_flags, dns_phase, mode, verdict, DnsEvent,
};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::SkBuffContext,
};

use self::{
    packet::{headers, is_raw_socket, message, query_bounds, Skb},
    pending::judge,
    report::{copy, copy_msg, fill, identity_from_pending, identity_from_proc, reject},
    steps::{domain_id, read_question, rr_cb, run_loop},
};
use crate::{
    connect::active_slot,
    identity::current_proc,
    maps::{Scratch, DNS_COUNTERS, DNS_NEST, DNS_SCRATCH, EVENTS},
    ring::{add, count_drop, wakeup_flags},
    IPPROTO_TCP,
};

/// Return values of a cgroup_skb program.
const PASS: i32 = 1;

const DROP: i32 = 0;

/// Scratch slots of `DNS_SCRATCH`.
/// Scratch slots for egress runs nested on one CPU: a run in process context (sendmsg) can be
/// interrupted by a softirq that sends (a TCP ACK, a retransmission) and runs the egress program
/// too, on the same per-CPU memory. Each nesting level gets its own slot.
const EGRESS_SLOTS: u32 = 4;

/// Ingress runs in softirq context only, which does not nest: one slot, after the egress ones.
const INGRESS: u32 = EGRESS_SLOTS;

pub fn egress(ctx: &SkBuffContext) -> i32 {
    let Some(depth) = DNS_NEST.get_ptr_mut(0) else { return PASS };
    // A plain increment is enough: nested runs on one CPU end before the run they interrupted
    // resumes (a softirq returns; the kernel here does not preempt these programs).
    // SAFETY: a live per-CPU map value.
    let level = unsafe {
        let level = *depth;
        *depth = level + 1;
        level
    };
    let rc = if level < EGRESS_SLOTS {
        egress_at(ctx, level)
    } else {
        // Never seen in practice; refuse rather than decide with another run's state.
        add(&DNS_COUNTERS, dns_counter::NEST_OVERFLOW);
        aya_log_ebpf::error!(ctx, "dns egress nested {} deep on one cpu: packet refused", level);
        DROP
    };
    // SAFETY: as above.
    unsafe { *depth = level };
    rc
}

#[inline(always)]
fn egress_at(ctx: &SkBuffContext, level: u32) -> i32 {
    let skb = Skb(ctx.skb.skb);
    let Some(s) = DNS_SCRATCH.get_ptr_mut(level) else { return PASS };
    // SAFETY: a live per-CPU map value, owned by this nesting level.
    let s = unsafe { &mut *s };
    let Some(l) = headers(skb, s, level) else { return PASS };
    if l.sport == wire::PORT && is_raw_socket(skb) {
        return spoof(skb, s, l);
    }
    if l.dport != wire::PORT {
        return PASS;
    }
    if u32::from(l.proto) == IPPROTO_TCP && l.payload == l.l4_end {
        // No data: a handshake, an ACK, a FIN.
        return PASS;
    }
    let Some((slot, meta)) = active_slot() else { return PASS };
    // Every datagram or segment with data to port 53 must be exactly one query, or it counts as
    // one that does not parse (refused under `unlisted: deny`): a query split over small TCP
    // segments, a second query in the same segment, or a GSO packet that leaves as several
    // datagrams could otherwise carry a name past the check.
    // SAFETY: context fields readable by cgroup_skb programs.
    let gso = unsafe { (*skb.0).gso_segs > 1 || (*skb.0).gso_size != 0 };
    let (msg, end) = query_bounds(skb, l, &mut s.st.tmp);
    // Plain values rather than Options: the compiler leaves a None's payload undefined, and the
    // verifier refuses to let an undefined register be spilled.
    let (mut parsed, mut txid, mut qtype) = (false, 0u16, 0u16);
    if !gso && msg != 0 && end == l.l4_end {
        if let Some(h) = wire::header(&skb, msg, &mut s.st.tmp) {
            if h.flags & (wire::FLAG_QR | wire::OPCODE_MASK) == 0 && h.qdcount == 1 {
                if let Some((t, _)) = read_question(skb, s, msg + wire::HEADER_LEN, end, true) {
                    // Exactly this query: data past the question would go out unchecked.
                    let after = s.st.cur.off;
                    parsed = wire::query_is_exact(&skb, &h, after, end, &mut s.st.tmp);
                    txid = h.id;
                    qtype = t;
                }
            }
        }
    }
    let id = if parsed { domain_id(slot, s) } else { 0 };
    let verdict = if id != 0 {
        verdict::ALLOW
    } else {
        match (meta.unlisted_verdict, meta.mode) {
            (verdict::ALLOW, _) => verdict::ALLOW,
            (verdict::DENY, mode::ENFORCE) => verdict::DENY,
            _ => verdict::ALERT,
        }
    };
    let proc = current_proc();
    // SAFETY: plain helpers with the program's own context.
    let (cookie, cgroup_id, now) =
        unsafe { (bpf_get_socket_cookie(skb.0 as *mut c_void), bpf_get_current_cgroup_id(), bpf_ktime_get_ns()) };
    if parsed && verdict != verdict::DENY {
        let p = &mut s.pending;
        p.ts_ns = now;
        p.cgroup_id = cgroup_id;
        p.exe_ino = proc.exe_ino;
        p.start_ns = proc.start_ns;
        p.pid = (proc.pid_tgid >> 32) as u32;
        p.tid = proc.pid_tgid as u32;
        p.uid = proc.uid_gid as u32;
        p.gid = (proc.uid_gid >> 32) as u32;
        p.exe_dev = proc.exe_dev;
        p.domain_id = id;
        p.generation = meta.generation;
        p.name_len = s.st.cur.name_len;
        p.server = l.daddr;
        p.server_port = l.dport;
        p.family = l.family;
        p.verdict = verdict;
        p.proto = l.proto;
        p.comm = proc.comm;
        p.txid = txid;
        p.qtype = qtype;
        p.used = 1;
        p._pad = [0; 6];
        copy(&mut p.name[..], &s.st.name[..wire::NAME_BUF]);
        pending::record(skb, &s.pending);
    }
    if verdict != verdict::ALLOW {
        let flags = if parsed { 0 } else { dns_flags::MALFORMED };
        if let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) {
            let e = entry.as_mut_ptr();
            // SAFETY: a reserved record of the right size; `fill` writes every field.
            unsafe {
                fill(&mut *e, dns_phase::QUERY, flags, verdict, l, l.daddr, l.dport, cookie, s);
                identity_from_proc(&mut *e, &proc, cgroup_id);
                (*e).generation = meta.generation;
                (*e).qtype = qtype;
                copy_msg(skb, &mut *e, msg, if end < l.l4_end { end } else { l.l4_end });
            }
            entry.submit(wakeup_flags());
        } else {
            count_drop();
        }
    }
    if verdict == verdict::DENY {
        add(&DNS_COUNTERS, dns_counter::QUERY_DENIED);
        return DROP;
    }
    PASS
}

/// A DNS answer from a raw socket of the watched cgroup: whoever can forge the resolver's
/// address could otherwise make the parser learn any address for a name the policy allows.
#[inline(always)]
fn spoof(skb: Skb, s: &mut Scratch, l: &L4) -> i32 {
    let enforce = active_slot().is_some_and(|(_, m)| m.mode == mode::ENFORCE);
    let proc = current_proc();
    if let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) {
        let e = entry.as_mut_ptr();
        s.st.cur.name_len = 0;
        // SAFETY: a reserved record of the right size; `fill` writes every field.
        unsafe {
            let v = if enforce { verdict::DENY } else { verdict::ALERT };
            fill(&mut *e, dns_phase::SPOOF, 0, v, l, l.daddr, l.dport, 0, s);
            identity_from_proc(&mut *e, &proc, bpf_get_current_cgroup_id());
            if let Some((msg, end)) = message(skb, l, &mut s.st.tmp) {
                copy_msg(skb, &mut *e, msg, end);
            }
        }
        entry.submit(wakeup_flags());
    } else {
        count_drop();
    }
    if enforce {
        add(&DNS_COUNTERS, dns_counter::QUERY_DENIED);
        DROP
    } else {
        PASS
    }
}

pub fn ingress(ctx: &SkBuffContext) -> i32 {
    let skb = Skb(ctx.skb.skb);
    let Some(s) = DNS_SCRATCH.get_ptr_mut(INGRESS) else { return PASS };
    // SAFETY: a live per-CPU map value, used by ingress programs only (softirq: no nesting).
    let s = unsafe { &mut *s };
    let Some(l) = headers(skb, s, INGRESS) else { return PASS };
    if l.sport != wire::PORT {
        return PASS;
    }
    let (msg, declared_end) = query_bounds(skb, l, &mut s.st.tmp);
    if msg == 0 {
        return PASS;
    }
    let end = if declared_end < l.l4_end { declared_end } else { l.l4_end };
    let Some(h) = wire::header(&skb, msg, &mut s.st.tmp) else { return PASS };
    if h.flags & wire::FLAG_QR == 0 || h.qdcount != 1 {
        return PASS;
    }
    // SAFETY: plain helper with the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(skb.0 as *mut c_void) };
    let Some((qtype, _)) = read_question(skb, s, msg + wire::HEADER_LEN, end, false) else {
        // Not a message this parser reads (or a TCP continuation): nothing learnt.
        add(&DNS_COUNTERS, dns_counter::ANSWER_REJECTED);
        aya_log_ebpf::debug!(ctx, "dns answer from port 53 whose question cannot be read: ignored");
        return PASS;
    };
    let Some((slot, meta)) = active_slot() else { return PASS };
    let grace_s = meta.dns_grace_s;
    // One place decides trust and one reports a refusal: each early return would be a path of
    // its own for the verifier.
    // The checksum walk below reuses the cursor: remember where the answers start.
    let after_question = s.st.cur.off;
    let flag = judge(skb, s, l, h.id, qtype, slot, meta.resolvers_only != 0);
    if flag != 0 {
        return reject(skb, s, l, cookie, msg, end, flag, qtype);
    }
    // One answer per query: a second one (a forgery racing the real answer, or a replay) finds
    // nothing outstanding.
    pending::consume(skb, s.pending_slot);
    s.n_addrs = 0;
    s.ttl_min = u32::MAX;
    s.flags = 0;
    s.domain_id = s.pending.domain_id;
    s.grace_s = grace_s;
    s.slot = slot;
    // SAFETY: the helper takes the program's own context.
    s.netns = unsafe { bpf_get_netns_cookie(skb.0 as *mut c_void) };
    // SAFETY: plain helper.
    s.now_ns = unsafe { bpf_ktime_get_ns() };
    let records = u32::from(h.ancount);
    if records > wire::MAX_RECORDS {
        s.flags |= dns_flags::PARSE_LIMIT;
    }
    s.st.cur = wire::Cursor {
        off: after_question,
        end,
        left: if records > wire::MAX_RECORDS { wire::MAX_RECORDS } else { records },
        in_name: 1,
        ..wire::Cursor::default()
    };
    if s.domain_id != 0 {
        run_loop(skb, s, wire::RR_STEPS, rr_cb);
        // A TCP answer longer than its first segment is cut there, not malformed.
        match s.st.cur.status {
            status::DONE => {}
            status::BAD if declared_end > l.l4_end => s.flags |= dns_flags::PARSE_LIMIT,
            status::BAD => s.flags |= dns_flags::MALFORMED,
            _ => s.flags |= dns_flags::PARSE_LIMIT,
        }
        if s.flags & dns_flags::PARSE_LIMIT != 0 {
            add(&DNS_COUNTERS, dns_counter::PARSE_LIMIT);
        }
        // Rare paths: a parse that gave up, a full table, an evicted pattern.
        if s.flags & (dns_flags::PARSE_LIMIT | dns_flags::MALFORMED | dns_flags::LEARN_FULL | dns_flags::SLOT_EVICTED)
            != 0
        {
            aya_log_ebpf::warn!(ctx, "dns answer learnt in part: flags {:x}, {} addresses", s.flags, s.n_addrs);
        }
    }
    if let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) {
        let e = entry.as_mut_ptr();
        let (flags, verdict, server, port) = (s.flags, s.pending.verdict, l.saddr, l.sport);
        // SAFETY: a reserved record of the right size; `fill` writes every field.
        unsafe {
            fill(&mut *e, dns_phase::ANSWER, flags, verdict, l, server, port, cookie, s);
            identity_from_pending(&mut *e, s);
            (*e).qtype = qtype;
            (*e).rcode = (h.flags & wire::RCODE_MASK) as u8;
            (*e).n_addrs = s.n_addrs;
            (*e).ttl_min = if s.n_addrs == 0 { 0 } else { s.ttl_min };
            copy(&mut (*e).addrs, &s.addrs);
            copy(&mut (*e).addr_family, &s.addr_family);
            copy_msg(skb, &mut *e, msg, end);
        }
        entry.submit(wakeup_flags());
    } else {
        count_drop();
    }
    PASS
}
