//! The kernel's DNS parsing steps (`agent_common::dns`) run on the host, in a plain loop as
//! `bpf_loop` runs them, against messages built and read by hickory-proto: unit tests, and
//! property tests over arbitrary bytes (the fuzzing of the kernel parser's logic).

use agent_common::dns::{self as wire, status, Packet, ParseState, Rr, CHUNK};
use hickory_proto::{
    op::{Message, Query},
    rr::{rdata, Name, RData, Record, RecordType},
};
use proptest::prelude::*;

struct Bytes<'a>(&'a [u8]);

impl Packet for Bytes<'_> {
    fn load(&self, off: u32, dst: &mut [u8; CHUNK], len: u32) -> bool {
        let (off, len) = (off as usize, (len as usize).min(CHUNK));
        match self.0.get(off..off + len) {
            Some(src) => {
                dst[..len].copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// What the kernel reads of a message: the question (wire name, type), the trie key, and the
/// address records of the answer section.
#[derive(Debug, PartialEq)]
struct Parsed {
    name: Vec<u8>,
    qtype: u16,
    rkey: Vec<u8>,
    addrs: Vec<(u8, [u8; 16], u32)>,
    status: u32,
}

fn parse(msg: &[u8]) -> Option<Parsed> {
    let p = Bytes(msg);
    let mut st = Box::new(ParseState::zeroed());
    let h = wire::header(&p, 0, &mut st.tmp)?;
    let end = msg.len() as u32;
    st.start_name(wire::HEADER_LEN, end);
    for _ in 0..wire::NAME_STEPS {
        if wire::name_step(&p, &mut st) {
            break;
        }
    }
    if st.cur.status != status::DONE {
        return None;
    }
    let after = st.cur.off;
    let (qtype, _) = wire::qtype_qclass(&p, after, &mut st.tmp)?;
    st.cur.rpos = 0;
    for _ in 0..wire::NAME_STEPS {
        if wire::rkey_step(&mut st) {
            break;
        }
    }
    if st.cur.status == status::BAD {
        return None;
    }
    let name = st.name[..st.cur.name_len as usize].to_vec();
    let rkey = st.rkey[..(st.key_bits / 8) as usize].to_vec();
    st.cur = wire::Cursor { off: after + 4, end, left: u32::from(h.ancount), in_name: 1, ..Default::default() };
    let mut addrs = Vec::new();
    for _ in 0..wire::RR_STEPS {
        match wire::rr_step(&p, &mut st) {
            Rr::Continue => {}
            Rr::Stop => break,
            Rr::Addr { family, ttl } => {
                let mut addr = [0u8; 16];
                let n = if family == 2 { 4 } else { 16 };
                addr[..n].copy_from_slice(&st.tmp[..n]);
                addrs.push((family, addr, ttl));
            }
        }
    }
    Some(Parsed { name, qtype, rkey, addrs, status: st.cur.status })
}

fn answer(qname: &str, qtype: RecordType, records: Vec<Record>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 7;
    let name = Name::from_ascii(qname).expect("name");
    m.add_query(Query::query(name, qtype));
    m.answers = records;
    m.to_vec().expect("encodes")
}

#[test]
fn reads_question_key_and_addresses_like_hickory() {
    let owner = Name::from_ascii("real.api.example.test.").expect("name");
    let recs = vec![
        Record::from_rdata(
            Name::from_ascii("API.Example.test.").expect("name"),
            60,
            RData::CNAME(rdata::CNAME(owner.clone())),
        ),
        Record::from_rdata(owner.clone(), 30, RData::A(rdata::A("192.0.2.7".parse().expect("ip")))),
        Record::from_rdata(owner, 20, RData::AAAA(rdata::AAAA("2001:db8::7".parse().expect("ip")))),
    ];
    let msg = answer("API.Example.test.", RecordType::A, recs);
    let p = parse(&msg).expect("parses");
    assert_eq!(p.status, status::DONE);
    assert_eq!(p.name, crate::dns::name::wire("api.example.test"));
    assert_eq!(p.rkey, crate::dns::name::rkey_exact("api.example.test"));
    assert_eq!(p.qtype, 1);
    assert_eq!(p.addrs.len(), 2);
    assert_eq!((p.addrs[0].0, &p.addrs[0].1[..4], p.addrs[0].2), (2, &[192, 0, 2, 7][..], 30));
    assert_eq!(p.addrs[1].0, 10);
}

#[test]
fn a_query_is_exact_only_when_nothing_follows_its_question_but_one_opt() {
    let exact = |msg: &[u8]| {
        let p = Bytes(msg);
        let mut st = Box::new(ParseState::zeroed());
        let h = wire::header(&p, 0, &mut st.tmp).expect("header");
        st.start_name(wire::HEADER_LEN, msg.len() as u32);
        while !wire::name_step(&p, &mut st) {}
        let after = st.cur.off + 4;
        wire::query_is_exact(&p, &h, after, msg.len() as u32, &mut st.tmp)
    };
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii("api.example.test.").expect("name"), RecordType::A));
    let plain = m.to_vec().expect("encodes");
    assert!(exact(&plain));
    let mut with_edns = m.clone();
    with_edns.edns = Some(hickory_proto::op::Edns::new());
    let with_edns = with_edns.to_vec().expect("encodes");
    assert!(with_edns.len() > plain.len());
    assert!(exact(&with_edns));
    let mut trailing = plain.clone();
    trailing.extend_from_slice(b"data");
    assert!(!exact(&trailing));
    let mut two = plain.clone();
    two.extend_from_slice(&plain);
    assert!(!exact(&two));
}

#[test]
fn checksum_steps_match_a_direct_sum() {
    let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
    let p = Bytes(&data);
    let mut st = Box::new(ParseState::zeroed());
    st.cur = wire::Cursor { off: 0, end: data.len() as u32, ..Default::default() };
    while !wire::csum_step(&p, &mut st) {}
    let direct: u64 = data.chunks(2).map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    assert_eq!(wire::fold(st.cur.sum), wire::fold(direct));
}

proptest! {
    /// Any bytes: the steps never panic, never read past the message, and stop within budget.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = parse(&bytes);
    }

    /// Valid answers with random bytes changed (structure-aware fuzzing): the steps never panic,
    /// stop within budget, and a name they accept is a well-formed wire name.
    #[test]
    fn mutated_answers_never_panic(
        n in 0usize..20,
        flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8),
    ) {
        let owner = Name::from_ascii("a.b.example.test.").expect("name");
        let recs = (0..n).map(|i| Record::from_rdata(owner.clone(), 60, RData::A(rdata::A((i as u32).into())))).collect();
        let mut msg = answer("a.b.example.test.", RecordType::A, recs);
        for (at, b) in flips {
            let i = usize::from(at) % msg.len();
            msg[i] = b;
        }
        if let Some(p) = parse(&msg) {
            prop_assert!(crate::dns::name::rkey_from_wire(&p.name).is_some(), "{:?}", p.name);
            prop_assert!(p.addrs.len() <= msg.len() / 14);
        }
    }

    /// Random answers built by hickory-proto: the kernel steps read the same question and the
    /// same address records, in order.
    #[test]
    fn agrees_with_hickory(
        labels in proptest::collection::vec("[a-z0-9][a-zA-Z0-9]{0,19}", 1..6),
        addrs in proptest::collection::vec((any::<u32>(), any::<u128>(), any::<bool>(), 0u32..100_000), 0..30),
    ) {
        let qname = labels.join(".") + ".";
        let owner = Name::from_ascii(&qname).expect("name");
        let recs: Vec<Record> = addrs.iter().map(|(v4, v6, is4, ttl)| {
            let data = if *is4 { RData::A(rdata::A((*v4).into())) } else { RData::AAAA(rdata::AAAA((*v6).into())) };
            Record::from_rdata(owner.clone(), *ttl, data)
        }).collect();
        let msg = answer(&qname, RecordType::AAAA, recs.clone());
        let p = parse(&msg).expect("parses");
        prop_assert_eq!(p.status, status::DONE);
        let canonical = labels.join(".").to_lowercase();
        prop_assert_eq!(&p.name, &crate::dns::name::wire(&canonical));
        prop_assert_eq!(&p.rkey, &crate::dns::name::rkey_exact(&canonical));
        let back = Message::from_vec(&msg).expect("decodes");
        let expect: Vec<(u8, Vec<u8>, u32)> = back.answers.iter().map(|r| match &r.data {
            RData::A(a) => (2, a.0.octets().to_vec(), r.ttl),
            RData::AAAA(a) => (10, a.0.octets().to_vec(), r.ttl),
            _ => (0, vec![], 0),
        }).collect();
        let got: Vec<(u8, Vec<u8>, u32)> = p.addrs.iter().map(|(f, a, t)| (*f, if *f == 2 { a[..4].to_vec() } else { a.to_vec() }, *t)).collect();
        prop_assert_eq!(got, expect);
    }
}
