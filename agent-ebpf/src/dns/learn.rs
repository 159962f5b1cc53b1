//! Learning an answer's addresses: (network namespace, address) -> pattern ids with expiries.

use agent_common::{
    dns_counter, dns_flags, Learnt, LearntKeyV4, LearntKeyV6, LearntSlot, Nat64Key, DNS_EVENT_ADDRS, LEARNT_SLOTS,
    MAX_DOMAIN_IDS, MAX_TTL_S, NAT64_WELL_KNOWN,
};
use aya_ebpf::bindings::BPF_NOEXIST;

use super::report::copy;
use crate::{
    maps::{Scratch, DNS_COUNTERS, LEARNT_V4, LEARNT_V6, NAT64_PREFIXES},
    ring::add,
    AF_INET, AF_INET6,
};

/// Records that the address in `s.st.tmp` answers for the scratch's domain id until TTL + grace.
#[inline(always)]
pub(super) fn learn(s: &mut Scratch, family: u8, ttl: u32) {
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
    // An IPv4-mapped AAAA is IPv4 on the wire, and connect matches it as such; so is a DNS64
    // answer under a NAT64 prefix (the well-known one, or one the policy lists), which connect
    // decides as the IPv4 address it embeds.
    let mapped = family == AF_INET6 && a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff;
    let nat64 = family == AF_INET6 && !mapped && (a[..12] == NAT64_WELL_KNOWN || listed_nat64(s));
    let v4 = family == AF_INET || mapped || nat64;
    if family == AF_INET {
        s.k4.addr.copy_from_slice(&s.st.tmp[..4]);
    } else if v4 {
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

/// Whether the slot in force lists the /96 prefix of the address in `s.k6` (`nat64Prefixes`).
#[inline(always)]
fn listed_nat64(s: &mut Scratch) -> bool {
    s.k64.slot = s.slot;
    s.k64.prefix.copy_from_slice(&s.k6.addr[..12]);
    let k = &s.k64 as *const Nat64Key;
    // SAFETY: points into the live scratch, which outlives this function.
    NAT64_PREFIXES.get_ptr(unsafe { &*k }).is_some()
}

#[inline(always)]
pub(super) fn update_slots(v: &mut Learnt, id: u32, expires: u64, s: &mut Scratch) {
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
