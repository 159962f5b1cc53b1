//! Source-routed packets. A socket can carry a route of its own choosing: an IPv6 routing header
//! (`IPV6_RTHDR`, no capability needed, as a socket option or ancillary data) or an IPv4 loose or
//! strict source-route option (`IP_OPTIONS`, CAP_NET_RAW). Its packets then go first to a hop
//! the connect hooks never saw, while they decided the address the socket named. Every packet
//! going out is looked at here first: one or two header bytes say whether it can carry a route
//! at all (IPv4 options, an IPv6 extension header); only those are parsed. A source-routed one
//! is dropped in enforce mode and let through in monitor mode, and reported once per socket
//! either way (its later packets are counted).

use agent_common::{event_flags2, flow_counter, hook, mode, verdict, Event};
use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_skb_cgroup_id},
    programs::SkBuffContext,
    EbpfContext as _,
};

use crate::{
    connect::active_slot,
    flows::{ETH_P_IP, ETH_P_IPV6, IPV6_DSTOPTS, IPV6_FRAGMENT, IPV6_HOPOPTS, IPV6_ROUTING},
    identity,
    maps::{EVENTS, FLOW_COUNTERS, SROUTE_SEEN},
    ring::{add, count_drop, wakeup_flags},
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

const IPPROTO_ICMPV6: u8 = 58;
/// Extension headers walked; a longer chain counts as routed (see [`routed`]). The kernel puts
/// the routing header third at the latest (after hop-by-hop and destination options).
const IPV6_EXT_MAX: u32 = 3;
const IPOPT_LSRR: u8 = 0x83;
const IPOPT_SSRR: u8 = 0x89;
/// Option bytes of an IPv4 header at most.
const IPV4_OPTS_MAX: usize = 40;

/// Whether the packet may carry a source route: IPv4 with options, IPv6 with an extension
/// header, or headers not in the packet's linear part. Nearly every packet is none of these.
#[inline(always)]
pub fn suspect(ctx: &SkBuffContext) -> bool {
    // SAFETY: the kernel hands the program a valid __sk_buff; `data`/`data_end` bound its linear
    // part, checked before each read.
    let skb = unsafe { &*ctx.skb.skb };
    let (data, end) = (skb.data as usize, skb.data_end as usize);
    match u16::from_be(skb.protocol as u16) {
        ETH_P_IP => {
            // The whole fixed header, as the flow accounting reads it: a check for fewer bytes
            // compiles to one the verifier does not count as a bound.
            if data + 20 > end {
                return true;
            }
            // SAFETY: 20 bytes in bounds (checked above).
            unsafe { *(data as *const u8) & 0x0f != 5 }
        }
        ETH_P_IPV6 => {
            if data + 40 > end {
                return true;
            }
            // SAFETY: 40 bytes in bounds (checked above).
            let next = unsafe { *((data + 6) as *const u8) };
            !matches!(next as u32, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE) && next != IPPROTO_ICMPV6
        }
        _ => false,
    }
}

/// Where a source-routed packet goes first, and what it carries.
struct Route {
    family: u8,
    proto: u8,
    port: u16,
    addr: [u8; 16],
}

/// What the cgroup_skb egress program returns for a packet [`suspect`] flagged: 0 drops it.
#[inline(never)]
pub fn egress(ctx: &SkBuffContext) -> i32 {
    let Some(route) = routed(ctx) else { return 1 };
    add(&FLOW_COUNTERS, flow_counter::SOURCE_ROUTED);
    let (generation, enforce) = match active_slot() {
        Some((_, m)) => (m.generation, m.mode == mode::ENFORCE),
        // No policy yet: nothing is refused.
        None => (0, false),
    };
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // One report per socket: a flood of source-routed packets must not fill the ring.
    if SROUTE_SEEN.get_ptr(&cookie).is_none() {
        let _ = SROUTE_SEEN.insert(&cookie, &1, 0);
        report(ctx, &route, cookie, generation, if enforce { verdict::DENY } else { verdict::ALERT });
    }
    if enforce {
        0
    } else {
        1
    }
}

/// The packet's first hop if it carries a source route: an IPv6 routing header (or a chain of
/// extension headers too long to see past: the kernel builds none for an unprivileged socket),
/// an IPv4 loose or strict source-route option.
#[inline(always)]
fn routed(ctx: &SkBuffContext) -> Option<Route> {
    // SAFETY: the kernel hands the program a valid __sk_buff.
    let skb = unsafe { &*ctx.skb.skb };
    let mut r = Route { family: 0, proto: 0, port: 0, addr: [0; 16] };
    let l4: u32;
    match u16::from_be(skb.protocol as u16) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).ok()?;
            let l3 = u32::from(vihl & 0x0f) * 4;
            if l3 <= 20 || !ipv4_route_option(ctx, l3) {
                return None;
            }
            let a: [u8; 4] = ctx.load(16).ok()?;
            r.addr[..4].copy_from_slice(&a);
            r.family = AF_INET;
            r.proto = ctx.load(9).ok()?;
            l4 = l3;
        }
        ETH_P_IPV6 => {
            r.addr = ctx.load(24).ok()?;
            r.family = AF_INET6;
            let mut next: u8 = ctx.load(6).ok()?;
            let mut at: u32 = 40;
            let mut found = false;
            let mut i = 0;
            while i < IPV6_EXT_MAX {
                match next {
                    IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                        found |= next == IPV6_ROUTING;
                        let h: [u8; 2] = ctx.load(at as usize).ok()?;
                        next = h[0];
                        at += (u32::from(h[1]) + 1) * 8;
                    }
                    IPV6_FRAGMENT => {
                        let h: [u8; 1] = ctx.load(at as usize).ok()?;
                        next = h[0];
                        at += 8;
                    }
                    _ => break,
                }
                i += 1;
            }
            found |= matches!(next, IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_FRAGMENT);
            if !found {
                return None;
            }
            r.proto = next;
            l4 = at;
        }
        _ => return None,
    }
    if matches!(r.proto as u32, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE) {
        // A later fragment has no ports: 0 then.
        r.port = ctx.load::<[u8; 4]>(l4 as usize).map_or(0, |p| u16::from_be_bytes([p[2], p[3]]));
    }
    Some(r)
}

/// Whether the IPv4 options between byte 20 and `l3` may hold a loose or strict source route:
/// any option byte that is one's type. Parsing the options properly would make the verifier
/// walk every way through them; this over-approximation costs only packets that carry options
/// at all (nearly none) whose data happens to hold such a byte, and it misses none. The header
/// length is a multiple of 4, so the options are read in 4-byte words at fixed offsets.
#[inline(always)]
fn ipv4_route_option(ctx: &SkBuffContext, l3: u32) -> bool {
    let mut found = false;
    let mut word = 0;
    while word < IPV4_OPTS_MAX / 4 {
        let at = 20 + 4 * word;
        if at as u32 >= l3 {
            break;
        }
        match ctx.load::<[u8; 4]>(at) {
            Ok(w) => {
                for b in w {
                    found |= b == IPOPT_LSRR || b == IPOPT_SSRR;
                }
            }
            // Options that cannot be read cannot be cleared.
            Err(_) => return true,
        }
        word += 1;
    }
    found
}

#[inline(always)]
fn report(ctx: &SkBuffContext, route: &Route, cookie: u64, generation: u32, v: u8) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    // The first packet of a connection or datagram leaves in its sender's system call: the
    // current task is the sender then.
    let proc = identity::current_proc();
    // SAFETY: the cgroup helper takes the program's own context.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    entry.write(Event {
        cookie,
        cgroup_id,
        daddr: route.addr,
        dport: route.port,
        family: route.family,
        proto: route.proto,
        hook: if route.family == AF_INET { hook::EGRESS4 } else { hook::EGRESS6 },
        ..identity::report_of(&proc, generation, v, event_flags2::SOURCE_ROUTED)
    });
    entry.submit(wakeup_flags());
}
