//! A small authoritative-style DNS server for the kernel tests.
//!
//! ```text
//! ea-dns-server --listen ADDR:PORT [--listen ADDR:PORT ...] --ready PATH --log PATH
//!               [--ttl SECS] [--base4 IPV4] [--base6 IPV6]
//! ```
//!
//! It serves UDP and TCP on every listen address, writes `ready\n` to the ready file once every
//! socket is bound and appends one JSON line per handled query to the log file. Every answered
//! address is fresh (a global counter), so a test can tell which answer a connection used.
//! The first label of the query name selects special behaviour:
//!
//! * `nx`: NXDOMAIN.
//! * `silent`: no response at all (logged with rcode `DROPPED`).
//! * `shared`: always A `198.18.200.1` / AAAA `2001:db8:2::1`.
//! * `alias`: `alias.X` CNAME `hop.X`, `hop.X` CNAME `real.X`, then the address record of `real.X`.
//! * `manyN` (N in 1..=500): N address records.
//! * `dns64…` (any label starting so): a DNS64 resolver's answers: A a fresh IPv4 address, AAAA
//!   that address under the NAT64 well-known prefix (`64:ff9b::a.b.c.d`, RFC 6052).
//! * `dual` and anything else: one address record of the asked type (A or AAAA); other types get
//!   NOERROR without answers.
//!
//! UDP responses larger than the client's limit (512, or its EDNS payload size) are replaced by an
//! empty response with TC set, so clients retry over TCP. All DNS wire encoding is hickory-proto's.

use std::{
    error::Error,
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::exit,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread,
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        rdata::{A, AAAA, CNAME},
        Name, RData, Record, RecordType,
    },
};

const USAGE: &str = "usage: ea-dns-server --listen ADDR:PORT [--listen ADDR:PORT ...] --ready PATH --log PATH \
                     [--ttl SECS] [--base4 IPV4] [--base6 IPV6]";

/// The fixed answers of `shared.*` names.
const SHARED4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
const SHARED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052), as the top 96 bits.
const NAT64_WELL_KNOWN: u128 = 0x0064_ff9b_u128 << 96;
/// Largest N accepted in `manyN`.
const MAX_MANY: u32 = 500;
/// Fresh IPv4 addresses cycle through this many values above base4 (fits the /17 above it).
const FRESH4_SPAN: u32 = 32000;
/// The payload size this server advertises in its own OPT record.
const SERVER_PAYLOAD: u16 = 4096;
/// An idle TCP connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Config {
    ttl: u32,
    base4: Ipv4Addr,
    base6: Ipv6Addr,
}

impl Default for Config {
    fn default() -> Self {
        Self { ttl: 1, base4: Ipv4Addr::new(198, 18, 128, 0), base6: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0) }
    }
}

#[derive(Debug)]
struct Args {
    listen: Vec<SocketAddr>,
    ready: PathBuf,
    log: PathBuf,
    config: Config,
}

/// One line of the query log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogLine {
    proto: &'static str,
    name: String,
    qtype: String,
    rcode: String,
    answers: Vec<String>,
    tc: bool,
}

impl LogLine {
    fn to_json(&self) -> String {
        serde_json::json!({
            "proto": self.proto,
            "name": self.name,
            "qtype": self.qtype,
            "rcode": self.rcode,
            "answers": self.answers,
            "tc": self.tc,
        })
        .to_string()
    }
}

/// What to do with one query: the bytes to send back (none for a dropped query) and its log line.
#[derive(Debug)]
struct Handled {
    reply: Option<Vec<u8>>,
    log: LogLine,
}

/// What the first label of the query name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    NxDomain,
    Silent,
    Shared,
    Alias,
    Many(u32),
    Dns64,
    Fresh,
}

fn behaviour(first_label: &[u8]) -> Behaviour {
    let label = first_label.to_ascii_lowercase();
    match label.as_slice() {
        b"nx" => Behaviour::NxDomain,
        b"silent" => Behaviour::Silent,
        b"shared" => Behaviour::Shared,
        b"alias" => Behaviour::Alias,
        l if l.starts_with(b"dns64") => Behaviour::Dns64,
        _ => label
            .strip_prefix(b"many")
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u32>().ok())
            .filter(|n| (1..=MAX_MANY).contains(n))
            .map_or(Behaviour::Fresh, Behaviour::Many),
    }
}

/// The next value of the global address counter (1 for the first address handed out).
fn next_n(counter: &AtomicU32) -> u32 {
    counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

fn fresh4(n: u32, cfg: &Config) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cfg.base4).wrapping_add(n % FRESH4_SPAN).wrapping_add(1))
}

fn fresh6(n: u32, cfg: &Config) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(cfg.base6).wrapping_add(u128::from(n)))
}

/// `count` address records of `qtype` owned by `owner`; none for types other than A and AAAA.
fn address_records(
    owner: &Name,
    qtype: RecordType,
    count: u32,
    shared: bool,
    counter: &AtomicU32,
    cfg: &Config,
) -> Vec<Record> {
    let rdata = |counter: &AtomicU32| match qtype {
        RecordType::A if shared => Some(RData::A(A(SHARED4))),
        RecordType::AAAA if shared => Some(RData::AAAA(AAAA(SHARED6))),
        RecordType::A => Some(RData::A(A(fresh4(next_n(counter), cfg)))),
        RecordType::AAAA => Some(RData::AAAA(AAAA(fresh6(next_n(counter), cfg)))),
        _ => None,
    };
    (0..count).map_while(|_| rdata(counter)).map(|data| Record::from_rdata(owner.clone(), cfg.ttl, data)).collect()
}

/// The answer section and rcode for one question.
fn answer(query: &Query, counter: &AtomicU32, cfg: &Config) -> Result<(ResponseCode, Vec<Record>), Box<dyn Error>> {
    let name = query.name();
    let qtype = query.query_type();
    let first = name.iter().next().unwrap_or_default();
    Ok(match behaviour(first) {
        // Dropped queries never get here; answer them like NXDOMAIN if they ever do.
        Behaviour::NxDomain | Behaviour::Silent => (ResponseCode::NXDomain, Vec::new()),
        Behaviour::Shared => (ResponseCode::NoError, address_records(name, qtype, 1, true, counter, cfg)),
        Behaviour::Many(n) => (ResponseCode::NoError, address_records(name, qtype, n, false, counter, cfg)),
        Behaviour::Fresh => (ResponseCode::NoError, address_records(name, qtype, 1, false, counter, cfg)),
        Behaviour::Dns64 => {
            let v4 = fresh4(next_n(counter), cfg);
            let data = match qtype {
                RecordType::A => Some(RData::A(A(v4))),
                RecordType::AAAA => {
                    Some(RData::AAAA(AAAA(Ipv6Addr::from(NAT64_WELL_KNOWN | u128::from(u32::from(v4))))))
                }
                _ => None,
            };
            (ResponseCode::NoError, data.map(|d| Record::from_rdata(name.clone(), cfg.ttl, d)).into_iter().collect())
        }
        Behaviour::Alias => {
            let base = name.base_name();
            let hop = base.prepend_label("hop")?;
            let real = base.prepend_label("real")?;
            let mut records = vec![
                Record::from_rdata(name.clone(), cfg.ttl, RData::CNAME(CNAME(hop.clone()))),
                Record::from_rdata(hop, cfg.ttl, RData::CNAME(CNAME(real.clone()))),
            ];
            records.extend(address_records(&real, qtype, 1, false, counter, cfg));
            (ResponseCode::NoError, records)
        }
    })
}

fn rcode_text(rcode: ResponseCode) -> String {
    match u16::from(rcode) {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        code => format!("RCODE{code}"),
    }
}

fn qtype_text(qtype: RecordType) -> String {
    match qtype {
        RecordType::Unknown(code) => format!("TYPE{code}"),
        other => other.to_string(),
    }
}

/// The query name as logged: lowercase, without the trailing dot.
fn name_text(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    text.strip_suffix('.').map(str::to_owned).unwrap_or(text)
}

fn answer_texts(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(aaaa) => Some(aaaa.0.to_string()),
            _ => None,
        })
        .collect()
}

/// Handles one query message. `None` when it is not worth an answer (undecodable, or a response).
fn respond(query_bytes: &[u8], proto_is_tcp: bool, counter: &AtomicU32, cfg: &Config) -> Option<Handled> {
    let request = match Message::from_vec(query_bytes) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("ea-dns-server: undecodable query ({} bytes): {e}", query_bytes.len());
            return None;
        }
    };
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let proto = if proto_is_tcp { "tcp" } else { "udp" };
    let question = request.queries.first();
    let mut log = LogLine {
        proto,
        name: question.map(|q| name_text(q.name())).unwrap_or_default(),
        qtype: question.map(|q| qtype_text(q.query_type())).unwrap_or_default(),
        rcode: String::new(),
        answers: Vec::new(),
        tc: false,
    };

    let (rcode, answers) = match question {
        _ if request.metadata.op_code != OpCode::Query => (ResponseCode::NotImp, Vec::new()),
        Some(q) if request.queries.len() == 1 => {
            if behaviour(q.name().iter().next().unwrap_or_default()) == Behaviour::Silent {
                log.rcode = "DROPPED".into();
                return Some(Handled { reply: None, log });
            }
            match answer(q, counter, cfg) {
                Ok(answered) => answered,
                Err(e) => {
                    eprintln!("ea-dns-server: cannot answer {}: {e}", log.name);
                    (ResponseCode::ServFail, Vec::new())
                }
            }
        }
        _ => (ResponseCode::FormErr, Vec::new()),
    };

    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.response_code = rcode;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(SERVER_PAYLOAD);
        response.set_edns(edns);
    }
    log.rcode = rcode_text(rcode);
    log.answers = answer_texts(&answers);
    response.add_answers(answers);

    let encode = |message: &Message| {
        message.to_vec().map_err(|e| eprintln!("ea-dns-server: cannot encode the answer to {}: {e}", log.name)).ok()
    };
    let mut reply = encode(&response)?;
    // Message::max_payload is 512 without OPT, else max(512, advertised size).
    if !proto_is_tcp && reply.len() > usize::from(request.max_payload()) {
        // Message::truncate keeps header (with TC set), question and OPT, and drops the records.
        reply = encode(&response.truncate())?;
        log.answers.clear();
        log.tc = true;
    }
    Some(Handled { reply: Some(reply), log })
}

/// What every server thread shares.
struct Server {
    counter: AtomicU32,
    cfg: Config,
    log: Mutex<File>,
}

impl Server {
    fn handle(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let handled = respond(query, tcp, &self.counter, &self.cfg)?;
        let mut line = handled.log.to_json();
        line.push('\n');
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = log.write_all(line.as_bytes()).and_then(|()| log.flush()) {
            eprintln!("ea-dns-server: cannot write the log: {e}");
        }
        handled.reply
    }
}

fn serve_udp(socket: &UdpSocket, server: &Server) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) => {
                eprintln!("ea-dns-server: udp receive: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Some(reply) = buf.get(..len).and_then(|query| server.handle(query, false)) {
            if let Err(e) = socket.send_to(&reply, peer) {
                eprintln!("ea-dns-server: udp send to {peer}: {e}");
            }
        }
    }
}

fn serve_tcp_connection(mut stream: TcpStream, server: &Server) -> io::Result<()> {
    stream.set_read_timeout(Some(TCP_IDLE))?;
    stream.set_nodelay(true)?;
    loop {
        // RFC 1035 4.2.2: every message is prefixed by its length as two bytes.
        let mut prefix = [0u8; 2];
        match stream.read_exact(&mut prefix) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut query)?;
        let Some(reply) = server.handle(&query, true) else { continue };
        let len = u16::try_from(reply.len()).map_err(|_| io::Error::other("response longer than 65535 bytes"))?;
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed)?;
    }
}

fn serve_tcp(listener: &TcpListener, server: &Arc<Server>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let server = Arc::clone(server);
                thread::spawn(move || {
                    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    if let Err(e) = serve_tcp_connection(stream, &server) {
                        if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                            eprintln!("ea-dns-server: tcp connection from {peer}: {e}");
                        }
                    }
                });
            }
            Err(e) => {
                eprintln!("ea-dns-server: tcp accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut listen = Vec::new();
    let (mut ready, mut log) = (None, None);
    let mut config = Config::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad {flag} {value:?}: {e}");
        match flag.as_str() {
            "--listen" => listen.push(value.parse::<SocketAddr>().map_err(|e| bad(&e))?),
            "--ready" => ready = Some(PathBuf::from(value)),
            "--log" => log = Some(PathBuf::from(value)),
            "--ttl" => config.ttl = value.parse().map_err(|e| bad(&e))?,
            "--base4" => config.base4 = value.parse().map_err(|e| bad(&e))?,
            "--base6" => config.base6 = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if listen.is_empty() {
        return Err("at least one --listen is needed".into());
    }
    Ok(Args { listen, ready: ready.ok_or("--ready is needed")?, log: log.ok_or("--log is needed")?, config })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args(std::env::args().skip(1)).unwrap_or_else(|e| {
        eprintln!("ea-dns-server: {e}\n{USAGE}");
        exit(2)
    });
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| format!("cannot open the log {}: {e}", args.log.display()))?;
    let server = Arc::new(Server { counter: AtomicU32::new(0), cfg: args.config, log: Mutex::new(log) });

    let mut sockets = Vec::new();
    for addr in &args.listen {
        let udp = UdpSocket::bind(addr).map_err(|e| format!("cannot bind udp {addr}: {e}"))?;
        // With port 0, TCP takes the port UDP got.
        let local = udp.local_addr()?;
        let tcp = TcpListener::bind(local).map_err(|e| format!("cannot bind tcp {local}: {e}"))?;
        eprintln!("ea-dns-server: listening on {local} (udp, tcp)");
        sockets.push((udp, tcp));
    }
    fs::write(&args.ready, "ready\n").map_err(|e| format!("cannot write {}: {e}", args.ready.display()))?;

    let mut threads = Vec::new();
    for (udp, tcp) in sockets {
        let udp_server = Arc::clone(&server);
        threads.push(thread::spawn(move || serve_udp(&udp, &udp_server)));
        let tcp_server = Arc::clone(&server);
        threads.push(thread::spawn(move || serve_tcp(&tcp, &tcp_server)));
    }
    for thread in threads {
        if thread.join().is_err() {
            return Err("a server thread panicked".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: RecordType, edns_payload: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(payload) = edns_payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    fn ask(name: &str, qtype: RecordType, tcp: bool, edns: Option<u16>, counter: &AtomicU32) -> (Message, LogLine) {
        let handled = respond(&query(name, qtype, edns), tcp, counter, &Config::default()).unwrap();
        (Message::from_vec(&handled.reply.unwrap()).unwrap(), handled.log)
    }

    fn addresses(message: &Message) -> Vec<String> {
        answer_texts(&message.answers)
    }

    #[test]
    fn header_is_copied_and_flags_set() {
        let counter = AtomicU32::new(0);
        let (response, log) = ask("www.example.test.", RecordType::A, false, None, &counter);
        assert_eq!(response.metadata.id, 0x1234);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert!(response.metadata.authoritative);
        assert!(response.metadata.recursion_desired);
        assert!(response.metadata.recursion_available);
        assert!(!response.metadata.truncation);
        assert_eq!(response.queries.len(), 1);
        assert_eq!(response.queries[0].name(), &Name::from_ascii("www.example.test.").unwrap());
        assert!(response.edns.is_none());
        assert_eq!(response.answers[0].ttl, 1);
        assert_eq!(addresses(&response), ["198.18.128.2"]);
        assert_eq!(
            log,
            LogLine {
                proto: "udp",
                name: "www.example.test".into(),
                qtype: "A".into(),
                rcode: "NOERROR".into(),
                answers: vec!["198.18.128.2".into()],
                tc: false,
            }
        );
        let json: serde_json::Value = serde_json::from_str(&log.to_json()).unwrap();
        assert_eq!(json["answers"][0], "198.18.128.2");
        assert_eq!(json["tc"], false);
    }

    #[test]
    fn fresh_addresses_differ() {
        let counter = AtomicU32::new(0);
        let (first, _) = ask("api.example.test.", RecordType::A, false, None, &counter);
        let (second, _) = ask("api.example.test.", RecordType::A, true, None, &counter);
        assert_eq!(addresses(&first).len(), 1);
        assert_ne!(addresses(&first), addresses(&second));
        let (v6, log) = ask("dual.example.test.", RecordType::AAAA, false, None, &counter);
        assert_eq!(addresses(&v6), ["2001:db8:1::3"]);
        assert_eq!(log.qtype, "AAAA");
        let (v4, _) = ask("dual.example.test.", RecordType::A, false, None, &counter);
        assert_eq!(addresses(&v4), ["198.18.128.5"]);
    }

    #[test]
    fn fresh_ipv4_wraps_within_the_base() {
        let cfg = Config::default();
        assert_eq!(fresh4(31999, &cfg), Ipv4Addr::new(198, 18, 253, 0));
        assert_eq!(fresh4(32000, &cfg), Ipv4Addr::new(198, 18, 128, 1));
    }

    #[test]
    fn dns64_answers_aaaa_under_the_well_known_prefix() {
        let counter = AtomicU32::new(0);
        assert_eq!(addresses(&ask("dns64-1.example.test.", RecordType::A, false, None, &counter).0), ["198.18.128.2"]);
        assert_eq!(
            addresses(&ask("dns64-2.example.test.", RecordType::AAAA, false, None, &counter).0),
            ["64:ff9b::c612:8003"]
        );
    }

    #[test]
    fn shared_is_always_the_same() {
        let counter = AtomicU32::new(0);
        for _ in 0..2 {
            assert_eq!(
                addresses(&ask("shared.example.test.", RecordType::A, false, None, &counter).0),
                ["198.18.200.1"]
            );
            assert_eq!(
                addresses(&ask("Shared.example.test.", RecordType::AAAA, false, None, &counter).0),
                ["2001:db8:2::1"]
            );
        }
    }

    #[test]
    fn alias_chain_in_order() {
        let counter = AtomicU32::new(0);
        let (response, log) = ask("alias.api.example.test.", RecordType::A, false, None, &counter);
        let owners: Vec<String> = response.answers.iter().map(|r| r.name.to_ascii()).collect();
        assert_eq!(owners, ["alias.api.example.test.", "hop.api.example.test.", "real.api.example.test."]);
        let types: Vec<RecordType> = response.answers.iter().map(Record::record_type).collect();
        assert_eq!(types, [RecordType::CNAME, RecordType::CNAME, RecordType::A]);
        match (&response.answers[0].data, &response.answers[1].data) {
            (RData::CNAME(hop), RData::CNAME(real)) => {
                assert_eq!(hop.0.to_ascii(), "hop.api.example.test.");
                assert_eq!(real.0.to_ascii(), "real.api.example.test.");
            }
            other => panic!("not a CNAME chain: {other:?}"),
        }
        assert_eq!(log.answers, ["198.18.128.2"]);
    }

    #[test]
    fn many40_count() {
        let counter = AtomicU32::new(0);
        for (tcp, edns) in [(true, None), (false, Some(4096))] {
            let (response, log) = ask("many40.example.test.", RecordType::A, tcp, edns, &counter);
            assert!(!response.metadata.truncation);
            assert_eq!(response.answers.len(), 40);
            let mut unique = log.answers.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 40);
        }
        assert_eq!(counter.load(Ordering::Relaxed), 80);
        // Out of range: a plain single answer.
        assert_eq!(ask("many501.example.test.", RecordType::A, true, None, &counter).0.answers.len(), 1);
        assert_eq!(ask("many0.example.test.", RecordType::A, true, None, &counter).0.answers.len(), 1);
    }

    #[test]
    fn many100_truncated_without_edns() {
        let counter = AtomicU32::new(0);
        let (response, log) = ask("many100.example.test.", RecordType::A, false, None, &counter);
        assert!(response.metadata.truncation);
        assert!(response.answers.is_empty());
        assert_eq!(response.queries.len(), 1);
        assert!(log.tc);
        assert!(log.answers.is_empty());

        // A small EDNS size is still too small; the OPT record is kept.
        let (response, log) = ask("many100.example.test.", RecordType::AAAA, false, Some(1232), &counter);
        assert!(response.metadata.truncation && log.tc);
        assert_eq!(response.edns.as_ref().map(Edns::max_payload), Some(4096));

        let (response, log) = ask("many100.example.test.", RecordType::AAAA, false, Some(4096), &counter);
        assert!(!response.metadata.truncation && !log.tc);
        assert_eq!(response.answers.len(), 100);

        let (response, log) = ask("many100.example.test.", RecordType::A, true, None, &counter);
        assert!(!response.metadata.truncation && !log.tc);
        assert_eq!(response.answers.len(), 100);
    }

    #[test]
    fn nx_rcode() {
        let counter = AtomicU32::new(0);
        for edns in [None, Some(1232)] {
            let (response, log) = ask("NX.Example.Test.", RecordType::A, false, edns, &counter);
            assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
            assert!(response.answers.is_empty());
            assert_eq!(log.rcode, "NXDOMAIN");
            assert_eq!(log.name, "nx.example.test");
            assert_eq!(response.edns.is_some(), edns.is_some());
        }
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn silent_is_dropped_but_logged() {
        let counter = AtomicU32::new(0);
        let handled = respond(&query("silent.example.test.", RecordType::A, None), true, &counter, &Config::default());
        let handled = handled.unwrap();
        assert!(handled.reply.is_none());
        assert_eq!(handled.log.rcode, "DROPPED");
        assert_eq!(handled.log.proto, "tcp");
    }

    #[test]
    fn other_types_get_no_answers() {
        let counter = AtomicU32::new(0);
        let (response, log) = ask("www.example.test.", RecordType::TXT, false, None, &counter);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());
        assert_eq!((log.qtype.as_str(), log.rcode.as_str()), ("TXT", "NOERROR"));
    }

    #[test]
    fn garbage_is_ignored() {
        let counter = AtomicU32::new(0);
        assert!(respond(&[1, 2, 3], false, &counter, &Config::default()).is_none());
    }

    #[test]
    fn arguments() {
        let args = |list: &[&str]| parse_args(list.iter().map(|s| (*s).to_owned()));
        let parsed = args(&[
            "--listen",
            "127.0.0.1:53",
            "--listen",
            "[2001:db8::53]:53",
            "--ready",
            "/r",
            "--log",
            "/l",
            "--ttl",
            "5",
            "--base6",
            "2001:db8:9::",
        ])
        .unwrap();
        assert_eq!(parsed.listen.len(), 2);
        assert_eq!(parsed.config.ttl, 5);
        assert_eq!(parsed.config.base4, Ipv4Addr::new(198, 18, 128, 0));
        assert_eq!(parsed.config.base6, "2001:db8:9::".parse::<Ipv6Addr>().unwrap());
        assert!(args(&["--ready", "/r", "--log", "/l"]).is_err());
        assert!(args(&["--listen", "127.0.0.1:53", "--log", "/l"]).is_err());
        assert!(args(&["--listen", "nope", "--ready", "/r", "--log", "/l"]).is_err());
        assert!(args(&["--listen"]).is_err());
    }
}
