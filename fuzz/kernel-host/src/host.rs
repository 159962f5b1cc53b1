//! Runs the kernel's DNS programs on the host: a query leaves a client socket (`dns::egress`),
//! an answer arrives for it (`dns::ingress`), each wrapped in the IP and UDP or TCP headers a
//! cgroup_skb program sees, with the maps set up as the agent sets them (one policy slot, a few
//! domain patterns, the resolver). Returns what the programs decided, reported and learnt.

use agent_common::{domain_kind, mode, verdict, DomainValue, ResolverKey, SlotMeta};
use aya_ebpf::{
    bindings::{__sk_buff, __sk_buff__bindgen_ty_2, bpf_sock},
    maps::lpm_trie::Key,
    programs::SkBuffContext,
};

use crate::maps::{
    ACTIVE_SLOT, CONFIG, DNS_COUNTERS, DNS_HEADERS, DNS_NEST, DNS_SCRATCH, DOMAINS_0, DOMAINS_1, EVENTS,
    EVENTS_DROPPED, LEARNT_V4, LEARNT_V6, RESOLVERS, SK_PENDING, SLOT_META,
};

/// How the packets' checksums look to the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// The kernel verified it already (`CHECKSUM_UNNECESSARY`): the program trusts it.
    Verified,
    /// Correct; the program sums it.
    Correct,
    /// The field is 0 (IPv4 UDP: no checksum).
    Zero,
    /// Wrong: an answer carrying it must teach nothing.
    Wrong,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub v6: bool,
    pub tcp: bool,
    pub csum: Csum,
    pub enforce: bool,
    /// `dns.unlisted: deny` (else alert).
    pub unlisted_deny: bool,
    /// Answers trusted only from `RESOLVERS`.
    pub resolvers_only: bool,
    /// Also send the answer from a raw socket of the watched cgroup (a forgery, refused on egress).
    pub spoof: bool,
    /// The query leaves as a GSO packet.
    pub gso: bool,
    /// An IPv6 hop-by-hop options header before the transport header.
    pub hop_by_hop: bool,
    /// TCP: the length prefix claims this many bytes more than the segment holds.
    pub tcp_len_extra: u16,
}

impl Options {
    /// Options from two bytes of fuzz input.
    pub fn from_bytes(a: u8, b: u8) -> Self {
        Options {
            v6: a & 1 != 0,
            tcp: a & 2 != 0,
            csum: [Csum::Verified, Csum::Correct, Csum::Zero, Csum::Wrong][usize::from((a >> 2) & 3)],
            enforce: a & 16 != 0,
            unlisted_deny: a & 32 != 0,
            resolvers_only: a & 64 != 0,
            spoof: a & 128 != 0,
            gso: b & 1 != 0,
            hop_by_hop: b & 2 != 0,
            tcp_len_extra: if b & 4 != 0 { u16::from(b >> 3) } else { 0 },
        }
    }
}

pub const PASS: i32 = 1;
pub const DROP: i32 = 0;

#[derive(Debug)]
pub struct Outcome {
    /// The query's verdict on the way out (1 pass, 0 drop).
    pub egress: i32,
    pub ingress: i32,
    /// The spoofed answer's verdict, if one was sent.
    pub spoof: Option<i32>,
    /// Ring records, in order.
    pub events: Vec<Vec<u8>>,
    /// (domain id, address bytes) of every address learnt.
    pub learnt: Vec<(u32, Vec<u8>)>,
}

/// Domain patterns the slot holds: (name, wildcard, id).
pub const PATTERNS: [(&str, bool, u32); 3] =
    [("api.example.test", false, 1), ("example.test", true, 2), ("cdn.test", true, 3)];

const CLIENT4: [u8; 4] = [10, 0, 0, 2];
const RESOLVER4: [u8; 4] = [10, 0, 0, 53];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const RESOLVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53];
const CLIENT_PORT: u16 = 40_000;

/// Labels in reverse order, each as a length byte and its bytes (`DomainValue`'s key).
fn rkey_labels(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').rev() {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out
}

fn reset() {
    DNS_NEST.clear();
    DNS_SCRATCH.clear();
    DNS_HEADERS.clear();
    DNS_COUNTERS.clear();
    EVENTS_DROPPED.clear();
    CONFIG.clear();
    ACTIVE_SLOT.clear();
    SLOT_META.clear();
    DOMAINS_0.clear();
    DOMAINS_1.clear();
    RESOLVERS.clear();
    SK_PENDING.clear();
    LEARNT_V4.clear();
    LEARNT_V6.clear();
    let _ = EVENTS.take();
}

fn setup(o: &Options) {
    reset();
    if let Some(c) = CONFIG.get_ptr_mut(0) {
        // SAFETY: a live map value. The program reads `ip_summed` at this bit of the skb.
        unsafe { (*c).offsets.skb_ip_summed_bit = 8 * core::mem::offset_of!(__sk_buff, ip_summed) as u32 };
    }
    if let Some(m) = SLOT_META.get_ptr_mut(0) {
        // SAFETY: a live map value.
        unsafe {
            *m = SlotMeta {
                generation: 1,
                mode: if o.enforce { mode::ENFORCE } else { mode::MONITOR },
                default_verdict: verdict::DENY,
                unlisted_verdict: if o.unlisted_deny { verdict::DENY } else { verdict::ALERT },
                resolvers_only: u8::from(o.resolvers_only),
                dns_grace_s: 30,
                _pad: 0,
            }
        };
    }
    for (name, wildcard, id) in PATTERNS {
        let mut k = rkey_labels(name);
        if !wildcard {
            k.push(0);
        }
        let mut data = [0u8; 256];
        data[..k.len()].copy_from_slice(&k);
        let v = DomainValue {
            key_len: k.len() as u32,
            kind: if wildcard { domain_kind::WILDCARD } else { domain_kind::EXACT },
            id,
            at_id: 0,
        };
        let _ = DOMAINS_0.insert(Key::new(8 * k.len() as u32, data), v, 0);
    }
    let (family, resolver) = if o.v6 { (10, RESOLVER6) } else { (2, pad16(&RESOLVER4)) };
    let _ = RESOLVERS.insert(ResolverKey { slot: 0, family, addr: resolver }, 1u8, 0);
}

fn pad16(a: &[u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(a);
    out
}

fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn sum_bytes(b: &[u8]) -> u64 {
    b.chunks(2).map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

/// An IP packet from `src`:`sport` to `dst`:`dport` carrying `msg` over UDP, or over TCP after
/// its 2-byte length.
fn packet(o: &Options, from_client: bool, msg: &[u8]) -> Vec<u8> {
    let (sport, dport) = if from_client { (CLIENT_PORT, 53) } else { (53, CLIENT_PORT) };
    let mut l4 = Vec::with_capacity(msg.len() + 22);
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    let csum_at;
    if o.tcp {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 5 << 4, 0x18, 0xff, 0xff]);
        csum_at = l4.len();
        l4.extend_from_slice(&[0, 0, 0, 0]);
        let n = (msg.len() as u16).wrapping_add(o.tcp_len_extra);
        l4.extend_from_slice(&n.to_be_bytes());
    } else {
        l4.extend_from_slice(&((8 + msg.len()) as u16).to_be_bytes());
        csum_at = l4.len();
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(msg);
    let proto: u8 = if o.tcp { 6 } else { 17 };
    let (src, dst): (&[u8], &[u8]) = match (o.v6, from_client) {
        (false, true) => (&CLIENT4, &RESOLVER4),
        (false, false) => (&RESOLVER4, &CLIENT4),
        (true, true) => (&CLIENT6, &RESOLVER6),
        (true, false) => (&RESOLVER6, &CLIENT6),
    };
    let pseudo = sum_bytes(src) + sum_bytes(dst) + u64::from(proto) + l4.len() as u64;
    let good = !fold(pseudo + sum_bytes(&l4));
    let csum = match o.csum {
        Csum::Verified | Csum::Correct if !o.tcp && good == 0 => 0xffff,
        Csum::Verified | Csum::Correct => good,
        Csum::Zero => 0,
        Csum::Wrong => good ^ 0x0101,
    };
    l4[csum_at..csum_at + 2].copy_from_slice(&csum.to_be_bytes());
    let mut p = Vec::with_capacity(l4.len() + 48);
    if o.v6 {
        let ext: &[u8] = if o.hop_by_hop { &[proto, 0, 1, 4, 0, 0, 0, 0] } else { &[] };
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[if o.hop_by_hop { 0 } else { proto }, 64]);
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
        p.extend_from_slice(ext);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
    }
    p.extend_from_slice(&l4);
    p
}

/// One program run on `pkt` from socket `sk`.
fn skb(pkt: &[u8], sk: &mut bpf_sock, o: &Options, gso: bool) -> __sk_buff {
    __sk_buff {
        len: pkt.len() as u32,
        gso_segs: if gso { 2 } else { 1 },
        gso_size: if gso { 1200 } else { 0 },
        // 1: CHECKSUM_UNNECESSARY; 0: CHECKSUM_NONE, the program sums it.
        ip_summed: u8::from(o.csum == Csum::Verified),
        __bindgen_anon_2: __sk_buff__bindgen_ty_2 { sk: sk as *mut bpf_sock },
        data: pkt.as_ptr(),
        cookie: 77,
        netns: 4_026_531_840,
        uid: 65534,
        cgroup_id: 4242,
    }
}

/// Sends `query` from the client socket and then `answer` to it (and, with `spoof`, `answer`
/// from a raw socket first).
pub fn run(o: &Options, query: &[u8], answer: &[u8]) -> Outcome {
    // The maps are process-wide and unsynchronised (see the shim): one run at a time, also when
    // the test harness runs tests on several threads.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(o);
    // SOCK_STREAM / SOCK_DGRAM / SOCK_RAW.
    let mut client = Box::new(bpf_sock { type_: if o.tcp { 1 } else { 2 } });
    let mut raw = Box::new(bpf_sock { type_: 3 });
    let spoof = o.spoof.then(|| {
        let pkt = packet(o, false, answer);
        let mut s = skb(&pkt, &mut raw, o, false);
        crate::dns::egress(&SkBuffContext::new(&mut s))
    });
    let q = packet(o, true, query);
    let mut s = skb(&q, &mut client, o, o.gso);
    let egress = crate::dns::egress(&SkBuffContext::new(&mut s));
    let a = packet(o, false, answer);
    let mut s = skb(&a, &mut client, o, false);
    let ingress = crate::dns::ingress(&SkBuffContext::new(&mut s));
    let mut learnt = Vec::new();
    for (k, v) in LEARNT_V4.entries() {
        learnt.extend(v.slots.iter().filter(|s| s.domain_id != 0).map(|s| (s.domain_id, k.clone())));
    }
    for (k, v) in LEARNT_V6.entries() {
        learnt.extend(v.slots.iter().filter(|s| s.domain_id != 0).map(|s| (s.domain_id, k.clone())));
    }
    Outcome { egress, ingress, spoof, events: EVENTS.take(), learnt }
}

/// DNS messages for tests and seeds: a query for `name` (type A) with id `id`, and its answer
/// with one A record per address (owner: a compression pointer to the question).
pub fn query_and_answer(id: u16, name: &str, addrs: &[[u8; 4]]) -> (Vec<u8>, Vec<u8>) {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut a = q.clone();
    a[2] = 0x81;
    a[3] = 0x80;
    a[7] = addrs.len() as u8;
    for addr in addrs {
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        a.extend_from_slice(addr);
    }
    (q, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v6: bool, tcp: bool, csum: Csum) -> Options {
        Options {
            v6,
            tcp,
            csum,
            enforce: true,
            unlisted_deny: true,
            resolvers_only: false,
            spoof: false,
            gso: false,
            hop_by_hop: v6,
            tcp_len_extra: 0,
        }
    }

    #[test]
    fn an_answer_to_the_sockets_own_query_is_learnt_over_every_transport() {
        let (q, a) = query_and_answer(0x1234, "API.example.test", &[[192, 0, 2, 7], [192, 0, 2, 8]]);
        for v6 in [false, true] {
            for tcp in [false, true] {
                for csum in [Csum::Verified, Csum::Correct] {
                    let out = run(&opts(v6, tcp, csum), &q, &a);
                    assert_eq!((out.egress, out.ingress), (PASS, PASS), "{v6} {tcp} {csum:?}");
                    assert_eq!(out.learnt.len(), 2, "{v6} {tcp} {csum:?}: {out:?}");
                    assert!(out.learnt.iter().all(|(id, _)| *id == 1));
                    assert_eq!(out.events.len(), 1, "the answer event");
                }
                let out = run(&opts(v6, tcp, Csum::Wrong), &q, &a);
                assert!(out.learnt.is_empty(), "bad checksum: {out:?}");
            }
        }
    }

    #[test]
    fn unlisted_names_are_refused_and_other_ids_teach_nothing() {
        let (q, a) = query_and_answer(9, "other.test", &[[192, 0, 2, 9]]);
        let out = run(&opts(false, false, Csum::Verified), &q, &a);
        assert_eq!(out.egress, DROP);
        assert!(out.learnt.is_empty());
        let (q, _) = query_and_answer(9, "www.example.test", &[]);
        let (_, a) = query_and_answer(10, "www.example.test", &[[192, 0, 2, 9]]);
        let out = run(&opts(false, false, Csum::Verified), &q, &a);
        assert_eq!(out.egress, PASS);
        assert!(out.learnt.is_empty(), "another transaction id");
    }
}
