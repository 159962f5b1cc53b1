//! Where an attempt goes, as it is decided ([`Dest`]), and the IPv6 forms of IPv4 addresses:
//! an IPv4-mapped address and an address under a NAT64 prefix are decided as the IPv4 address
//! they carry (or they would bypass the IPv4 rules). Masks, not branches, throughout: every
//! branch here is a second walk of the whole decision for the verifier.

use agent_common::{event_flags, Nat64Key, NAT64_WELL_KNOWN};

use crate::{
    maps::{ACTIVE_SLOT, NAT64_PREFIXES},
    AF_INET, AF_INET6, IPPROTO_ICMP, IPPROTO_ICMPV6,
};

/// The destination of one attempt, as it will be matched.
pub struct Dest {
    /// The address decided: IPv4 in the first four bytes when `family` is `AF_INET`.
    pub addr: [u8; 16],
    /// The address on the wire, as flows count it and events report it: `addr`, except for a
    /// NAT64 destination (decided as IPv4, sent as IPv6).
    pub wire: [u8; 16],
    /// Network namespace of the socket (addresses learnt from DNS are per namespace).
    pub netns: u64,
    pub family: u8,
    pub wire_family: u8,
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

/// The destination an IPv6 address `w` (four words, each with the address bytes in memory
/// order) stands for.
#[inline(always)]
pub fn dest_v6(w: [u32; 4], port: u16, proto: u8, netns: u64) -> Dest {
    let [w0, w1, w2, w3] = w;
    // Two IPv6 forms are decided as the IPv4 address in their last word, or they would bypass
    // the IPv4 rules: ::ffff:a.b.c.d, which is IPv4 on the wire too, and an address under a
    // NAT64 prefix (64:ff9b::/96 or one the policy lists), IPv6 on the wire. Masks, not
    // branches: a branch here is a second walk of everything below for the verifier, which the
    // connect programs have no room for.
    let mapped = zero_mask(w0 | w1 | (w2 ^ u32::from_ne_bytes([0, 0, 0xff, 0xff])));
    let [k0, k1, k2] = words(NAT64_WELL_KNOWN);
    let nat64 = !mapped & (zero_mask((w0 ^ k0) | (w1 ^ k1) | (w2 ^ k2)) | listed_nat64(w0, w1, w2));
    let v4 = mapped | nat64;
    let addr = select_v4(v4, [w0, w1, w2, w3]);
    let wire = select_v4(mapped, [w0, w1, w2, w3]);
    Dest {
        addr,
        wire,
        netns,
        family: AF_INET6 ^ ((AF_INET6 ^ AF_INET) & v4 as u8),
        wire_family: AF_INET6 ^ ((AF_INET6 ^ AF_INET) & mapped as u8),
        port,
        proto,
        flags: (event_flags::V4_MAPPED & mapped as u8) | (event_flags::NAT64 & nat64 as u8),
    }
}

/// The port as decided and reported: 0 for ICMP, whose packets carry none (a ping socket's
/// `connect()` takes any). A mask, not a branch (see `on_v6`).
#[inline(always)]
pub fn port_of(port: u16, proto: u8) -> u16 {
    let p = u32::from(proto);
    // Zero exactly for ICMP or ICMPv6 (both factors are below 256, so the product is exact).
    port & !(zero_mask((p ^ IPPROTO_ICMP) * (p ^ IPPROTO_ICMPV6)) as u16)
}

/// All ones when `x` is zero, else zero, without a branch: the top bit of `x | -x` is set
/// exactly when `x` is not zero.
#[inline(always)]
fn zero_mask(x: u32) -> u32 {
    let x = u64::from(x);
    (((x | x.wrapping_neg()) >> 63) as u32).wrapping_sub(1)
}

/// The address `w`, or (where `v4` is all ones) the IPv4 address in its last word, in the
/// first four bytes.
#[inline(always)]
fn select_v4(v4: u32, w: [u32; 4]) -> [u8; 16] {
    let keep = !v4;
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&((w[3] & v4) | (w[0] & keep)).to_ne_bytes());
    a[4..8].copy_from_slice(&(w[1] & keep).to_ne_bytes());
    a[8..12].copy_from_slice(&(w[2] & keep).to_ne_bytes());
    a[12..16].copy_from_slice(&(w[3] & keep).to_ne_bytes());
    a
}

/// The three words of a 96-bit prefix, as `on_v6` reads an address's.
#[inline(always)]
fn words(p: [u8; 12]) -> [u32; 3] {
    [
        u32::from_ne_bytes([p[0], p[1], p[2], p[3]]),
        u32::from_ne_bytes([p[4], p[5], p[6], p[7]]),
        u32::from_ne_bytes([p[8], p[9], p[10], p[11]]),
    ]
}

/// All ones when the policy in force lists the /96 prefix `w0 w1 w2` in `nat64Prefixes`:
/// one hash lookup in that slot's entries (a reload fills the new slot's before it switches).
#[inline(always)]
fn listed_nat64(w0: u32, w1: u32, w2: u32) -> u32 {
    let slot = match ACTIVE_SLOT.get(0) {
        Some(&s) if s < 2 => s,
        _ => 0,
    };
    let mut prefix = [0u8; 12];
    prefix[0..4].copy_from_slice(&w0.to_ne_bytes());
    prefix[4..8].copy_from_slice(&w1.to_ne_bytes());
    prefix[8..12].copy_from_slice(&w2.to_ne_bytes());
    NAT64_PREFIXES.get_ptr(&Nat64Key { slot, prefix }).map_or(0, |v| {
        // SAFETY: a live map value.
        unsafe { *v }
    })
}
