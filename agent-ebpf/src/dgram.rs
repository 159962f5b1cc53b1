//! Datagrams no sock_addr hook sees, decided on their way out.
//!
//! An unprivileged process can send from two kinds of datagram socket whose sends the
//! sock_addr hooks do not all see:
//! - an ICMP ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`/`ICMPV6`, open to the groups in
//!   `net.ipv4.ping_group_range`): its `connect()` runs connect4/6, but its `sendto()` runs no
//!   hook;
//! - a UDP-Lite socket: its unconnected `sendto()` runs sendmsg4/6, but its `connect()` runs no
//!   hook, and the sendmsg hooks skip connected sockets.
//!
//! So every packet such a socket sends is decided here, per destination, like a datagram at
//! sendmsg: `icmp` rules for ICMP, `udp` rules for UDP-Lite, with the same flows (one event per
//! socket and destination) and the same kill switch, blocks and modes. A cgroup_skb program has
//! no task helpers, so the identity decided is the process that created the socket, recorded
//! with its cgroup ancestors in the socket's storage by the sock_create hook ([`record`]); the
//! sender (the current task: these packets leave in its `sendmsg`) must run the same
//! executable, its own marks counting ([`identity::sender`]). A program of its own, which `skb_egress` tail-calls for these
//! sockets only: the decision has the verifier budget of a connect program, and every other
//! packet pays one socket lookup ([`owned_packet`]).

use core::ffi::c_void;

use agent_common::{event_flags, event_flags2, hook, mode, tamper, verdict, Event};
use aya_ebpf::{
    bindings::{bpf_sock, BPF_SK_STORAGE_GET_F_CREATE},
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_sk_fullsock,
            bpf_sk_storage_get, bpf_skb_cgroup_id,
        },
    },
    programs::{SkBuffContext, SockContext},
    EbpfContext as _,
};

use crate::{
    connect::{self, active_slot},
    dest::{self, Dest},
    flows::{self, ETH_P_IP, ETH_P_IPV6},
    identity::{self, Proc},
    maps::{DGRAM_UNOWNED, EVENTS, SK_FLOWS, SK_OWNERS},
    mptcp::{Owner, ANCESTORS},
    ring::{count_drop, wakeup_flags},
    AF_INET, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP, IPPROTO_UDPLITE,
};

const SOCK_DGRAM: u32 = 2;
/// Return values of a cgroup_skb program.
const PASS: i32 = 1;
const DROP: i32 = 0;

/// Sockets whose datagrams are decided here (and whose creator [`record`] keeps).
#[inline(always)]
pub fn owned(ty: u32, proto: u32) -> bool {
    ty == SOCK_DGRAM && matches!(proto, IPPROTO_ICMP | IPPROTO_ICMPV6 | IPPROTO_UDPLITE)
}

/// cgroup/sock_create of an [`owned`] socket: records the creating process (its identity as
/// the connect hooks see it, and its cgroup ancestors) in the socket's storage. False when the
/// storage cannot be had (memory): the socket is then one no hook can decide.
#[inline(always)]
pub fn record(ctx: &SockContext) -> bool {
    let map = &SK_OWNERS as *const _ as *mut c_void;
    // SAFETY: a cgroup/sock program's context is its socket, which the helper takes as is.
    let p =
        unsafe { bpf_sk_storage_get(map, ctx.as_ptr(), core::ptr::null_mut(), u64::from(BPF_SK_STORAGE_GET_F_CREATE)) }
            as *mut Owner;
    if p.is_null() {
        return false;
    }
    // SAFETY: a live storage value of this socket, which only this program writes (at creation,
    // before any other task can reach the socket).
    let owner = unsafe { &mut *p };
    owner.writer = bpf_get_current_pid_tgid();
    owner.proc = identity::current_proc();
    let mut level = 0;
    while level < ANCESTORS {
        // SAFETY: plain helper; a level below the task's depth yields 0.
        owner.ancestors[level] = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        level += 1;
    }
    true
}

/// The socket of a packet, as the flow code reaches it.
struct PacketSock<'a> {
    ctx: &'a SkBuffContext,
    sk: *mut bpf_sock,
}

impl flows::Sock for PacketSock<'_> {
    #[inline(always)]
    fn cookie(&self) -> u64 {
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_get_socket_cookie(self.ctx.as_ptr()) }
    }

    #[inline(always)]
    fn mark(&self) -> bool {
        let map = &SK_FLOWS as *const _ as *mut c_void;
        // SAFETY: `sk` is the packet's full socket (checked by `bpf_sk_fullsock`).
        let p = unsafe {
            bpf_sk_storage_get(
                map,
                self.sk as *mut c_void,
                core::ptr::null_mut(),
                u64::from(BPF_SK_STORAGE_GET_F_CREATE),
            )
        };
        !p.is_null()
    }
}

/// The packet's socket when it is a ping or UDP-Lite socket (a full one), else null.
#[inline(always)]
fn owned_sock(ctx: &SkBuffContext) -> *mut bpf_sock {
    // SAFETY: the kernel hands the program a valid __sk_buff; `sk` is readable by cgroup_skb
    // programs, and the helper checks what it points at.
    let full = unsafe {
        let sk = (*ctx.skb.skb).__bindgen_anon_2.sk;
        if sk.is_null() {
            return core::ptr::null_mut();
        }
        bpf_sk_fullsock(sk)
    };
    // SAFETY: a full socket: these fields are readable.
    if full.is_null() || !owned(unsafe { (*full).type_ }, unsafe { (*full).protocol }) {
        return core::ptr::null_mut();
    }
    full
}

/// Whether the packet is a ping or UDP-Lite socket's: what `skb_egress` hands to `skb_dgram`.
/// A socket load, one helper call and two compares for every other packet.
#[inline(always)]
pub fn owned_packet(ctx: &SkBuffContext) -> bool {
    !owned_sock(ctx).is_null()
}

/// A ping or UDP-Lite packet `skb_dgram` could not be handed (the agent sets it before it
/// attaches, so never while it runs): refused in enforce mode, let through in monitor mode.
#[inline(always)]
pub fn undecided() -> i32 {
    if enforcing() {
        DROP
    } else {
        PASS
    }
}

/// The policy in force is in enforce mode.
#[inline(always)]
fn enforcing() -> bool {
    matches!(active_slot(), Some((_, m)) if m.mode == mode::ENFORCE)
}

/// The decision: 1 lets the packet go, 0 drops it (the sender sees EPERM).
#[inline(always)]
pub fn egress(ctx: &SkBuffContext) -> i32 {
    let full = owned_sock(ctx);
    if full.is_null() {
        return PASS;
    }
    // SAFETY: a full socket (checked by `owned_sock`): readable.
    let protocol = unsafe { (*full).protocol };
    let enforce = enforcing();
    let (dest, payload) = match destination(ctx, protocol) {
        Headers::Dest(d, payload) => (d, payload),
        // Another protocol than the socket's: a packet the kernel made of one already decided
        // (IPsec's ESP or AH, or its UDP encapsulation, after the inner packet came through
        // here), or one behind an IPv6 extension header, which only a routing header can put
        // there without CAP_NET_RAW — and the source-route check drops those (enforce) or
        // reports them (monitor).
        Headers::Other => return PASS,
        // Headers that cannot be read: not decided, so not let through in enforce mode.
        Headers::Unreadable => return if enforce { DROP } else { PASS },
    };
    let map = &SK_OWNERS as *const _ as *mut c_void;
    // SAFETY: `full` is a full socket.
    let owner = unsafe { bpf_sk_storage_get(map, full as *mut c_void, core::ptr::null_mut(), 0) } as *const Owner;
    let hook = if dest.wire_family == AF_INET { hook::EGRESS4 } else { hook::EGRESS6 };
    if owner.is_null() {
        // Created before the agent's sock_create hook was attached: whose it is is unknown, so
        // nothing is allowed on it in enforce mode.
        unowned(ctx, &dest, hook, enforce);
        return if enforce { DROP } else { PASS };
    }
    // SAFETY: a live storage value of the packet's socket (freed with it, after this run).
    let owner = unsafe { &*owner };
    let mut proc: Proc = owner.proc;
    // The sender must be what the creator was: a socket handed to another process
    // (`pidfd_getfd`, `SCM_RIGHTS`, inherited across an exec) is not a way to borrow the
    // creator's vendors. Another executable matches no `exe` selector (as a replaced one), and
    // the sender's own marks (a tracer attached since, a steered loader, no exec record) count.
    // Without branches, like `current_proc`: the decision below is walked once.
    let (dev, ino, marks) = identity::sender();
    let differs = u64::from(dev ^ proc.exe_dev) | (ino ^ proc.exe_ino);
    proc.exe_ino |= (differs | differs.wrapping_neg()) & identity::REPLACED;
    proc.tamper |= marks;
    let sock = PacketSock { ctx, sk: full };
    let verdict = connect::attempt(&sock, hook, &dest, &proc, owner.ancestors.as_ptr());
    if verdict == PASS {
        count_first(flows::Sock::cookie(&sock), &dest, payload);
    }
    verdict
}

/// `skb_egress` counted the packet before handing it here, into its flow if it had one; a flow
/// this decision started has none of its packets yet, and this is its first. A function of its
/// own: the key would take stack the rule walks below `attempt` need.
#[inline(never)]
fn count_first(cookie: u64, dest: &Dest, payload: u64) {
    let key = flows::key(cookie, &dest.wire, dest.port, dest.wire_family, dest.proto);
    flows::first_packet(&key, payload);
}

enum Headers {
    /// The destination, and the packet's transport payload in bytes.
    Dest(Dest, u64),
    /// The IP header names another protocol than the socket's.
    Other,
    Unreadable,
}

/// Where the packet of a `protocol` socket goes, as the connect hooks would decide it: ICMP as
/// itself, UDP-Lite as UDP.
#[inline(always)]
fn destination(ctx: &SkBuffContext, protocol: u32) -> Headers {
    // SAFETY: the kernel hands the program a valid __sk_buff.
    let len = u64::from(unsafe { (*ctx.skb.skb).len });
    match read_destination(ctx, protocol) {
        // Both transport headers (ICMP's, UDP-Lite's) are 8 bytes.
        Some(Some((d, l3))) => Headers::Dest(d, len.saturating_sub(l3 + 8)),
        Some(None) => Headers::Other,
        None => Headers::Unreadable,
    }
}

/// The destination and the IP header's length; Some(None): another protocol than
/// `protocol`'s; None: unreadable.
#[inline(always)]
fn read_destination(ctx: &SkBuffContext, protocol: u32) -> Option<Option<(Dest, u64)>> {
    // SAFETY: the kernel hands the program a valid __sk_buff.
    let skb_proto = unsafe { (*ctx.skb.skb).protocol };
    // SAFETY: the helper takes the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    match u16::from_be(skb_proto as u16) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).ok()?;
            let p: u8 = ctx.load(9).ok()?;
            let a: [u8; 4] = ctx.load(16).ok()?;
            if u32::from(p) != protocol {
                return Some(None);
            }
            let (proto, port) = match u32::from(p) {
                IPPROTO_ICMP => (p, 0),
                IPPROTO_UDPLITE => {
                    // IP options (timestamps, which need no capability) move the header.
                    let l4 = usize::from(vihl & 0x0f) * 4;
                    let d: [u8; 2] = ctx.load(l4 + 2).ok()?;
                    (IPPROTO_UDP as u8, u16::from_be_bytes(d))
                }
                _ => return Some(None),
            };
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&a);
            let dest = Dest { addr, wire: addr, netns, family: AF_INET, wire_family: AF_INET, port, proto, flags: 0 };
            Some(Some((dest, u64::from(vihl & 0x0f) * 4)))
        }
        ETH_P_IPV6 => {
            let next: u8 = ctx.load(6).ok()?;
            if u32::from(next) != protocol {
                return Some(None);
            }
            let (proto, port) = match u32::from(next) {
                IPPROTO_ICMPV6 => (next, 0),
                IPPROTO_UDPLITE => {
                    let d: [u8; 2] = ctx.load(42).ok()?;
                    (IPPROTO_UDP as u8, u16::from_be_bytes(d))
                }
                _ => return Some(None),
            };
            let a: [u8; 16] = ctx.load(24).ok()?;
            let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
            Some(Some((dest::dest_v6([w(0), w(4), w(8), w(12)], port, proto, netns), 40)))
        }
        _ => Some(None),
    }
}

/// Reports a packet of a socket nobody recorded: no process, no rule (`default`'s record with
/// the destination), `exec_unseen`. Once per socket and verdict, as source routes are.
#[inline(always)]
fn unowned(ctx: &SkBuffContext, dest: &Dest, hook: u8, enforce: bool) {
    // SAFETY: plain helpers taking the program's own context.
    let (cookie, cgroup_id) = unsafe { (bpf_get_socket_cookie(ctx.as_ptr()), bpf_skb_cgroup_id(ctx.skb.skb)) };
    let seen_key = (cookie << 1) | u64::from(enforce);
    if DGRAM_UNOWNED.get_ptr(&seen_key).is_some() {
        return;
    }
    let _ = DGRAM_UNOWNED.insert(&seen_key, &1, 0);
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let generation = active_slot().map_or(0, |(_, m)| m.generation);
    let v = if enforce { verdict::DENY } else { verdict::ALERT };
    let nobody = Proc {
        pcomm: [0; 16],
        start_ns: 0,
        pid_tgid: 0,
        uid_gid: u64::MAX,
        comm: [0; 16],
        exe_dev: 0,
        exe_ino: 0,
        exe_gen: 0,
        tamper: tamper::UNRECORDED,
        cgroup_id: 0,
        subflow: 0,
    };
    let base = identity::report_of(&nobody, generation, v, event_flags2::EXEC_UNSEEN);
    entry.write(Event {
        cookie,
        daddr: dest.wire,
        dport: dest.port,
        family: dest.wire_family,
        proto: dest.proto,
        hook,
        cgroup_id,
        flags: base.flags | dest.flags | event_flags::NO_FLOW,
        ..base
    });
    entry.submit(wakeup_flags());
}
