//! The connect/sendmsg hooks: every outbound TCP/UDP attempt is attributed to its process,
//! decided against the destination tries and the addresses learnt from DNS (`rules`), and
//! reported; [`attempt`] is shared with the datagrams decided on their way out (`dgram`). The
//! destination's IPv6 forms of IPv4 addresses are in `dest`.
//!
//! Coverage, and why these four hooks suffice:
//! - connect4/connect6 run for TCP connect(), UDP connect() (so a connected UDP socket is checked
//!   once, when it is connected) and TCP Fast Open (`sendto(MSG_FASTOPEN)` goes through the same
//!   `pre_connect` path).
//! - sendmsg4/sendmsg6 run for every datagram sent with an explicit address on an unconnected UDP
//!   socket. An IPv4-mapped destination on an IPv6 UDP socket is handed to the IPv4 path by the
//!   kernel and arrives at sendmsg4; on connect6 we unmap it ourselves. A NAT64 destination
//!   (IPv6 on the wire) reaches connect6/sendmsg6, which decide it as the IPv4 address it embeds.
//! - The hooks are inherited by every descendant cgroup and every process, so children after
//!   fork/exec are covered without tracking them.

use agent_common::{event_flags, flow_counter, mode, record, verdict, Event, SlotMeta};
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::SockAddrContext,
    EbpfContext as _,
};

use crate::{
    dest::{dest_v6, port_of, Dest},
    flows,
    identity::{current_proc, Proc},
    kill,
    maps::{ACTIVE_SLOT, EVENTS, FLOW_COUNTERS, SK_FLOWS, SLOT_META},
    ring::{add, count_drop, wakeup_flags},
    rules::{decide, Decision},
    AF_INET, IPPROTO_UDP, IPPROTO_UDPLITE,
};

/// Return values of a cgroup sock_addr program.
const PASS: i32 = 1;
const REFUSE: i32 = 0; // the syscall fails with EPERM

#[inline(always)]
fn sock_addr(ctx: &SockAddrContext) -> &bpf_sock_addr {
    // SAFETY: the kernel hands every sock_addr program a valid context for its whole run.
    unsafe { &*ctx.sock_addr }
}

#[inline(always)]
pub fn on_v4(ctx: &SockAddrContext, hook: u8) -> i32 {
    let sa = sock_addr(ctx);
    let proto = protocol(sa);
    let mut addr = [0u8; 16];
    // user_ip4 is in network order in memory: its native bytes are the address bytes.
    let ip4 = sa.user_ip4.to_ne_bytes();
    addr[..4].copy_from_slice(&ip4);
    let netns = netns_of(ctx);
    let port = port_of(u16::from_be(sa.user_port as u16), proto);
    let dest = Dest { addr, wire: addr, netns, family: AF_INET, wire_family: AF_INET, port, proto, flags: 0 };
    handle(ctx, hook, &dest)
}

#[inline(always)]
pub fn on_v6(ctx: &SockAddrContext, hook: u8) -> i32 {
    let sa = sock_addr(ctx);
    let proto = protocol(sa);
    // The verifier only allows 4-byte loads of user_ip6, one word at a time. Each word's native
    // value has the address bytes in memory order.
    let w = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
    let port = port_of(u16::from_be(sa.user_port as u16), proto);
    let dest = dest_v6(w, port, proto, netns_of(ctx));
    handle(ctx, hook, &dest)
}

#[inline(always)]
fn netns_of(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the helper takes the program's own context.
    unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
}

/// The IPPROTO number to match and report. UDP-Lite sockets take the UDP paths and are UDP to
/// the policy. ICMP ping sockets connect through connect4/6 and are matched by `icmp` rules.
#[inline(always)]
fn protocol(sa: &bpf_sock_addr) -> u8 {
    match sa.protocol {
        IPPROTO_UDPLITE => IPPROTO_UDP as u8,
        p => p as u8,
    }
}

impl flows::Sock for SockAddrContext {
    #[inline(always)]
    fn cookie(&self) -> u64 {
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_get_socket_cookie(self.as_ptr()) }
    }

    #[inline(always)]
    fn mark(&self) -> bool {
        // SAFETY: the socket of a sock_addr program is a full socket.
        !unsafe { SK_FLOWS.get_or_insert_ptr_mut(self, None) }.is_null()
    }
}

#[inline(always)]
fn handle(ctx: &SockAddrContext, hook: u8, dest: &Dest) -> i32 {
    let mut proc = current_proc();
    if crate::mptcp::resolve(ctx, &mut proc).is_none() {
        // Preempted by another hook on this CPU while the identity was built (see `resolve`):
        // it may be another process's, so nothing is decided on it — refused in enforce mode
        // (the caller sees EPERM, as for any refusal), let through in monitor mode. Rare, and a
        // path that stops here costs the verifier nothing.
        return match active_slot() {
            Some((_, m)) if m.mode == mode::ENFORCE => REFUSE,
            _ => PASS,
        };
    }
    attempt(ctx, hook, dest, &proc, core::ptr::null())
}

/// Decides one attempt of `proc` on socket `sock` towards `dest`, keeps its flow and reports
/// it: PASS or REFUSE. `ancestors`: the cgroup ancestors of `proc` by level when it is not the
/// current task (a datagram decided on its way out), else null.
#[inline(always)]
pub fn attempt<S: flows::Sock>(sock: &S, hook: u8, dest: &Dest, proc: &Proc, ancestors: *const u64) -> i32 {
    let kill = kill::now();
    // The kill switch first, in a walk of its own (only while a kill is in force): a killed
    // vendor's address is refused whichever rule would have allowed it.
    let (killed_rule_id, killed_domain) = if kill.any { kill::killed_rule(dest, kill.now) } else { (0, 0) };
    let mut decision = if killed_rule_id != 0 {
        let learnt = if killed_domain != 0 { event_flags::LEARNT } else { 0 };
        Decision {
            verdict: verdict::DENY,
            rule_id: killed_rule_id as u32,
            generation: active_slot().map_or(0, |(_, m)| m.generation),
            flags: event_flags::KILLED | learnt,
            domain_id: killed_domain,
            vendor: 0,
        }
    } else {
        decide(dest, proc, ancestors)
    };
    if kill.all && decision.flags & event_flags::KILLED == 0 && !decision.infra() {
        decision.verdict = verdict::DENY;
        decision.flags |= event_flags::KILLED;
    }
    if decision.verdict == verdict::ALLOW && decision.vendor != 0 && flows::blocked(decision.vendor, proc) {
        decision.verdict = verdict::DENY;
        decision.flags |= event_flags::BLOCKED;
    }
    // One datagram of many (a sendmsg, or a datagram seen on its way out), not a connect.
    let sendmsg = matches!(
        hook,
        agent_common::hook::SENDMSG4
            | agent_common::hook::SENDMSG6
            | agent_common::hook::EGRESS4
            | agent_common::hook::EGRESS6
    );
    // Flows are counted from packets, which carry the address on the wire.
    let key = flows::key(sock.cookie(), &dest.wire, dest.port, dest.wire_family, dest.proto);
    let live = flows::live(&key);
    if sendmsg && live != flows::NO_FLOW {
        // A datagram of a flow already reported: its verdict is taken again (the policy may have
        // changed), but one let through with the verdict the flow was reported with (allowed,
        // or alerted in monitor mode) is only counted in the flow, so a UDP client in monitor
        // mode is one record too, not one per datagram. A block leaves live flows alone.
        if decision.flags & event_flags::BLOCKED != 0 {
            decision.verdict = verdict::ALLOW;
            decision.flags &= !event_flags::BLOCKED;
        }
        if decision.verdict == verdict::ALLOW || u32::from(decision.verdict) == live {
            return PASS;
        }
        if decision.verdict != verdict::DENY {
            // Reported once with the new verdict, then counted again.
            flows::set_verdict(&key, decision.verdict);
        }
    }
    if decision.verdict == verdict::DENY {
        if decision.flags & event_flags::KILLED != 0 {
            add(&FLOW_COUNTERS, flow_counter::KILLED);
        } else if decision.flags & event_flags::BLOCKED != 0 {
            add(&FLOW_COUNTERS, flow_counter::BLOCKED);
        }
    } else if live == flows::NO_FLOW
        && !flows::create(sock, &key, decision.verdict, flow_vendor(dest, &decision), decision.infra())
    {
        decision.flags |= event_flags::NO_FLOW;
    }
    emit(sock, hook, dest, proc, &decision);
    if decision.verdict == verdict::DENY {
        REFUSE
    } else {
        PASS
    }
}

/// The vendor a new flow belongs to, for the kill switch: the vendor whose rule allowed it, or,
/// for an attempt let through with an alert on a vendor's reserved destination, that vendor (a
/// walk of its own, only for those).
#[inline(always)]
fn flow_vendor(dest: &Dest, decision: &Decision) -> u16 {
    if decision.vendor != 0 || decision.flags & event_flags::PROCESS_NOT_ALLOWED == 0 {
        return decision.vendor;
    }
    kill::rule_vendor(dest, decision.rule_id, decision.domain_id)
}

/// The slot in force and its settings.
#[inline(always)]
pub fn active_slot() -> Option<(u32, &'static SlotMeta)> {
    let slot = match ACTIVE_SLOT.get(0) {
        Some(&s) if s < 2 => s,
        _ => 0,
    };
    SLOT_META.get(slot).map(|m| (slot, m))
}

#[inline(always)]
fn emit<S: flows::Sock>(sock: &S, hook: u8, dest: &Dest, proc: &Proc, decision: &Decision) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let (pid_tgid, uid_gid, exe_dev, exe_ino) = (proc.pid_tgid, proc.uid_gid, proc.exe_dev, proc.ino());
    let mut flags = dest.flags | decision.flags;
    if exe_ino == 0 {
        flags |= event_flags::EXE_UNKNOWN;
    }
    // SAFETY: plain helper.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let cookie = sock.cookie();
    let cgroup_id = proc.cgroup_id;
    entry.write(Event {
        kind: record::CONNECT,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        exe_dev,
        rule_id: decision.rule_id,
        generation: decision.generation,
        ts_ns,
        cookie,
        cgroup_id,
        exe_ino,
        start_ns: proc.start_ns,
        daddr: dest.wire,
        comm: proc.comm,
        dport: dest.port,
        family: dest.wire_family,
        proto: dest.proto,
        verdict: decision.verdict,
        hook,
        flags,
        flags2: crate::identity::flags2_of(proc),
        domain_id: decision.domain_id,
        sock_type: 0,
    });
    entry.submit(wakeup_flags());
}
