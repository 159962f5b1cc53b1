//! Syslog (RFC 5424) to the local socket, UDP or TCP, on the sink's own thread (see `worker`).
//!
//! A message is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`: the record's own time,
//! its `kind` as MSGID, no structured data, and the record's JSON line as MSG (no BOM: some
//! receivers show it as garbage, and RFC 5424 allows a MSG without one). The formatter is
//! written here rather than taken from a crate: the syslog crates tie formatting to their own
//! transport and to the `log` facade, and none frames TCP by octet counting while reconnecting
//! in the background (README "Written by hand").
//!
//! Transports: a unix socket (datagram, else stream as glibc's syslog(3) falls back to, each
//! message ended by a NUL as glibc does), UDP (one message per datagram, cut at `maxMessage`
//! bytes), TCP with RFC 6587 octet counting (`LEN SP MSG`). A failed send drops the connection;
//! the worker retries with backoff and the next attempt connects again.

use std::{
    io::{self, Write as _},
    net::{TcpStream, ToSocketAddrs as _, UdpSocket},
    os::unix::net::{UnixDatagram, UnixStream},
    path::PathBuf,
    time::Duration,
};

use serde_json::Value;

use super::worker::{Deliver, Failure};

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Udp(String),
    Tcp(String),
}

impl Address {
    /// `unix:///dev/log` (or a bare absolute path), `udp://host:port`, `tcp://host:port`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let host_port = |hp: &str| {
            let ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if ok {
                Ok(hp.to_owned())
            } else {
                Err(format!("`{s}`: expected host:port after the scheme (such as udp://127.0.0.1:514)"))
            }
        };
        if let Some(p) = s.strip_prefix("unix://") {
            if p.starts_with('/') {
                return Ok(Address::Unix(p.into()));
            }
        } else if s.starts_with('/') {
            return Ok(Address::Unix(s.into()));
        } else if let Some(hp) = s.strip_prefix("udp://") {
            return host_port(hp).map(Address::Udp);
        } else if let Some(hp) = s.strip_prefix("tcp://") {
            return host_port(hp).map(Address::Tcp);
        }
        Err(format!("`{s}` is not unix:///PATH, udp://HOST:PORT or tcp://HOST:PORT"))
    }

    /// For logs and `status`.
    pub fn target(&self) -> String {
        match self {
            Address::Unix(p) => format!("unix://{}", p.display()),
            Address::Udp(hp) => format!("udp://{hp}"),
            Address::Tcp(hp) => format!("tcp://{hp}"),
        }
    }
}

/// Facilities by name (RFC 5424 section 6.2.1).
pub const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
    "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// The facility's code, from its name.
pub fn facility(name: &str) -> Option<u8> {
    FACILITIES.iter().position(|f| *f == name).and_then(|i| u8::try_from(i).ok())
}

const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;

/// Denials and anomalies are warnings (something was refused or looks wrong), alerts and the
/// agent's own actions notices, the rest information.
pub fn severity(rec: &Value) -> u8 {
    match (rec["kind"].as_str(), rec["verdict"].as_str()) {
        (Some("anomaly" | "response"), _) | (_, Some("deny")) => WARNING,
        (Some("audit"), _) | (_, Some("alert")) => NOTICE,
        _ => INFO,
    }
}

/// The header fields that do not change from message to message.
#[derive(Debug, Clone)]
pub struct Header {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub procid: u32,
}

/// PRINTUSASCII, at most `max` characters, `-` when nothing is left (RFC 5424 NILVALUE).
fn field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| ('!'..='~').contains(c)).take(max).collect();
    if f.is_empty() {
        "-".to_owned()
    } else {
        f
    }
}

/// The record's time with at most six fraction digits (RFC 5424 TIME-SECFRAC), else now.
fn timestamp(rec: &Value) -> String {
    use time::format_description::well_known::Rfc3339;
    let t = rec["ts"]
        .as_str()
        .and_then(|s| time::OffsetDateTime::parse(s, &Rfc3339).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc)
        .to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.format(&fmt).unwrap_or_else(|_| "-".to_owned())
}

impl Header {
    pub fn new(facility: u8, hostname: Option<&str>, app_name: &str) -> Self {
        let hostname = hostname.map_or_else(local_hostname, str::to_owned);
        Header { facility, hostname: field(&hostname, 255), app_name: field(app_name, 48), procid: std::process::id() }
    }

    /// The message for one record (`json`: its JSON text, one line).
    pub fn format(&self, rec: &Value, json: &str) -> String {
        let pri = u16::from(self.facility) * 8 + u16::from(severity(rec));
        let msgid = field(rec["kind"].as_str().unwrap_or(""), 32);
        format!("<{pri}>1 {} {} {} {} {msgid} - {json}", timestamp(rec), self.hostname, self.app_name, self.procid)
    }
}

fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and the last byte stays 0.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "-".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Cuts `msg` to at most `max` bytes, on a character boundary.
fn cap(msg: &str, max: usize) -> &str {
    if msg.len() <= max {
        return msg;
    }
    let mut end = max;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    &msg[..end]
}

/// RFC 6587 octet counting: `LEN SP MSG`.
pub fn octet_counted(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

enum Conn {
    Datagram(UnixDatagram),
    Stream(UnixStream),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// The sink's side of the worker: formats are done on the event loop's side (see `fanout`);
/// this sends them.
pub struct Sender {
    address: Address,
    max_message: usize,
    timeout: Duration,
    conn: Option<Conn>,
}

impl Sender {
    pub fn new(address: Address, max_message: usize, timeout: Duration) -> Self {
        Sender { address, max_message, timeout, conn: None }
    }

    fn connect(&self) -> io::Result<Conn> {
        let t = Some(self.timeout);
        match &self.address {
            Address::Unix(p) => {
                let d = UnixDatagram::unbound()?;
                match d.connect(p) {
                    Ok(()) => {
                        d.set_write_timeout(t)?;
                        Ok(Conn::Datagram(d))
                    }
                    // A stream socket (syslog-ng's unix-stream, rsyslog configured so).
                    Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                        let s = UnixStream::connect(p)?;
                        s.set_write_timeout(t)?;
                        Ok(Conn::Stream(s))
                    }
                    Err(e) => Err(e),
                }
            }
            Address::Udp(hp) => {
                let to = hp.to_socket_addrs()?.next().ok_or_else(|| io::Error::other("no address"))?;
                let local = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let u = UdpSocket::bind(local)?;
                u.connect(to)?;
                u.set_write_timeout(t)?;
                Ok(Conn::Udp(u))
            }
            Address::Tcp(hp) => {
                let to = hp.to_socket_addrs()?.next().ok_or_else(|| io::Error::other("no address"))?;
                let s = TcpStream::connect_timeout(&to, self.timeout)?;
                s.set_write_timeout(t)?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
        }
    }

    fn send_one(&self, conn: &mut Conn, msg: &str) -> io::Result<()> {
        match conn {
            Conn::Datagram(d) => d.send(msg.as_bytes()).map(drop),
            Conn::Stream(s) => {
                s.write_all(msg.as_bytes())?;
                s.write_all(b"\0")
            }
            Conn::Udp(u) => u.send(cap(msg, self.max_message).as_bytes()).map(drop),
            Conn::Tcp(s) => s.write_all(&octet_counted(msg)),
        }
    }
}

impl Deliver for Sender {
    fn deliver(&mut self, batch: &[String]) -> Result<(), Failure> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().map_err(|e| Failure {
                sent: 0,
                retry: true,
                message: format!("connecting to {}: {e}", self.address.target()),
            })?,
        };
        for (i, msg) in batch.iter().enumerate() {
            if let Err(e) = self.send_one(&mut conn, msg) {
                // The connection is dropped: the retry connects again.
                return Err(Failure {
                    sent: i,
                    retry: true,
                    message: format!("sending to {}: {e}", self.address.target()),
                });
            }
        }
        self.conn = Some(conn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(Address::parse("unix:///dev/log"), Ok(Address::Unix("/dev/log".into())));
        assert_eq!(Address::parse("/run/x.sock"), Ok(Address::Unix("/run/x.sock".into())));
        assert_eq!(Address::parse("udp://127.0.0.1:514"), Ok(Address::Udp("127.0.0.1:514".into())));
        assert_eq!(Address::parse("tcp://[::1]:601"), Ok(Address::Tcp("[::1]:601".into())));
        for bad in ["udp://host", "tcp://:601", "http://x:1", "unix://rel", "udp://h:0"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_becomes_an_rfc5424_message() {
        let h = Header {
            facility: facility("local0").expect("local0"),
            hostname: "host-1".into(),
            app_name: "egress-agent".into(),
            procid: 42,
        };
        let rec = json!({"ts": "2026-12-02T03:21:57.123456789Z", "kind": "connect", "verdict": "deny"});
        let json = rec.to_string();
        // local0 (16) * 8 + warning (4)
        assert_eq!(
            h.format(&rec, &json),
            format!("<132>1 2026-12-02T03:21:57.123456Z host-1 egress-agent 42 connect - {json}")
        );
        let allow = json!({"ts": "2026-12-02T03:21:57Z", "kind": "flow", "verdict": "allow"});
        assert!(h.format(&allow, "{}").starts_with("<134>1 2026-12-02T03:21:57.000000Z "));
        assert_eq!(severity(&json!({"kind": "connect", "verdict": "alert"})), NOTICE);
        assert_eq!(severity(&json!({"kind": "anomaly"})), WARNING);
        assert_eq!(severity(&json!({"kind": "audit"})), NOTICE);
    }

    #[test]
    fn header_fields_are_printable_ascii_within_their_limits() {
        let h = Header::new(1, Some("my host\u{e9}"), "");
        assert_eq!((h.hostname.as_str(), h.app_name.as_str()), ("myhost", "-"));
        assert_eq!(field(&"x".repeat(100), 48).len(), 48);
        let rec = json!({"kind": "a kind with spaces"});
        assert!(h.format(&rec, "{}").contains(" akindwithspaces - {}"));
    }

    #[test]
    fn framing_and_the_udp_cap() {
        assert_eq!(octet_counted("<14>1 - - - - - - é"), "20 <14>1 - - - - - - é".as_bytes());
        assert_eq!(cap("aé", 2), "a");
        assert_eq!(cap("abc", 10), "abc");
    }
}
