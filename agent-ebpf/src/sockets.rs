//! Sockets no hook can decide. The connect and sendmsg hooks decide TCP (and MPTCP) and UDP;
//! an unprivileged process can create other IPv4/IPv6 sockets whose sends they never see: a
//! connected UDP-Lite socket (its connect runs no hook, and the sendmsg hooks skip connected
//! sockets), an ICMP ping socket's unconnected `sendto`, SCTP, L2TP over IP, DCCP and whatever
//! else a kernel autoloads on `socket()`. So they are refused when created, in enforce mode,
//! and reported in monitor mode: by construction, not by a list of what this kernel has. Raw
//! sockets need CAP_NET_RAW and stay outside (README "What is covered").

use agent_common::{event_flags, event_flags2, hook, mode, record, verdict, Event, RULE_DEFAULT};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_ns},
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
    let mut flags = event_flags::NO_FLOW;
    if proc.exe_ino == 0 {
        flags |= event_flags::EXE_UNKNOWN;
    }
    // SAFETY: plain helpers; the cookie helper takes the program's own context.
    let (ts_ns, cgroup_id, cookie) =
        unsafe { (bpf_ktime_get_ns(), bpf_get_current_cgroup_id(), bpf_get_socket_cookie(ctx.as_ptr())) };
    entry.write(Event {
        kind: record::CONNECT,
        pid: (proc.pid_tgid >> 32) as u32,
        tid: proc.pid_tgid as u32,
        uid: proc.uid_gid as u32,
        gid: (proc.uid_gid >> 32) as u32,
        exe_dev: proc.exe_dev,
        rule_id: RULE_DEFAULT,
        generation,
        ts_ns,
        cookie,
        cgroup_id,
        exe_ino: proc.ino(),
        start_ns: proc.start_ns,
        daddr: [0; 16],
        comm: proc.comm,
        dport: 0,
        family,
        proto: proto as u8,
        verdict: v,
        hook: hook::SOCK_CREATE,
        flags,
        flags2: event_flags2::UNDECIDABLE_SOCKET | if proc.replaced() { event_flags2::EXE_REPLACED } else { 0 },
        domain_id: 0,
        sock_type: ty,
    });
    entry.submit(wakeup_flags());
}
