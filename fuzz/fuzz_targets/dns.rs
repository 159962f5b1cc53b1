//! The kernel's DNS programs (agent-ebpf/src/dns, built for the host) on a query and an answer.
//!
//! Input: two option bytes (see `host::Options::from_bytes`), the query's length (2 bytes, big
//! endian), the query, the answer. Besides not crashing, the programs must never learn an
//! address from an answer they should not trust: one with another transaction id than the
//! query, one that is not a response, one whose checksum is wrong; and they learn at most one
//! address per 15 bytes of answer (the smallest A record), only under the slot's pattern ids.
//! The records they write are then decoded as the agent decodes them.
#![no_main]

use agent_ebpf_host::host::{self, Csum, Options, DROP, PASS, PATTERNS};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [a, b, q0, q1, rest @ ..] = data else { return };
    let o = Options::from_bytes(*a, *b);
    let qlen = usize::from(u16::from_be_bytes([*q0, *q1])).min(rest.len());
    let (query, answer) = rest.split_at(qlen);
    let out = host::run(&o, query, answer);
    assert!(out.egress == PASS || out.egress == DROP);
    assert_eq!(out.ingress, PASS, "ingress never drops");
    if o.spoof {
        assert_eq!(
            out.spoof,
            Some(if o.enforce { DROP } else { PASS }),
            "a raw-socket answer is refused in enforce mode"
        );
    }
    if !out.learnt.is_empty() {
        assert_eq!(out.egress, PASS, "learnt from the answer to a refused query");
        assert_eq!(query.get(..2), answer.get(..2), "learnt from an answer with another transaction id");
        assert!(answer.get(2).is_some_and(|f| f & 0x80 != 0), "learnt from a message that is not a response");
        assert_ne!(o.csum, Csum::Wrong, "learnt from an answer with a bad checksum");
        assert!(out.learnt.len() * 15 <= answer.len(), "{} addresses from {} bytes", out.learnt.len(), answer.len());
        for (id, _) in &out.learnt {
            assert!(PATTERNS.iter().any(|p| p.2 == *id), "learnt under id {id}, which no pattern has");
        }
    }
    for rec in &out.events {
        agent::fuzzing::event(rec);
    }
});
