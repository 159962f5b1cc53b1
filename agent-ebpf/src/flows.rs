//! Flows: what each allowed socket sends and receives, counted in the kernel.
//!
//! - The connect hooks create a flow when they allow (or alert on) a socket's first attempt
//!   towards a peer ([`create`]); an unconnected UDP socket gets one flow per peer address and
//!   port, and its later datagrams to that peer are only counted, not reported one by one.
//! - The cgroup_skb programs ([`count`]) add every packet's transport payload to its flow, found
//!   from the packet itself (socket cookie, peer address and port), so connected and unconnected
//!   sockets are counted alike. They run first in the one cgroup_skb program per direction, and
//!   hand the ports they read to the DNS code, which only looks at packets from or to port 53.
//! - cgroup/sock_release ([`release`]) reports the end of a socket that has flows. The flows stay
//!   in `FLOWS` until the agent reads and removes them: a flow that starts and ends between two
//!   reads is still reported, and data TCP sends after close() is still counted.

use core::ffi::c_void;

use agent_common::{record, BlockKey, FlowEnd, FlowKey, FlowStats};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_sk_storage_get},
    programs::{SkBuffContext, SockContext},
    EbpfContext as _,
};

use crate::{
    identity::Proc,
    kill,
    maps::{BLOCKS, EVENTS, FLOWS, FLOW_COUNTERS, SK_FLOWS},
    ring::{add, count_drop, wakeup_flags},
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

// Packet header values, shared with the source-route check (`sroute`).
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const IPV6_HOPOPTS: u8 = 0;
pub(crate) const IPV6_ROUTING: u8 = 43;
pub(crate) const IPV6_FRAGMENT: u8 = 44;
pub(crate) const IPV6_DSTOPTS: u8 = 60;
/// Extension headers skipped before giving up on a packet (uncounted).
const IPV6_EXT_MAX: u32 = 4;

/// The socket an attempt is made on, as the program deciding it reaches it.
pub trait Sock {
    fn cookie(&self) -> u64;
    /// Marks it in `SK_FLOWS`, so that its release is reported; false if it cannot be.
    fn mark(&self) -> bool;
}

/// The flow key of an attempt on the socket `cookie`.
#[inline(always)]
pub fn key(cookie: u64, addr: &[u8; 16], port: u16, family: u8, proto: u8) -> FlowKey {
    // Ports mean nothing to ICMP (ping sockets): the packets carry none either.
    let port = if proto as u32 == IPPROTO_TCP || proto as u32 == IPPROTO_UDP { port } else { 0 };
    FlowKey { cookie, addr: *addr, port, family, proto, _pad: 0 }
}

/// No flow: what [`live`] answers for a key the table does not have.
pub const NO_FLOW: u32 = u32::MAX;

/// The verdict a live flow was last reported with, or [`NO_FLOW`].
#[inline(always)]
pub fn live(key: &FlowKey) -> u32 {
    match FLOWS.get_ptr(key) {
        // SAFETY: a live map value.
        Some(f) => unsafe { (*f).verdict },
        None => NO_FLOW,
    }
}

/// Adds a packet of `payload` bytes to the flow `key` if it has none yet (a flow started by the
/// decision of this very packet, after the packet was counted).
#[inline(always)]
pub fn first_packet(key: &FlowKey, payload: u64) {
    if let Some(f) = FLOWS.get_ptr_mut(key) {
        // SAFETY: a live map value; updated atomically, as `count` does.
        unsafe {
            if (*f).packets_out == 0 {
                core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                    &raw mut (*f).bytes_out,
                    payload,
                );
                core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                    &raw mut (*f).packets_out,
                    1,
                );
            }
        }
    }
}

/// Records that the flow's datagrams are now reported with `verdict` (the policy changed).
#[inline(always)]
pub fn set_verdict(key: &FlowKey, verdict: u8) {
    if let Some(f) = FLOWS.get_ptr_mut(key) {
        // SAFETY: a live map value; a racing writer writes the same kind of value.
        unsafe { (*f).verdict = u32::from(verdict) };
    }
}

/// Starts tracking a flow, and marks its socket so that its release is reported. False when the
/// table is full (counted): the attempt is still decided and reported, only not counted.
#[inline(always)]
pub fn create<S: Sock>(sock: &S, key: &FlowKey, verdict: u8, vendor: u16, infra: bool) -> bool {
    // SAFETY: plain helper.
    let now = unsafe { bpf_ktime_get_ns() };
    let stats = FlowStats {
        start_ns: now,
        verdict: u32::from(verdict),
        vendor,
        infra: u8::from(infra),
        ..FlowStats::default()
    };
    // The mark first: a flow without one would never be reported as ended.
    if !sock.mark() {
        add(&FLOW_COUNTERS, agent_common::flow_counter::FULL);
        return false;
    }
    match FLOWS.insert(key, &stats, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Created a moment ago by another thread sending on the same socket.
        Err(e) if e == -17 => true,
        Err(_) => {
            add(&FLOW_COUNTERS, agent_common::flow_counter::FULL);
            false
        }
    }
}

/// Whether an automated response refuses this executable the vendor `vendor` now.
#[inline(always)]
pub fn blocked(vendor: u16, proc: &Proc) -> bool {
    if proc.exe_ino == 0 {
        return false;
    }
    let key = BlockKey { vendor: u32::from(vendor), exe_dev: proc.exe_dev, exe_ino: proc.ino() };
    // SAFETY: a read of a live map value.
    match unsafe { BLOCKS.get(&key) } {
        // SAFETY: plain helper.
        Some(&until) => until > unsafe { bpf_ktime_get_ns() },
        None => false,
    }
}

/// The ports of a packet the flow accounting read, for the DNS programs' pre-filter.
pub struct Peek {
    /// False when the headers could not be read here: the DNS programs must look themselves.
    pub known: bool,
    /// The packet belongs to a live flow the kill switch cuts: drop it.
    pub drop: bool,
    pub sport: u16,
    pub dport: u16,
}

/// What one packet adds to a flow.
struct Seen {
    key: FlowKey,
    /// Transport payload bytes.
    payload: u64,
    sport: u16,
    dport: u16,
}

/// Adds a packet to its flow, if it has one; says which ports it saw. A function of its own
/// for the verifier: its stack is gone before the DNS code, which needs most of the 512 bytes,
/// runs.
#[inline(never)]
pub fn count(ctx: &SkBuffContext, egress: bool) -> Peek {
    // Headers are read straight from the packet when they are in its linear part (nearly
    // always): helper calls per field cost more than the rest of the accounting.
    let seen = match direct(ctx, egress) {
        Direct::Seen(s) => Some(s),
        Direct::Skip => None,
        Direct::Slow => slow(ctx, egress),
    };
    let Some(mut seen) = seen else { return Peek { known: false, drop: false, sport: 0, dport: 0 } };
    let mut peek = Peek { known: true, drop: false, sport: seen.sport, dport: seen.dport };
    // Segments without data (ACKs, the handshake) are not counted: a bulk transfer sends about
    // one for every data segment the other way, and each lookup costs.
    if seen.payload == 0 && u32::from(seen.key.proto) == IPPROTO_TCP {
        return peek;
    }
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return peek;
    }
    seen.key.cookie = cookie;
    let Some(flow) = FLOWS.get_ptr_mut(&seen.key) else { return peek };
    if egress {
        let k = kill::now();
        // SAFETY: a live map value.
        let (vendor, infra) = unsafe { ((*flow).vendor, (*flow).infra) };
        if k.any && ((k.all && infra == 0) || kill::vendor(vendor, k.now)) {
            // Live connections to a killed vendor are cut too: their data stops leaving.
            add(&FLOW_COUNTERS, agent_common::flow_counter::KILLED_PACKETS);
            peek.drop = true;
            return peek;
        }
    }
    // SAFETY: the context is valid for the program's run.
    let gso_segs = unsafe { (*ctx.skb.skb).gso_segs };
    // A GSO packet is several on the wire.
    let packets = u64::from(if gso_segs == 0 { 1 } else { gso_segs });
    // SAFETY: a live map value; the counters are updated atomically since several CPUs count
    // into the same flow at once. Each direction writes only its own counters (no shared
    // "last packet" time), so the two directions do not fight over more than the cache line.
    unsafe {
        let (bytes, pkts) = if egress {
            (&raw mut (*flow).bytes_out, &raw mut (*flow).packets_out)
        } else {
            (&raw mut (*flow).bytes_in, &raw mut (*flow).packets_in)
        };
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(bytes, seen.payload);
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(pkts, packets);
    }
    peek
}

enum Direct {
    Seen(Seen),
    /// Nothing to count (another protocol family, a later fragment).
    Skip,
    /// The headers are not all in the linear part: read them with the helper.
    Slow,
}

/// Reads IPv4 without options, and IPv6 without extension headers (nearly every packet),
/// straight from the packet; anything else goes the helper's way.
#[inline(always)]
fn direct(ctx: &SkBuffContext, egress: bool) -> Direct {
    // SAFETY: the kernel hands the program a valid __sk_buff; `data`/`data_end` are the bounds
    // of its linear part, checked before every read below.
    let skb = unsafe { &*ctx.skb.skb };
    let (data, end) = (skb.data as usize, skb.data_end as usize);
    let len = skb.len;
    let mut key = FlowKey::default();
    match u16::from_be(skb.protocol as u16) {
        ETH_P_IP => {
            if data + 20 > end {
                return Direct::Slow;
            }
            let ip = data as *const u8;
            // SAFETY: 20 bytes are in bounds (checked above).
            let (vihl, frag_hi, frag_lo, proto) = unsafe { (*ip, *ip.add(6), *ip.add(7), *ip.add(9)) };
            // A later fragment has no transport header: its bytes cannot be placed.
            if (u16::from_be_bytes([frag_hi, frag_lo]) & 0x1fff) != 0 {
                return Direct::Skip;
            }
            if vihl & 0x0f != 5 {
                // IP options: the header length varies, which the helper path handles.
                return Direct::Slow;
            }
            let at = if egress { 16 } else { 12 };
            // SAFETY: in bounds (checked above).
            unsafe { core::ptr::copy_nonoverlapping(ip.add(at), key.addr.as_mut_ptr(), 4) };
            key.family = AF_INET;
            transport::<20>(data, end, len, proto, egress, key)
        }
        ETH_P_IPV6 => {
            if data + 40 > end {
                return Direct::Slow;
            }
            let ip = data as *const u8;
            // SAFETY: 40 bytes are in bounds (checked above).
            let next = unsafe { *ip.add(6) };
            if !matches!(next as u32, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE) {
                // Extension headers, ICMPv6 ...: the helper path walks them.
                return Direct::Slow;
            }
            let at = if egress { 24 } else { 8 };
            // SAFETY: in bounds (checked above).
            unsafe { core::ptr::copy_nonoverlapping(ip.add(at), key.addr.as_mut_ptr(), 16) };
            key.family = AF_INET6;
            transport::<40>(data, end, len, next, egress, key)
        }
        _ => Direct::Skip,
    }
}

/// The transport header at the constant offset `L3` (a constant, so that the verifier sees
/// every read at a fixed distance from the checked packet pointer).
#[inline(always)]
fn transport<const L3: usize>(data: usize, end: usize, len: u32, proto: u8, egress: bool, mut key: FlowKey) -> Direct {
    let l4 = match proto as u32 {
        IPPROTO_TCP => {
            if data + L3 + 20 > end {
                return Direct::Slow;
            }
            // SAFETY: 20 bytes past L3 are in bounds (checked above).
            let doff = unsafe { *((data + L3 + 12) as *const u8) };
            u32::from(doff >> 4) * 4
        }
        IPPROTO_UDP | IPPROTO_UDPLITE => {
            if data + L3 + 8 > end {
                return Direct::Slow;
            }
            8
        }
        _ => return Direct::Slow,
    };
    // SAFETY: at least 8 bytes past L3 are in bounds (checked above).
    let p = unsafe { core::ptr::read_unaligned((data + L3) as *const [u8; 4]) };
    let sport = u16::from_be_bytes([p[0], p[1]]);
    let dport = u16::from_be_bytes([p[2], p[3]]);
    // The peer's port: the destination going out, the source coming in.
    key.port = if egress { dport } else { sport };
    key.proto = if proto as u32 == IPPROTO_UDPLITE { IPPROTO_UDP as u8 } else { proto };
    let payload = u64::from(len.saturating_sub(L3 as u32 + l4));
    Direct::Seen(Seen { key, payload, sport, dport })
}

/// The same with the load helper: headers past the linear part, IPv6 extension headers.
#[inline(always)]
fn slow(ctx: &SkBuffContext, egress: bool) -> Option<Seen> {
    // SAFETY: the kernel hands the program a valid __sk_buff.
    let skb = unsafe { &*ctx.skb.skb };
    let mut key = FlowKey::default();
    let l3: u32;
    let proto: u8;
    match u16::from_be(skb.protocol as u16) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).ok()?;
            let frag: u16 = u16::from_be(ctx.load(6).ok()?);
            l3 = u32::from(vihl & 0x0f) * 4;
            proto = ctx.load(9).ok()?;
            let a: [u8; 4] = ctx.load(if egress { 16 } else { 12 }).ok()?;
            key.addr[..4].copy_from_slice(&a);
            key.family = AF_INET;
            if frag & 0x1fff != 0 {
                return None;
            }
        }
        ETH_P_IPV6 => {
            key.addr = ctx.load(if egress { 24 } else { 8 }).ok()?;
            key.family = AF_INET6;
            let mut next: u8 = ctx.load(6).ok()?;
            let mut at: u32 = 40;
            // Extension headers before the transport header. BIG TCP packets (over 64 KiB, which
            // loopback and fast NICs send) carry a hop-by-hop jumbo header: missing it would miss
            // most of a bulk transfer's bytes.
            let mut i = 0;
            while i < IPV6_EXT_MAX {
                match next {
                    IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                        let h: [u8; 2] = ctx.load(at as usize).ok()?;
                        next = h[0];
                        at += (u32::from(h[1]) + 1) * 8;
                    }
                    IPV6_FRAGMENT => {
                        let h: [u8; 4] = ctx.load(at as usize).ok()?;
                        // A later fragment has no transport header.
                        if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                            return None;
                        }
                        next = h[0];
                        at += 8;
                    }
                    _ => break,
                }
                i += 1;
            }
            l3 = at;
            proto = next;
        }
        _ => return None,
    }
    let (l4, ported) = match proto as u32 {
        IPPROTO_TCP => {
            let doff: u8 = ctx.load(l3 as usize + 12).ok()?;
            (u32::from(doff >> 4) * 4, true)
        }
        IPPROTO_UDP | IPPROTO_UDPLITE => (8, true),
        _ => (8, false),
    };
    let (mut sport, mut dport) = (0, 0);
    if ported {
        let p: [u8; 4] = ctx.load(l3 as usize).ok()?;
        sport = u16::from_be_bytes([p[0], p[1]]);
        dport = u16::from_be_bytes([p[2], p[3]]);
        key.port = if egress { dport } else { sport };
    }
    key.proto = if proto as u32 == IPPROTO_UDPLITE { IPPROTO_UDP as u8 } else { proto };
    let payload = u64::from(skb.len.saturating_sub(l3 + l4));
    Some(Seen { key, payload, sport, dport })
}

/// cgroup/sock_release: reports that a socket with flows is gone.
#[inline(always)]
pub fn release(ctx: &SockContext) -> i32 {
    let map = &SK_FLOWS as *const _ as *mut c_void;
    // SAFETY: the storage helper takes the program's socket (its context) and the map; no create.
    let mark = unsafe { bpf_sk_storage_get(map, ctx.as_ptr(), core::ptr::null_mut(), 0) };
    if mark.is_null() {
        return 1;
    }
    let Some(mut entry) = EVENTS.reserve::<FlowEnd>(0) else {
        // Its flows are found by the agent's sweep instead (see the agent's flows module).
        count_drop();
        return 1;
    };
    // SAFETY: plain helpers; the cookie helper takes the program's own context.
    let (cookie, ts_ns) = unsafe { (bpf_get_socket_cookie(ctx.as_ptr()), bpf_ktime_get_ns()) };
    entry.write(FlowEnd { kind: record::FLOW_END, _pad: 0, cookie, ts_ns });
    entry.submit(wakeup_flags());
    1
}
