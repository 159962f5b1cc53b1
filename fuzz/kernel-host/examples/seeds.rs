//! Writes the seed corpora of the `dns` and `event` fuzz targets (`fuzz/corpus/`): query and
//! answer pairs over each transport, and the ring records the kernel programs write for them,
//! plus a connect, an exec and a flow-end record. Run from `fuzz/`:
//! `cargo +nightly run -p agent-ebpf-host --example seeds`.

use agent_common::{record, Event, ExecEvent, FlowEnd};
use agent_ebpf_host::host::{self, query_and_answer, Options};

fn name(out: &mut Vec<u8>, n: &str) {
    for l in n.split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

/// `www.example.test` AAAA with EDNS0: a CNAME to `edge.cdn.test`, then AAAA and A records.
fn cname_answer() -> (Vec<u8>, Vec<u8>) {
    let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    name(&mut q, "www.example.test");
    q.extend_from_slice(&[0, 28, 0, 1]);
    let opt = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
    let mut a = q.clone();
    q.extend_from_slice(&opt);
    a[2] = 0x81;
    a[3] = 0x80;
    a[7] = 3;
    a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 0x2c]);
    let mut target = Vec::new();
    name(&mut target, "edge.cdn.test");
    a.extend_from_slice(&(target.len() as u16).to_be_bytes());
    let edge = a.len() as u16;
    a.extend_from_slice(&target);
    a.extend_from_slice(&(0xc000 | edge).to_be_bytes());
    a.extend_from_slice(&[0, 28, 0, 1, 0, 0, 0, 30, 0, 16]);
    a.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    a.extend_from_slice(&(0xc000 | edge).to_be_bytes());
    a.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 198, 51, 100, 7]);
    a.extend_from_slice(&opt);
    (q, a)
}

fn input(opts: [u8; 2], q: &[u8], a: &[u8]) -> Vec<u8> {
    let mut v = opts.to_vec();
    v.extend_from_slice(&(q.len() as u16).to_be_bytes());
    v.extend_from_slice(q);
    v.extend_from_slice(a);
    v
}

fn bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: plain repr(C) data, read as bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }.to_vec()
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let write = |target: &str, file: &str, data: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("corpus directory");
        std::fs::write(d.join(file), data).expect("seed written");
    };
    let pairs = [
        ("a", query_and_answer(0x1234, "api.example.test", &[[192, 0, 2, 7], [192, 0, 2, 8]])),
        ("cname", cname_answer()),
        ("unlisted", query_and_answer(7, "other.test", &[[192, 0, 2, 9]])),
    ];
    // Option bytes (see host::Options::from_bytes): UDP v4 verified; TCP v6 summed with a
    // hop-by-hop header; UDP v4 without checksum, enforce, unlisted deny; a wrong checksum with
    // a spoof; resolvers only over TCP cut short; GSO.
    let variants: [(&str, [u8; 2]); 6] = [
        ("udp4", [0x00, 0x00]),
        ("tcp6", [0x07, 0x02]),
        ("udp4-enforce", [0x38, 0x00]),
        ("wrong-spoof", [0x9c, 0x00]),
        ("tcp4-cut", [0x42, 0x0c]),
        ("gso", [0x30, 0x01]),
    ];
    let mut events = 0;
    for (pname, (q, a)) in &pairs {
        for (vname, o) in variants {
            write("dns", &format!("{pname}-{vname}"), &input(o, q, a));
            let out = host::run(&Options::from_bytes(o[0], o[1]), q, a);
            for rec in out.events {
                write("event", &format!("dns-{pname}-{vname}-{events}"), &rec);
                events += 1;
            }
        }
    }
    // SAFETY: plain data, valid as zeroes.
    let mut c: Event = unsafe { std::mem::zeroed() };
    c.kind = record::CONNECT;
    (c.pid, c.tid, c.uid, c.dport, c.family, c.proto, c.verdict, c.rule_id) = (4000, 4001, 65534, 443, 2, 6, 1, 1);
    c.daddr[..4].copy_from_slice(&[192, 0, 2, 7]);
    c.comm[..4].copy_from_slice(b"curl");
    write("event", "connect", &bytes(&c));
    // SAFETY: as above.
    let mut e: ExecEvent = unsafe { std::mem::zeroed() };
    e.kind = record::EXEC;
    e.pid = 4000;
    e.filename[..13].copy_from_slice(b"/usr/bin/curl");
    write("event", "exec", &bytes(&e));
    // SAFETY: as above.
    let mut f: FlowEnd = unsafe { std::mem::zeroed() };
    f.kind = record::FLOW_END;
    f.cookie = 77;
    write("event", "flow-end", &bytes(&f));
    println!("{events} DNS records written");
}
