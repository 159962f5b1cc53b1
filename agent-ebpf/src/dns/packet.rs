//! The packet: reading it (`Packet` for the program's sk_buff), its IP and transport headers,
//! where its DNS message is, and whether its checksum holds.

use core::ffi::c_void;

use agent_common::dns::{self as wire, status, Packet, CHUNK};
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_sk_fullsock, bpf_skb_load_bytes},
    },
};

use super::steps::{csum_cb, run_loop};
use crate::{
    maps::{Scratch, CONFIG, DNS_HEADERS},
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP,
};

/// The packet of the running program.
#[derive(Clone, Copy)]
pub(super) struct Skb(pub(super) *mut __sk_buff);

impl Packet for Skb {
    #[inline(always)]
    fn load(&self, off: u32, dst: &mut [u8; CHUNK], len: u32) -> bool {
        if len == 0 {
            return true;
        }
        // 1..=CHUNK, spelled so the verifier sees the bounds.
        let len = if len > CHUNK as u32 { CHUNK as u32 } else { len };
        let len = (core::hint::black_box(len).wrapping_sub(1) & (CHUNK as u32 - 1)) + 1;
        // SAFETY: `dst` has CHUNK bytes and `len` is at most CHUNK; the helper checks the range
        // of the packet itself.
        unsafe { bpf_skb_load_bytes(self.0 as *const c_void, off, dst.as_mut_ptr() as *mut c_void, len) == 0 }
    }
}

/// What the IP and transport headers say.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct L4 {
    pub family: u8,
    pub proto: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub l4_off: u32,
    /// End of the transport segment (IP payload) in the packet.
    pub l4_end: u32,
    /// Start of the transport payload.
    pub payload: u32,
    /// The UDP checksum field (0: none, IPv4 only).
    pub udp_csum: u16,
}

/// Parses the headers into map memory (`DNS_HEADERS[idx]`) and hands out a reference to it: the
/// verifier does not track values in map memory, so every way through the parse (extension
/// headers, options) continues as one state instead of one per path, and the stack stays small.
#[inline(always)]
pub(super) fn headers(skb: Skb, s: &mut Scratch, idx: u32) -> Option<&'static L4> {
    let l = parse_l4(skb, &mut s.st.tmp)?;
    let slot = DNS_HEADERS.get_ptr_mut(idx)?;
    // SAFETY: a live per-CPU map value, owned by this direction's program.
    unsafe {
        *slot = l;
        Some(&*slot)
    }
}

#[inline(always)]
pub(super) fn parse_l4(skb: Skb, tmp: &mut [u8; CHUNK]) -> Option<L4> {
    // SAFETY: the context is valid for the program's run.
    let skb_len = unsafe { (*skb.0).len };
    if !skb.load(0, tmp, 1) {
        return None;
    }
    let mut l = L4 {
        family: 0,
        proto: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        l4_off: 0,
        l4_end: 0,
        payload: 0,
        udp_csum: 0,
    };
    match tmp[0] >> 4 {
        4 => {
            if !skb.load(0, tmp, 20) {
                return None;
            }
            let ihl = u32::from(tmp[0] & 0x0f) * 4;
            let total = u32::from(u16::from_be_bytes([tmp[2], tmp[3]]));
            // Fragments: ingress sees datagrams reassembled; a fragmented query is not parsed.
            if u16::from_be_bytes([tmp[6], tmp[7]]) & 0x3fff != 0 || ihl < 20 {
                return None;
            }
            l.family = AF_INET;
            l.proto = tmp[9];
            l.saddr[..4].copy_from_slice(&tmp[12..16]);
            l.daddr[..4].copy_from_slice(&tmp[16..20]);
            l.l4_off = ihl;
            l.l4_end = if total < skb_len { total } else { skb_len };
        }
        6 => {
            if !skb.load(0, tmp, 40) {
                return None;
            }
            l.family = AF_INET6;
            let payload_len = u32::from(u16::from_be_bytes([tmp[4], tmp[5]]));
            let mut next = tmp[6];
            l.saddr.copy_from_slice(&tmp[8..24]);
            l.daddr.copy_from_slice(&tmp[24..40]);
            let mut off = 40u32;
            // Extension headers (hop-by-hop, routing, destination options, fragment) sit between
            // the IPv6 header and the transport header: skip them, or a query with one would
            // pass unparsed.
            for _ in 0..4 {
                match next {
                    0 | 43 | 60 => {
                        if !skb.load(off, tmp, 2) {
                            return None;
                        }
                        next = tmp[0];
                        off += (u32::from(tmp[1]) + 1) * 8;
                    }
                    44 => {
                        if !skb.load(off, tmp, 8) {
                            return None;
                        }
                        if u16::from_be_bytes([tmp[2], tmp[3]]) & 0xfff9 != 0 {
                            return None;
                        }
                        next = tmp[0];
                        off += 8;
                    }
                    _ => break,
                }
            }
            l.proto = next;
            l.l4_off = off;
            let end = 40 + payload_len;
            l.l4_end = if end < skb_len { end } else { skb_len };
        }
        _ => return None,
    }
    match u32::from(l.proto) {
        IPPROTO_UDP => {
            if !skb.load(l.l4_off, tmp, 8) {
                return None;
            }
            let ulen = u32::from(u16::from_be_bytes([tmp[4], tmp[5]]));
            l.udp_csum = u16::from_be_bytes([tmp[6], tmp[7]]);
            l.payload = l.l4_off + 8;
            if ulen >= 8 && l.l4_off + ulen < l.l4_end {
                l.l4_end = l.l4_off + ulen;
            }
        }
        IPPROTO_TCP => {
            if !skb.load(l.l4_off, tmp, 20) {
                return None;
            }
            l.payload = l.l4_off + u32::from(tmp[12] >> 4) * 4;
        }
        _ => return None,
    }
    l.sport = u16::from_be_bytes([tmp[0], tmp[1]]);
    l.dport = u16::from_be_bytes([tmp[2], tmp[3]]);
    if l.payload > l.l4_end {
        return None;
    }
    Some(l)
}

/// Where the DNS message is and where it ends within the packet: [`query_bounds`] with the
/// end cut at the segment. A TCP segment is parsed only if it starts a message (see README
/// "DNS over TCP").
#[inline(always)]
pub(super) fn message(skb: Skb, l: &L4, tmp: &mut [u8; CHUNK]) -> Option<(u32, u32)> {
    let (start, declared_end) = query_bounds(skb, l, tmp);
    if start == 0 {
        return None;
    }
    Some((start, if declared_end < l.l4_end { declared_end } else { l.l4_end }))
}

/// Where a DNS message is: (start, end as declared) — the UDP payload, or for TCP the message
/// after its 2-byte length, whose declared end may lie past the segment (then the segment does
/// not hold the whole message). (0, 0) when a TCP segment is too short to start a message.
#[inline(always)]
pub(super) fn query_bounds(skb: Skb, l: &L4, tmp: &mut [u8; CHUNK]) -> (u32, u32) {
    if u32::from(l.proto) == IPPROTO_UDP {
        return (l.payload, l.l4_end);
    }
    if l.payload + 2 + wire::HEADER_LEN > l.l4_end || !skb.load(l.payload, tmp, 2) {
        return (0, 0);
    }
    let start = l.payload + 2;
    (start, start + u32::from(u16::from_be_bytes([tmp[0], tmp[1]])))
}

/// `sk_buff.ip_summed` values.
pub(super) const CHECKSUM_UNNECESSARY: u8 = 1;

pub(super) const CHECKSUM_PARTIAL: u8 = 3;

/// Whether the datagram's checksum holds, or the kernel has verified it already. UDP and TCP
/// verify checksums lazily, after this program ran, so a datagram with a bad one is parsed here
/// and then dropped before the application sees it: without this check it could teach
/// addresses no application ever received.
#[inline(always)]
pub(super) fn checksum_ok(skb: Skb, s: &mut Scratch, l: &L4) -> bool {
    let Some(cfg) = CONFIG.get(0) else { return false };
    let bit = cfg.offsets.skb_ip_summed_bit;
    if bit != u32::MAX {
        // SAFETY: a cgroup_skb context is the kernel's sk_buff; the read is checked by the helper.
        let byte = unsafe { bpf_probe_read_kernel((skb.0 as *const u8).add((bit / 8) as usize)) };
        let summed = byte.map_or(0, |b| (b >> (bit % 8)) & 3);
        // Local traffic (loopback, veth) carries a partial checksum the stack never completes, and
        // a NIC may have verified it: the kernel trusts both, and so do we.
        if summed == CHECKSUM_UNNECESSARY || summed == CHECKSUM_PARTIAL {
            return true;
        }
    }
    if u32::from(l.proto) == IPPROTO_UDP && l.family == AF_INET && l.udp_csum == 0 {
        return true; // IPv4 UDP without a checksum
    }
    let addr_len = if l.family == AF_INET { 4 } else { 16 };
    let seg_len = l.l4_end - l.l4_off;
    s.st.cur = wire::Cursor {
        off: l.l4_off,
        end: l.l4_end,
        sum: wire::pseudo_sum(&l.saddr, &l.daddr, addr_len, l.proto, seg_len),
        ..wire::Cursor::default()
    };
    run_loop(skb, s, wire::CSUM_STEPS, csum_cb);
    s.st.cur.status == status::DONE && wire::fold(s.st.cur.sum) == 0xffff
}

pub(super) const SOCK_RAW: u32 = 3;

#[inline(always)]
pub(super) fn is_raw_socket(skb: Skb) -> bool {
    // SAFETY: the context field `sk` is readable by cgroup_skb programs; fullsock checks it.
    unsafe {
        let sk = (*skb.0).__bindgen_anon_2.sk;
        if sk.is_null() {
            return false;
        }
        let full = bpf_sk_fullsock(sk);
        !full.is_null() && (*full).type_ == SOCK_RAW
    }
}
