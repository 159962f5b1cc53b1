//! Kernel side of egress-agent. One module per hook family:
//! - `connect`: cgroup sock_addr hooks that attribute every outbound TCP/UDP attempt to its
//!   process, decide it (`rules`: the destination tries, the addresses learnt from DNS, the
//!   rules' ports, protocols and selectors; `dest`: the IPv6 forms of IPv4 addresses), and
//!   report it through the ring buffer;
//! - `dns`: cgroup_skb hooks that record DNS queries and learn the addresses of their answers
//!   before the application reads them;
//! - `flows`: cgroup_skb and sock_release hooks that count each flow's bytes and report its end;
//! - `identity`: who is calling, and the exec tracepoint that names short-lived processes;
//! - `sroute`: packets carrying a source route, dropped (enforce) or reported (monitor);
//! - `dgram`: datagrams of ICMP ping and UDP-Lite sockets, decided on their way out by the
//!   process that created the socket;
//! - `sockets`: sockets no hook can decide, refused at creation (enforce) or reported (monitor).
#![no_std]
#![no_main]
// The BPF target does not advertise atomics to `core::sync::atomic`, but the instruction set has
// an atomic add (BPF_ATOMIC | BPF_ADD), which this intrinsic lowers to.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod connect;
mod dest;
mod dgram;
mod dns;
mod flows;
mod identity;
mod kill;
mod maps;
mod mptcp;
mod ring;
mod rules;
mod sockets;
mod sroute;
mod tamper;

use agent_common::hook;
use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, raw_tracepoint},
    programs::{RawTracePointContext, SkBuffContext, SockAddrContext, SockContext},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_UDPLITE: u32 = 136;
const DNS_PORT: u16 = agent_common::dns::PORT;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    connect::on_v4(&ctx, hook::CONNECT4)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    connect::on_v4(&ctx, hook::SENDMSG4)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    connect::on_v6(&ctx, hook::CONNECT6)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    connect::on_v6(&ctx, hook::SENDMSG6)
}

/// cgroup_skb egress: flow accounting on every packet, then DNS on packets from or to port 53
/// (queries; answers sent from raw sockets). One program, not two: each program run costs a
/// few hundred nanoseconds per packet, which a bulk transfer feels.
#[cgroup_skb(egress)]
pub fn skb_egress(ctx: SkBuffContext) -> i32 {
    // The connect hooks decided where the socket goes; a source route would send its packets
    // elsewhere first (see `sroute`).
    if sroute::suspect(&ctx) && sroute::egress(&ctx) == 0 {
        return 0;
    }
    let p = flows::count(&ctx, true);
    if p.drop {
        return 0;
    }
    // The datagrams of ping and UDP-Lite sockets are decided by a program of their own (see
    // `dgram`), with a verifier budget of its own; every other packet pays this check.
    if dgram::owned_packet(&ctx) {
        // SAFETY: the map holds programs of this type, set by the agent before it attaches.
        unsafe { maps::DGRAM_PROG.tail_call(&ctx, 0) };
        // Only when the program is missing: nothing decided the packet.
        return dgram::undecided();
    }
    if p.known && p.sport != DNS_PORT && p.dport != DNS_PORT {
        return 1;
    }
    dns_egress(&ctx)
}

/// cgroup_skb egress, tail-called by `skb_egress` (never attached) once it has done what it
/// does for any packet (source routes, flow accounting, the kill switch): the datagrams of ICMP
/// ping and UDP-Lite sockets, decided by destination (see `dgram`).
#[cgroup_skb(egress)]
pub fn skb_dgram(ctx: SkBuffContext) -> i32 {
    dgram::egress(&ctx)
}

// The DNS code in functions of their own, like the flow accounting: each then has the 512-byte
// stack to itself, rather than both sharing the program's frame.
#[inline(never)]
fn dns_egress(ctx: &SkBuffContext) -> i32 {
    dns::egress(ctx)
}

#[inline(never)]
fn dns_ingress(ctx: &SkBuffContext) -> i32 {
    dns::ingress(ctx)
}

/// cgroup_skb ingress: flow accounting, then DNS answers (from port 53).
#[cgroup_skb(ingress)]
pub fn skb_ingress(ctx: SkBuffContext) -> i32 {
    let p = flows::count(&ctx, false);
    if p.known && p.sport != DNS_PORT {
        return 1;
    }
    dns_ingress(&ctx)
}

#[cgroup_sock(sock_release)]
pub fn flow_release(ctx: SockContext) -> i32 {
    mptcp::release(&ctx);
    flows::release(&ctx)
}

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    sockets::on_create(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    identity::on_exec(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    identity::on_fork(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    identity::on_exit(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    tamper::on_switch(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
