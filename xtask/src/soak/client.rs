//! The soak's client: one process inside the watched cgroup and the namespace, running every
//! workload on a thread of its own, paced, until its stdin closes (the driver hangs up, or dies).
//!
//! It counts every attempt it makes — each `connect()` and each `sendto()` with an address, the
//! calls that reach the agent's connect/sendmsg hooks — and how it ended: done, refused with
//! EPERM (the agent's refusal), or any other error. Those counts are what the driver holds the
//! agent's counters against, so a call that never reached the kernel (a failed `bind`) is not
//! counted. Every allowed datagram goes out on a fresh socket: further datagrams of a flow
//! already reported are counted in the flow, not as attempts (agent-ebpf/src/connect.rs).
//!
//! Besides the lookups it connects after, it asks for [`NAMES_PER_ANSWER`] fresh IPv6 addresses
//! of a fresh name, [`NAMES_PER_S`] per allowed connection: the agent remembers the name of
//! every address answered (`dns::names`, 57,344 entries a table), and this fills it to its bound within
//! the first minutes, so the warm-up sample holds its full cost. (The resolver's IPv4 addresses
//! repeat after 32,000; its IPv6 ones do not.)

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Args;
use egress_agent_tests::{ADDR4, ADDR4_OTHER, ADDR6_OTHER, DNS4};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
};

use crate::bench::{
    close_with_reset,
    dns::{CONNECT_TIMEOUT, UNANSWERED},
    events::{STATSD_PORT as UDP_PORT, TCP_PORT},
};

#[derive(Args)]
pub struct ClientArgs {
    /// Where the counts are written every second (JSON, replaced atomically).
    #[arg(long)]
    stats: PathBuf,
    /// Allowed TCP connections per second; the other workloads are paced in proportion.
    #[arg(long, default_value_t = 200)]
    rate: u32,
}

/// The workloads, and whether the policy allows their attempts.
pub const KINDS: [(&str, bool); 7] = [
    ("tcp_allowed", true),
    ("tcp_denied", false),
    ("udp_allowed", true),
    ("udp_denied", false),
    ("dns_query", true),
    ("dns_connect", true),
    ("dns_names", true),
];

/// Addresses in each answer of the `dns_names` workload (`manyN`, its AAAA records fit in 512
/// bytes: no truncation, and the kernel's record has room for them all).
pub const NAMES_PER_ANSWER: u32 = 16;
/// `dns_names` lookups per allowed TCP connection.
pub const NAMES_PER_S: f64 = 0.2;

/// One workload's attempt, given the counts and the attempt's index.
type Op = Box<dyn FnMut(&Counts, u64) + Send>;

#[derive(Default)]
struct Count {
    attempts: AtomicU64,
    ok: AtomicU64,
    eperm: AtomicU64,
    other: AtomicU64,
}

impl Count {
    /// Counts one attempt and returns whether it went through.
    fn record<T>(&self, what: &str, r: &std::io::Result<T>) -> bool {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                self.eperm.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(e) => {
                if self.other.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("{what}: {e}");
                }
                false
            }
        }
    }
}

struct Counts {
    kinds: [Count; KINDS.len()],
    /// Lookups that got no usable answer (their query's connect is still an attempt).
    unanswered: AtomicU64,
}

impl Counts {
    fn get(&self, kind: &str) -> &Count {
        let i = KINDS.iter().position(|(k, _)| *k == kind).unwrap_or(0);
        &self.kinds[i]
    }

    fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for ((k, _), c) in KINDS.iter().zip(&self.kinds) {
            m.insert(
                (*k).to_owned(),
                serde_json::json!({
                    "attempts": c.attempts.load(Ordering::Relaxed),
                    "ok": c.ok.load(Ordering::Relaxed),
                    "eperm": c.eperm.load(Ordering::Relaxed),
                    "other": c.other.load(Ordering::Relaxed),
                }),
            );
        }
        m.insert("lookups_unanswered".into(), self.unanswered.load(Ordering::Relaxed).into());
        serde_json::Value::Object(m)
    }
}

pub fn client(args: &ClientArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts { kinds: Default::default(), unanswered: AtomicU64::new(0) });
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            stop.store(true, Ordering::SeqCst);
        });
    }
    let rate = f64::from(args.rate.max(1));
    let v4 = |a: &str, p: u16| -> Result<SocketAddr> { Ok(SocketAddr::new(a.parse()?, p)) };
    let allowed_tcp = v4(ADDR4, TCP_PORT)?;
    // No rule for the address; a port the vendor does not list; a learnt-range address nobody
    // resolved; an IPv6 destination no rule names.
    let denied_tcp =
        [v4(ADDR4_OTHER, TCP_PORT)?, v4(ADDR4, TCP_PORT + 1)?, SocketAddr::new(UNANSWERED.into(), TCP_PORT), {
            SocketAddr::new(ADDR6_OTHER.parse::<IpAddr>()?, TCP_PORT)
        }];
    let allowed_udp = v4(ADDR4, UDP_PORT)?;
    let denied_udp = v4(ADDR4_OTHER, UDP_PORT)?;
    let denied_sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("UDP socket")?;
    let resolver = v4(DNS4, 53)?;

    let mut workers = Vec::new();
    let mut spawn = |name: &'static str, per_s: f64, mut op: Op| {
        let (stop, counts) = (stop.clone(), counts.clone());
        workers.push(std::thread::Builder::new().name(name.into()).spawn(move || {
            paced(per_s, &stop, |i| op(&counts, i));
        }));
    };
    spawn(
        "tcp_allowed",
        rate,
        Box::new(move |c, _| {
            let r = TcpStream::connect_timeout(&allowed_tcp, CONNECT_TIMEOUT);
            c.get("tcp_allowed").record("tcp allowed", &r);
            if let Ok(s) = r {
                close_with_reset(s);
            }
        }),
    );
    spawn(
        "tcp_denied",
        rate / 4.0,
        Box::new(move |c, i| {
            let dst = denied_tcp[(i % denied_tcp.len() as u64) as usize];
            let r = TcpStream::connect_timeout(&dst, CONNECT_TIMEOUT);
            c.get("tcp_denied").record("tcp denied", &r);
            if let Ok(s) = r {
                close_with_reset(s);
            }
        }),
    );
    spawn(
        "udp_allowed",
        rate / 2.0,
        Box::new(move |c, _| {
            let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else { return };
            c.get("udp_allowed").record("udp allowed", &s.send_to(b"soak:1|c", allowed_udp));
        }),
    );
    spawn(
        "udp_denied",
        rate / 4.0,
        Box::new(move |c, _| {
            c.get("udp_denied").record("udp denied", &denied_sock.send_to(b"soak:1|c", denied_udp));
        }),
    );
    let tag = std::process::id();
    spawn(
        "dns",
        rate / 10.0,
        Box::new(move |c, i| {
            let mut buf = [0u8; 2048];
            let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else { return };
            if !c.get("dns_query").record("dns query", &s.connect(resolver)) {
                return;
            }
            let id = (i & 0xffff) as u16;
            let answer = encode(&format!("n{i}-{tag}.soak.test."), RecordType::A, id)
                .ok()
                .and_then(|q| exchange(&s, &q, id, &mut buf))
                .and_then(|m| first_a(&m));
            let Some(addr) = answer else {
                c.unanswered.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let r = TcpStream::connect_timeout(&SocketAddr::new(addr.into(), TCP_PORT), CONNECT_TIMEOUT);
            c.get("dns_connect").record("connect to a learnt address", &r);
            if let Ok(s) = r {
                close_with_reset(s);
            }
        }),
    );

    spawn(
        "dns_names",
        rate * NAMES_PER_S,
        Box::new(move |c, i| {
            let mut buf = [0u8; 2048];
            let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else { return };
            if !c.get("dns_names").record("dns names query", &s.connect(resolver)) {
                return;
            }
            let id = (i & 0xffff) as u16;
            let name = format!("many{NAMES_PER_ANSWER}.n{i}-{tag}.soak.test.");
            let answered = encode(&name, RecordType::AAAA, id).ok().and_then(|q| exchange(&s, &q, id, &mut buf));
            if answered.is_none_or(|m| m.answers.len() < NAMES_PER_ANSWER as usize) {
                c.unanswered.fetch_add(1, Ordering::Relaxed);
            }
        }),
    );

    let write_stats = || -> Result<()> {
        let tmp = args.stats.with_extension("tmp");
        std::fs::write(&tmp, counts.json().to_string())?;
        std::fs::rename(&tmp, &args.stats)?;
        Ok(())
    };
    while !stop.load(Ordering::SeqCst) {
        write_stats().context("writing the soak client's counts")?;
        std::thread::sleep(Duration::from_secs(1));
    }
    for w in workers.into_iter().flatten() {
        let _ = w.join();
    }
    write_stats()?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", counts.json())?;
    out.flush()?;
    Ok(())
}

/// Calls `op(i)` for i = 0, 1, ... at `per_s` calls per second until `stop`; a call that runs
/// late is not made up for by a burst beyond one second's worth.
fn paced(per_s: f64, stop: &AtomicBool, mut op: impl FnMut(u64)) {
    let t0 = Instant::now();
    let mut done = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (t0.elapsed().as_secs_f64() * per_s) as u64 + 1;
        if done >= due {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        done = done.max(due.saturating_sub(per_s as u64 + 1));
        op(done);
        done += 1;
    }
}

/// A query for `name`'s records of type `qtype`.
fn encode(name: &str, qtype: RecordType, id: u16) -> Result<Vec<u8>> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name)?, qtype));
    Ok(msg.to_vec()?)
}

fn first_a(msg: &Message) -> Option<Ipv4Addr> {
    msg.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

/// Sends a query on a connected socket and returns its answer.
fn exchange(s: &UdpSocket, query: &[u8], id: u16, buf: &mut [u8]) -> Option<Message> {
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.send(query).ok()?;
    loop {
        let n = s.recv(buf).ok()?;
        let Ok(msg) = Message::from_vec(&buf[..n]) else { continue };
        if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
            continue;
        }
        return Some(msg);
    }
}
