//! DNS in the kernel: cgroup_skb programs that make domain rules synchronous.
//!
//! - Egress (`dns_egress`): a query to port 53 is parsed, its name looked up in the slot's
//!   domain trie, and recorded as outstanding for its socket (cookie, transaction id, type) with
//!   the domain id it maps to; a query for a name no rule covers is refused under
//!   `dns.unlisted: deny` in enforce mode. A DNS answer sent from a raw socket in the watched
//!   cgroup (a forgery) is refused in enforce mode and reported.
//! - Ingress (`dns_ingress`): runs before the datagram (or segment) is queued to the socket, so
//!   the addresses of an answer are learnt before the application can read it: the first
//!   connect after a lookup never races the table. An answer is trusted only if it matches an
//!   outstanding query of that very socket (transaction id, type and the whole question name),
//!   comes from the address and port the query went to (or a configured resolver), and carries a
//!   valid checksum when the kernel has not verified it yet.
//!
//! The parsing steps are shared with the host (`agent_common::dns`) and run from `bpf_loop`.

use core::ffi::c_void;

use agent_common::{
    dns::{self as wire, status, Packet, Rr, CHUNK},
    dns_counter, dns_flags, dns_phase, domain_kind, mode, record, verdict, DnsEvent, DomainValue, LearntKeyV4,
    LearntKeyV6, LearntSlot, ResolverKey, SockPending, DNS_EVENT_ADDRS, DNS_EVENT_MSG, LEARNT_SLOTS, MAX_DOMAIN_IDS,
    MAX_TTL_S, PENDING_PER_SOCKET,
};
use aya_ebpf::{
    bindings::{__sk_buff, BPF_NOEXIST, BPF_SK_STORAGE_GET_F_CREATE},
    helpers::{
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_get_socket_uid,
            bpf_ktime_get_ns, bpf_loop, bpf_probe_read_kernel as bpf_probe_read_kernel_raw, bpf_sk_fullsock,
            bpf_sk_storage_get, bpf_skb_cgroup_id, bpf_skb_load_bytes,
        },
    },
    maps::lpm_trie::Key,
    programs::SkBuffContext,
};

use crate::{
    connect::active_slot,
    identity::current_proc,
    maps::{
        Scratch, CONFIG, DNS_COUNTERS, DNS_HEADERS, DNS_NEST, DNS_SCRATCH, DOMAINS_0, DOMAINS_1, EVENTS, LEARNT_V4,
        LEARNT_V6, RESOLVERS, SK_PENDING,
    },
    ring::{add, count_drop, wakeup_flags},
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP,
};

/// Return values of a cgroup_skb program.
const PASS: i32 = 1;
const DROP: i32 = 0;

const SOCK_RAW: u32 = 3;
/// `sk_buff.ip_summed` values.
const CHECKSUM_UNNECESSARY: u8 = 1;
const CHECKSUM_PARTIAL: u8 = 3;

/// Scratch slots of `DNS_SCRATCH`.
/// Scratch slots for egress runs nested on one CPU: a run in process context (sendmsg) can be
/// interrupted by a softirq that sends (a TCP ACK, a retransmission) and runs the egress program
/// too, on the same per-CPU memory. Each nesting level gets its own slot.
const EGRESS_SLOTS: u32 = 4;
/// Ingress runs in softirq context only, which does not nest: one slot, after the egress ones.
const INGRESS: u32 = EGRESS_SLOTS;

/// The packet of the running program.
#[derive(Clone, Copy)]
struct Skb(*mut __sk_buff);

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
    family: u8,
    proto: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    l4_off: u32,
    /// End of the transport segment (IP payload) in the packet.
    l4_end: u32,
    /// Start of the transport payload.
    payload: u32,
    /// The UDP checksum field (0: none, IPv4 only).
    udp_csum: u16,
}

/// Parses the headers into map memory (`DNS_HEADERS[idx]`) and hands out a reference to it: the
/// verifier does not track values in map memory, so every way through the parse (extension
/// headers, options) continues as one state instead of one per path, and the stack stays small.
#[inline(always)]
fn headers(skb: Skb, s: &mut Scratch, idx: u32) -> Option<&'static L4> {
    let l = parse_l4(skb, &mut s.st.tmp)?;
    let slot = DNS_HEADERS.get_ptr_mut(idx)?;
    // SAFETY: a live per-CPU map value, owned by this direction's program.
    unsafe {
        *slot = l;
        Some(&*slot)
    }
}

#[inline(always)]
fn parse_l4(skb: Skb, tmp: &mut [u8; CHUNK]) -> Option<L4> {
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

/// Where the DNS message is: after the UDP header, or after the 2-byte length of DNS over TCP,
/// and where the payload ends. A TCP segment is parsed only if it starts a message (see README
/// "DNS over TCP"); the message ends at its declared length or with the segment.
#[inline(always)]
fn message(skb: Skb, l: &L4, tmp: &mut [u8; CHUNK]) -> Option<(u32, u32)> {
    if u32::from(l.proto) == IPPROTO_UDP {
        return Some((l.payload, l.l4_end));
    }
    if l.payload + 2 + wire::HEADER_LEN > l.l4_end || !skb.load(l.payload, tmp, 2) {
        return None;
    }
    let declared = u32::from(u16::from_be_bytes([tmp[0], tmp[1]]));
    let start = l.payload + 2;
    let end = if start + declared < l.l4_end { start + declared } else { l.l4_end };
    Some((start, end))
}

/// What a `bpf_loop` step gets: the packet and the scratch. The scratch pointer is passed
/// (derived from the caller's reference) rather than looked up again, so the compiler knows the
/// loop may change it: a value it believed unchanged across `bpf_loop` would be read stale.
/// Where an outgoing query is: (start, end as declared) — the UDP payload, or for TCP the
/// message after its 2-byte length, whose declared end may lie past the segment (then it is not
/// one whole query). (0, 0) when a TCP segment is too short to start a message.
#[inline(always)]
fn query_bounds(skb: Skb, l: &L4, tmp: &mut [u8; CHUNK]) -> (u32, u32) {
    if u32::from(l.proto) == IPPROTO_UDP {
        return (l.payload, l.l4_end);
    }
    if l.payload + 2 + wire::HEADER_LEN > l.l4_end || !skb.load(l.payload, tmp, 2) {
        return (0, 0);
    }
    let start = l.payload + 2;
    (start, start + u32::from(u16::from_be_bytes([tmp[0], tmp[1]])))
}

#[repr(C)]
struct LoopCtx {
    skb: *mut __sk_buff,
    scratch: *mut Scratch,
}

unsafe extern "C" fn name_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer to the caller's LoopCtx.
    let lc = unsafe { &*(ctx as *const LoopCtx) };
    // SAFETY: the caller's live per-CPU map value.
    let s = unsafe { &mut *lc.scratch };
    i64::from(wire::name_step(&Skb(lc.skb), &mut s.st))
}

unsafe extern "C" fn rkey_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `name_cb`.
    let lc = unsafe { &*(ctx as *const LoopCtx) };
    // SAFETY: the caller's live per-CPU map value.
    i64::from(wire::rkey_step(unsafe { &mut (*lc.scratch).st }))
}

unsafe extern "C" fn csum_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `name_cb`.
    let lc = unsafe { &*(ctx as *const LoopCtx) };
    // SAFETY: the caller's live per-CPU map value.
    i64::from(wire::csum_step(&Skb(lc.skb), unsafe { &mut (*lc.scratch).st }))
}

unsafe extern "C" fn rr_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `name_cb`.
    let lc = unsafe { &*(ctx as *const LoopCtx) };
    // SAFETY: the caller's live per-CPU map value.
    let s = unsafe { &mut *lc.scratch };
    match wire::rr_step(&Skb(lc.skb), &mut s.st) {
        Rr::Continue => 0,
        Rr::Stop => 1,
        Rr::Addr { family, ttl } => {
            learn(s, family, ttl);
            0
        }
    }
}

/// Runs `cb` up to `steps` times over the scratch `s`.
#[inline(always)]
fn run_loop(skb: Skb, s: &mut Scratch, steps: u32, cb: unsafe extern "C" fn(u64, *mut c_void) -> i64) {
    let mut lc = LoopCtx { skb: skb.0, scratch: s as *mut Scratch };
    // SAFETY: the callback takes the context pointer bpf_loop passes back, which is `lc`.
    unsafe {
        bpf_loop(steps, cb as *mut c_void, &mut lc as *mut LoopCtx as *mut c_void, 0);
    }
}

/// Parses the question name at `off` into the scratch; its trie key too if `key`.
#[inline(always)]
fn read_question(skb: Skb, s: &mut Scratch, off: u32, end: u32, key: bool) -> Option<(u16, u16)> {
    s.st.start_name(off, end);
    // Zero-padded names compare as whole buffers, without a condition per byte.
    copy(&mut s.st.name[..], &s.zero_name[..]);
    run_loop(skb, s, wire::NAME_STEPS, name_cb);
    if s.st.cur.status != status::DONE {
        return None;
    }
    let after = s.st.cur.off;
    let q = wire::qtype_qclass(&skb, after, &mut s.st.tmp)?;
    if key {
        s.st.cur.rpos = 0;
        run_loop(skb, s, wire::NAME_STEPS, rkey_cb);
        if s.st.cur.status == status::BAD {
            return None;
        }
    }
    s.st.cur.off = after + 4;
    Some(q)
}

/// The domain id the parsed name maps to in `slot`, 0 if no rule covers it.
#[inline(always)]
fn domain_id(slot: u32, s: &Scratch) -> u32 {
    // SAFETY: `key_bits` and `rkey` are adjacent in a repr(C) struct and form the LPM key layout
    // `{ u32 prefixlen; u8 data[256]; }` (see ParseState).
    let key = unsafe { &*(&s.st.key_bits as *const u32 as *const Key<[u8; 256]>) };
    let value: Option<&DomainValue> = if slot == 0 { DOMAINS_0.get(key) } else { DOMAINS_1.get(key) };
    let Some(v) = value else { return 0 };
    match v.kind {
        domain_kind::EXACT => v.id,
        // The wildcard `*.S` matched; if the name is S itself, only enclosing wildcards apply.
        domain_kind::WILDCARD if v.key_len + 1 == s.st.cur.name_len => v.at_id,
        domain_kind::WILDCARD => v.id,
        _ => 0,
    }
}

/// The outstanding queries of the packet's socket, created on first use if `create`.
#[inline(always)]
fn sock_pending(skb: Skb, create: bool) -> Option<*mut SockPending> {
    // SAFETY: the context field `sk` is readable by cgroup_skb programs; fullsock checks it, and
    // the storage helper takes a full socket and the map.
    unsafe {
        let sk = (*skb.0).__bindgen_anon_2.sk;
        if sk.is_null() {
            return None;
        }
        let full = bpf_sk_fullsock(sk);
        if full.is_null() {
            return None;
        }
        let flags = if create { u64::from(BPF_SK_STORAGE_GET_F_CREATE) } else { 0 };
        let map = &SK_PENDING as *const _ as *mut c_void;
        let p = bpf_sk_storage_get(map, full as *mut c_void, core::ptr::null_mut(), flags) as *mut SockPending;
        if p.is_null() {
            None
        } else {
            Some(p)
        }
    }
}

#[inline(always)]
fn is_raw_socket(skb: Skb) -> bool {
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
        if let Some(sp) = sock_pending(skb, true) {
            // SAFETY: the socket's live storage.
            let sp = unsafe { &mut *sp };
            // A retry of the same query takes its slot; else a free one; else the oldest.
            let mut at = PENDING_PER_SOCKET;
            for i in 0..PENDING_PER_SOCKET {
                let q = &sp.q[i];
                if at == PENDING_PER_SOCKET && q.used != 0 && q.txid == txid && q.qtype == qtype {
                    at = i;
                }
            }
            for i in 0..PENDING_PER_SOCKET {
                if at == PENDING_PER_SOCKET && sp.q[i].used == 0 {
                    at = i;
                }
            }
            if at == PENDING_PER_SOCKET {
                at = sp.next as usize;
                sp.next = sp.next.wrapping_add(1);
            }
            copy(&mut sp.q[at & (PENDING_PER_SOCKET - 1)], &s.pending);
        }
    }
    if verdict != verdict::ALLOW {
        let flags = if parsed { 0 } else { dns_flags::MALFORMED };
        if let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) {
            let e = entry.as_mut_ptr();
            // SAFETY: a reserved record of the right size; `fill` writes every field.
            unsafe {
                fill(&mut *e, dns_phase::QUERY, flags, verdict, l, l.daddr, l.dport, cookie, s);
                (*e).pid = (proc.pid_tgid >> 32) as u32;
                (*e).tid = proc.pid_tgid as u32;
                (*e).uid = proc.uid_gid as u32;
                (*e).gid = (proc.uid_gid >> 32) as u32;
                (*e).exe_dev = proc.exe_dev;
                (*e).exe_ino = proc.exe_ino;
                (*e).start_ns = proc.start_ns;
                (*e).cgroup_id = cgroup_id;
                (*e).comm = proc.comm;
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
            (*e).pid = (proc.pid_tgid >> 32) as u32;
            (*e).tid = proc.pid_tgid as u32;
            (*e).uid = proc.uid_gid as u32;
            (*e).gid = (proc.uid_gid >> 32) as u32;
            (*e).exe_dev = proc.exe_dev;
            (*e).exe_ino = proc.exe_ino;
            (*e).start_ns = proc.start_ns;
            (*e).cgroup_id = bpf_get_current_cgroup_id();
            (*e).comm = proc.comm;
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
    let Some((msg, end)) = message(skb, l, &mut s.st.tmp) else { return PASS };
    let Some(h) = wire::header(&skb, msg, &mut s.st.tmp) else { return PASS };
    if h.flags & wire::FLAG_QR == 0 || h.qdcount != 1 {
        return PASS;
    }
    // SAFETY: plain helper with the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(skb.0 as *mut c_void) };
    let Some((qtype, _)) = read_question(skb, s, msg + wire::HEADER_LEN, end, false) else {
        // Not a message this parser reads (or a TCP continuation): nothing learnt.
        add(&DNS_COUNTERS, dns_counter::ANSWER_REJECTED);
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
    if let Some(sp) = sock_pending(skb, false) {
        // SAFETY: the socket's live storage; `pending_slot` was checked by `judge`.
        unsafe { (*sp).q[(s.pending_slot as usize) & (PENDING_PER_SOCKET - 1)].used = 0 };
    }
    s.n_addrs = 0;
    s.ttl_min = u32::MAX;
    s.flags = 0;
    s.domain_id = s.pending.domain_id;
    s.grace_s = grace_s;
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
        let (_, declared_end) = query_bounds(skb, l, &mut s.st.tmp);
        match s.st.cur.status {
            status::DONE => {}
            status::BAD if declared_end > l.l4_end => s.flags |= dns_flags::PARSE_LIMIT,
            status::BAD => s.flags |= dns_flags::MALFORMED,
            _ => s.flags |= dns_flags::PARSE_LIMIT,
        }
        if s.flags & dns_flags::PARSE_LIMIT != 0 {
            add(&DNS_COUNTERS, dns_counter::PARSE_LIMIT);
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

/// 0 if the answer is to be trusted (and then `s.pending` is its query), else the `dns_flags`
/// bit that says why not.
#[inline(always)]
fn judge(skb: Skb, s: &mut Scratch, l: &L4, txid: u16, qtype: u16, slot: u32, resolvers_only: bool) -> u16 {
    s.pending.name_len = 0;
    let Some(sp) = sock_pending(skb, false) else { return dns_flags::NO_QUERY };
    // SAFETY: the socket's live storage.
    let sp = unsafe { &*sp };
    let mut at = PENDING_PER_SOCKET;
    for i in 0..PENDING_PER_SOCKET {
        let q = &sp.q[i];
        if at == PENDING_PER_SOCKET && q.used != 0 && q.txid == txid && q.qtype == qtype {
            at = i;
        }
    }
    if at == PENDING_PER_SOCKET {
        return dns_flags::NO_QUERY;
    }
    s.pending_slot = at as u32;
    // Copied: the slot is freed once the answer is trusted.
    copy(&mut s.pending, &sp.q[at & (PENDING_PER_SOCKET - 1)]);
    let p = &s.pending;
    // The whole question, not a hash of it: both names are lowercase and zero-padded. Compared
    // a word at a time, branch-free, so the verifier walks it as one straight line.
    let mut diff = u64::from(p.name_len != s.st.cur.name_len);
    let (a, b) = (p.name.as_ptr() as *const u64, s.st.name.as_ptr() as *const u64);
    let mut i = 0;
    while i < wire::NAME_BUF / 8 {
        // SAFETY: both arrays are 8-aligned (at offset 104 of 8-aligned structs) and 256 long.
        diff |= unsafe { a.add(i).read() ^ b.add(i).read() };
        i += 1;
    }
    if diff != 0 {
        return dns_flags::WRONG_QUESTION;
    }
    let trusted_source = if resolvers_only {
        let k = ResolverKey { slot, family: u32::from(l.family), addr: l.saddr };
        RESOLVERS.get_ptr(&k).is_some()
    } else {
        p.family == l.family && p.server == l.saddr && p.server_port == l.sport
    };
    if !trusted_source {
        return dns_flags::WRONG_SOURCE;
    }
    if !checksum_ok(skb, s, l) {
        return dns_flags::BAD_CHECKSUM;
    }
    0
}

/// Whether the datagram's checksum holds, or the kernel has verified it already. UDP and TCP
/// verify checksums lazily, after this program ran, so a datagram with a bad one is parsed here
/// and then dropped before the application sees it: without this check it could teach
/// addresses no application ever received.
#[inline(always)]
fn checksum_ok(skb: Skb, s: &mut Scratch, l: &L4) -> bool {
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

/// An answer that is not trusted: reported, nothing learnt.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn reject(skb: Skb, s: &mut Scratch, l: &L4, cookie: u64, msg: u32, end: u32, flag: u16, qtype: u16) -> i32 {
    add(&DNS_COUNTERS, dns_counter::ANSWER_REJECTED);
    let known = s.pending.name_len != 0;
    if let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) {
        let e = entry.as_mut_ptr();
        // SAFETY: a reserved record of the right size; `fill` writes every field.
        unsafe {
            fill(&mut *e, dns_phase::REJECTED, flag, verdict::ALERT, l, l.saddr, l.sport, cookie, s);
            if known {
                identity_from_pending(&mut *e, s);
            } else {
                // Softirq context: the current task is not the socket's owner; say what the
                // socket says.
                (*e).uid = bpf_get_socket_uid(skb.0);
                (*e).cgroup_id = bpf_skb_cgroup_id(skb.0);
            }
            (*e).qtype = qtype;
            copy_msg(skb, &mut *e, msg, end);
        }
        entry.submit(wakeup_flags());
    } else {
        count_drop();
    }
    PASS
}

/// Writes every field of a DNS event; identity fields are zero until the caller sets them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill(
    e: &mut DnsEvent,
    phase: u8,
    flags: u16,
    verdict: u8,
    l: &L4,
    server: [u8; 16],
    port: u16,
    cookie: u64,
    s: &Scratch,
) {
    e.kind = record::DNS;
    e.pid = 0;
    e.tid = 0;
    e.uid = 0;
    e.gid = 0;
    e.exe_dev = 0;
    e.generation = 0;
    e.domain_id = 0;
    // SAFETY: plain helper.
    e.ts_ns = unsafe { bpf_ktime_get_ns() };
    e.cookie = cookie;
    e.cgroup_id = 0;
    e.exe_ino = 0;
    e.start_ns = 0;
    e.server = server;
    e.comm = [0; 16];
    e.qtype = 0;
    e.server_port = port;
    e.family = l.family;
    e.proto = l.proto;
    e.verdict = verdict;
    e.phase = phase;
    e.rcode = 0;
    e._pad = 0;
    e.flags = flags;
    e.n_addrs = 0;
    e.ttl_min = 0;
    e.msg_len = 0;
    e.name_len = s.st.cur.name_len;
    e.addr_family = [0; DNS_EVENT_ADDRS];
    copy(&mut e.addrs, &s.zero_addrs);
    copy(&mut e.name[..], &s.st.name[..wire::NAME_BUF]);
    e._pad2 = 0;
}

#[inline(always)]
fn identity_from_pending(e: &mut DnsEvent, s: &Scratch) {
    let p = &s.pending;
    e.pid = p.pid;
    e.tid = p.tid;
    e.uid = p.uid;
    e.gid = p.gid;
    e.exe_dev = p.exe_dev;
    e.exe_ino = p.exe_ino;
    e.start_ns = p.start_ns;
    e.cgroup_id = p.cgroup_id;
    e.comm = p.comm;
    e.generation = p.generation;
    e.domain_id = p.domain_id;
    e.name_len = p.name_len;
}

/// Copies `src` over `dst` with one helper call. The compiler turns a large struct or array copy
/// into a call to a byte-by-byte `memcpy`, whose loop the verifier walks byte by byte on every
/// path; `bpf_probe_read_kernel` copies between kernel (map, ring buffer) memory at no
/// verification cost.
#[inline(always)]
fn copy<T: ?Sized>(dst: &mut T, src: &T) {
    let n = core::mem::size_of_val(src) as u32;
    // SAFETY: both are valid for `n` bytes (same type and size); the helper checks `src`.
    unsafe {
        bpf_probe_read_kernel_raw(dst as *mut T as *mut c_void, n, src as *const T as *const c_void);
    }
}

/// Copies the start of the message into the event for userspace to decode.
#[inline(always)]
fn copy_msg(skb: Skb, e: &mut DnsEvent, msg: u32, end: u32) {
    let len = end.saturating_sub(msg);
    e.msg_len = len;
    let n = if len > DNS_EVENT_MSG as u32 { DNS_EVENT_MSG as u32 } else { len };
    if len > DNS_EVENT_MSG as u32 {
        e.flags |= dns_flags::MSG_CUT;
    }
    if n == 0 {
        return;
    }
    // Spelled so the verifier sees 1..=512 (it loses `n != 0` through the compiler's rewrites).
    let n = (core::hint::black_box(n).wrapping_sub(1) & (DNS_EVENT_MSG as u32 - 1)) + 1;
    // SAFETY: `n` is between 1 and the size of `msg`; the helper checks the packet range and
    // zero-fills the destination on failure.
    let rc = unsafe { bpf_skb_load_bytes(skb.0 as *const c_void, msg, e.msg.as_mut_ptr() as *mut c_void, n) };
    if rc != 0 {
        e.msg_len = 0;
    }
}

/// Records that the address in `s.st.tmp` answers for the scratch's domain id until TTL + grace.
#[inline(always)]
fn learn(s: &mut Scratch, family: u8, ttl: u32) {
    let ttl = if ttl > MAX_TTL_S { MAX_TTL_S } else { ttl };
    let expires = s.now_ns + (u64::from(ttl) + u64::from(s.grace_s)) * 1_000_000_000;
    let id = s.domain_id;
    if id == 0 || id >= MAX_DOMAIN_IDS {
        return;
    }
    // The keys live in the scratch: the stack of this callback frame is nearly full.
    s.k4 = LearntKeyV4 { netns: s.netns, addr: [0; 4], _pad: 0 };
    s.k6 = LearntKeyV6 { netns: s.netns, addr: [0; 16] };
    s.k6.addr.copy_from_slice(&s.st.tmp[..16]);
    let a = &s.k6.addr;
    // An IPv4-mapped AAAA is IPv4 on the wire, and connect matches it as such.
    let mapped = family == AF_INET6 && a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff;
    let v4 = family == AF_INET || mapped;
    if family == AF_INET {
        s.k4.addr.copy_from_slice(&s.st.tmp[..4]);
    } else if mapped {
        s.k4.addr.copy_from_slice(&s.st.tmp[12..16]);
    }
    let (k4, k6) = (&s.k4 as *const LearntKeyV4, &s.k6 as *const LearntKeyV6);
    // SAFETY: both point into the live scratch, which outlives this function.
    let (k4, k6) = unsafe { (&*k4, &*k6) };
    let existing = if v4 { LEARNT_V4.get_ptr_mut(k4) } else { LEARNT_V6.get_ptr_mut(k6) };
    let ok = match existing {
        // SAFETY: a live map value.
        Some(v) => {
            update_slots(unsafe { &mut *v }, id, expires, s);
            true
        }
        None => {
            copy(&mut s.new_learnt.slots, &s.zero_slots);
            s.new_learnt.slots[0] = LearntSlot { domain_id: id, _pad: 0, expires_ns: expires };
            let rc = if v4 {
                LEARNT_V4.insert(k4, &s.new_learnt, u64::from(BPF_NOEXIST))
            } else {
                LEARNT_V6.insert(k6, &s.new_learnt, u64::from(BPF_NOEXIST))
            };
            match rc {
                Ok(()) => {
                    add(&DNS_COUNTERS, dns_counter::LEARNT_NEW);
                    true
                }
                Err(_) => {
                    // Another CPU inserted it meanwhile (update that), or the table is full.
                    let again = if v4 { LEARNT_V4.get_ptr_mut(k4) } else { LEARNT_V6.get_ptr_mut(k6) };
                    match again {
                        // SAFETY: a live map value.
                        Some(v) => {
                            update_slots(unsafe { &mut *v }, id, expires, s);
                            true
                        }
                        None => false,
                    }
                }
            }
        }
    };
    if !ok {
        s.flags |= dns_flags::LEARN_FULL;
        add(&DNS_COUNTERS, dns_counter::LEARN_FULL);
        return;
    }
    add(&DNS_COUNTERS, dns_counter::LEARNT);
    let n = s.n_addrs;
    if (n as usize) < DNS_EVENT_ADDRS {
        let i = (n as usize) & (DNS_EVENT_ADDRS - 1);
        s.addrs[i] = s.k6.addr;
        s.addr_family[i] = family;
    }
    s.n_addrs = n + 1;
    if ttl < s.ttl_min {
        s.ttl_min = ttl;
    }
}

#[inline(always)]
fn update_slots(v: &mut agent_common::Learnt, id: u32, expires: u64, s: &mut Scratch) {
    let now = s.now_ns;
    for i in 0..LEARNT_SLOTS {
        if v.slots[i].domain_id == id {
            if v.slots[i].expires_ns < expires {
                v.slots[i].expires_ns = expires;
            }
            return;
        }
    }
    for i in 0..LEARNT_SLOTS {
        if v.slots[i].domain_id == 0 || v.slots[i].expires_ns <= now {
            v.slots[i] = LearntSlot { domain_id: id, _pad: 0, expires_ns: expires };
            return;
        }
    }
    let mut k = 0usize;
    for i in 1..LEARNT_SLOTS {
        if v.slots[i].expires_ns < v.slots[k & (LEARNT_SLOTS - 1)].expires_ns {
            k = i;
        }
    }
    v.slots[k & (LEARNT_SLOTS - 1)] = LearntSlot { domain_id: id, _pad: 0, expires_ns: expires };
    s.flags |= dns_flags::SLOT_EVICTED;
    add(&DNS_COUNTERS, dns_counter::SLOT_EVICTED);
}
