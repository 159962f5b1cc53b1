//! Sockets no hook can decide. The connect and sendmsg hooks decide TCP (and MPTCP) and UDP;
//! the `skb_dgram` program decides ICMP ping and UDP-Lite datagrams, once this hook has
//! recorded who created the socket (`dgram`). An unprivileged process can create other
//! IPv4/IPv6 sockets whose sends nothing sees: SCTP, L2TP over IP, DCCP and whatever else a
//! kernel autoloads on `socket()`. So they are refused when created, in enforce mode,
//! and reported in monitor mode: by construction, not by a list of what this kernel has. Raw
//! sockets need CAP_NET_RAW and stay outside (README "What is covered").

use agent_common::{event_flags2, hook, mode, verdict, Event};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    programs::SockContext,
    EbpfContext as _,
};

use crate::{
    connect::active_slot,
    identity,
    maps::EVENTS,
    ring::{count_drop, wakeup_flags},
    IPPROTO_TCP, IPPROTO_UDP,
};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const SOCK_RAW: u32 = 3;
const IPPROTO_MPTCP: u32 = 262;

/// cgroup/sock_create: 1 lets the socket be created, 0 refuses it (EPERM).
#[inline(always)]
pub fn on_create(ctx: &SockContext) -> i32 {
    // SAFETY: the kernel hands the program a valid socket for its whole run.
    let sk = unsafe { &*ctx.sock };
    let (family, ty, proto) = (sk.family, sk.type_, sk.protocol);
    if decidable(ty, proto) {
        return 1;
    }
    // Ping and UDP-Lite sockets: their datagrams are decided on the way out, as the process
    // that creates them now (see `dgram`).
    if crate::dgram::owned(ty, proto) && crate::dgram::record(ctx) {
        return 1;
    }
    let (generation, enforce) = match active_slot() {
        Some((_, m)) => (m.generation, m.mode == mode::ENFORCE),
        None => (0, false),
    };
    report(ctx, family as u8, ty, proto, generation, if enforce { verdict::DENY } else { verdict::ALERT });
    if enforce {
        0
    } else {
        1
    }
}

/// What the connect and sendmsg hooks decide: TCP and MPTCP streams, UDP datagrams. Raw
/// sockets are let through: they need CAP_NET_RAW, and refusing them would take ping and DHCP
/// from root processes on a host watched whole.
#[inline(always)]
fn decidable(ty: u32, proto: u32) -> bool {
    match ty {
        SOCK_STREAM => proto == IPPROTO_TCP || proto == IPPROTO_MPTCP,
        SOCK_DGRAM => proto == IPPROTO_UDP,
        SOCK_RAW => true,
        _ => false,
    }
}

#[inline(always)]
fn report(ctx: &SockContext, family: u8, ty: u32, proto: u32, generation: u32, v: u8) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let proc = identity::current_proc();
    // SAFETY: plain helpers; the cookie helper takes the program's own context.
    let (cgroup_id, cookie) = unsafe { (bpf_get_current_cgroup_id(), bpf_get_socket_cookie(ctx.as_ptr())) };
    entry.write(Event {
        cookie,
        cgroup_id,
        family,
        proto: proto as u8,
        hook: hook::SOCK_CREATE,
        sock_type: ty,
        ..identity::report_of(&proc, generation, v, event_flags2::UNDECIDABLE_SOCKET)
    });
    entry.submit(wakeup_flags());
}
