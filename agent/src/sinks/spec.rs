//! The `sinks:` list of the agent's configuration, checked as it is read (so an error names its
//! place), and how it combines with `--events`/`--format` into the sinks the agent opens.
//!
//! ```yaml
//! sinks:
//!   - name: siem
//!     type: webhook
//!     url: https://siem.example/hook
//!     headers: {Authorization: "Bearer ..."}
//!     filter: {kinds: [connect, anomaly], verdicts: [deny, alert]}
//!   - type: syslog
//!     address: unix:///dev/log
//!   - type: file
//!     path: /var/log/egress-agent/events.jsonl
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::{
    filter::Filter,
    json::Format,
    syslog,
    webhook::{self, Secret},
    worker::{Batching, Retry},
};

/// The name of the sink `--events` (or the configuration's `events:`) defines.
pub const PRIMARY: &str = "events";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Stdout,
    File,
    Syslog,
    Webhook,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Stdout => "stdout",
            SinkType::File => "file",
            SinkType::Syslog => "syslog",
            SinkType::Webhook => "webhook",
        }
    }
}

/// A duration in the configuration: seconds (`30`, `0.5`) or with a unit (`500ms`, `2s`, `1m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        let secs = |n: f64| {
            if n.is_finite() && (0.0..=86_400.0).contains(&n) {
                Ok(Span(Duration::from_secs_f64(n)))
            } else {
                Err(serde::de::Error::custom(format!("{n} is not between 0 and 86400 seconds")))
            }
        };
        match Raw::deserialize(d)? {
            Raw::N(n) => secs(n),
            Raw::S(s) => {
                let t = s.trim();
                let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: f64 = num.parse().map_err(|_| {
                    serde::de::Error::custom(format!("`{s}` is not a duration (such as 500ms, 2s, 1m, or seconds)"))
                })?;
                match unit {
                    "ms" => secs(n / 1000.0),
                    "" | "s" => secs(n),
                    "m" => secs(n * 60.0),
                    _ => Err(serde::de::Error::custom(format!("`{s}`: the unit must be ms, s or m"))),
                }
            }
        }
    }
}

/// One entry of `sinks:` as written. Every key of every type is accepted here and the ones that
/// do not belong to the entry's `type` are refused by [`SinkConfig::try_from`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSink {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: SinkType,
    #[serde(default)]
    filter: Filter,
    format: Option<Format>,
    path: Option<PathBuf>,
    follow_symlinks: Option<bool>,
    address: Option<String>,
    facility: Option<String>,
    app_name: Option<String>,
    hostname: Option<String>,
    max_message: Option<usize>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    batch_size: Option<usize>,
    flush_interval: Option<Span>,
    queue_size: Option<usize>,
    timeout: Option<Span>,
    retries: Option<u32>,
    max_backoff: Option<Span>,
}

/// What a sink of each type is set up with.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `format: None`: text on a terminal, else JSON (decided when the agent starts).
    Stdout {
        format: Option<Format>,
    },
    /// `follow_symlinks`: a symlink at `path` is followed (by default it is refused).
    File {
        path: PathBuf,
        format: Option<Format>,
        follow_symlinks: bool,
    },
    Syslog(SyslogSpec),
    Webhook(WebhookSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyslogSpec {
    pub address: syslog::Address,
    pub facility: u8,
    pub app_name: String,
    pub hostname: Option<String>,
    pub max_message: usize,
    pub queue: Queue,
}

#[derive(Clone, PartialEq)]
pub struct WebhookSpec {
    pub url: url::Url,
    pub headers: BTreeMap<String, Secret>,
    pub queue: Queue,
}

/// By hand: the URL's credentials and query stay out of any `{:?}`.
impl std::fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("url", &webhook::target(&self.url))
            .field("headers", &self.headers)
            .field("queue", &self.queue)
            .finish()
    }
}

/// The queue, batches, timeouts and retries of a sink on its own thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub size: usize,
    pub batching: Batching,
    pub timeout: Duration,
    pub retry: Retry,
}

/// A checked `sinks:` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawSink")]
pub struct SinkConfig {
    /// As given; unnamed entries are named when the list is resolved.
    pub name: Option<String>,
    pub filter: Filter,
    pub kind: Kind,
}

/// A sink as the agent opens it.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    pub name: String,
    pub filter: Filter,
    pub kind: Kind,
}

impl SinkSpec {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Stdout { .. } => "stdout",
            Kind::File { .. } => "file",
            Kind::Syslog(_) => "syslog",
            Kind::Webhook(_) => "webhook",
        }
    }

    /// The sink `--events PATH` (or `-`) defines: everything, unfiltered.
    pub fn primary(events: &Path, format: Option<Format>) -> Self {
        let kind = if events == Path::new("-") {
            Kind::Stdout { format }
        } else {
            Kind::File { path: events.to_owned(), format, follow_symlinks: false }
        };
        SinkSpec { name: PRIMARY.to_owned(), filter: Filter::default(), kind }
    }

    /// `--events-follow-symlinks` (or `eventsFollowSymlinks`): the `events` sink's file may be
    /// a symlink.
    pub fn follow_primary_symlinks(specs: &mut [SinkSpec]) {
        for s in specs.iter_mut().filter(|s| s.name == PRIMARY) {
            if let Kind::File { follow_symlinks, .. } = &mut s.kind {
                *follow_symlinks = true;
            }
        }
    }
}

fn bounded(
    key: &str,
    v: Option<usize>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, String> {
    let n = v.unwrap_or(default);
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(format!("{key}: {n} is not between {} and {}", range.start(), range.end()))
    }
}

impl TryFrom<RawSink> for SinkConfig {
    type Error = String;

    fn try_from(r: RawSink) -> Result<Self, String> {
        if let Some(n) = &r.name {
            if n.is_empty() || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(format!("name `{n}`: 1 to 64 letters, digits, `-`, `_` or `.` (it is a metrics label)"));
            }
            if n == PRIMARY {
                return Err(format!("name `{PRIMARY}` is the sink --events defines; choose another"));
            }
        }
        for k in &r.filter.kinds {
            if !Filter::KINDS.contains(&k.as_str()) {
                return Err(format!("filter.kinds: `{k}` is not one of {}", Filter::KINDS.join(", ")));
            }
        }
        for v in &r.filter.verdicts {
            if !Filter::VERDICTS.contains(&v.as_str()) {
                return Err(format!("filter.verdicts: `{v}` is not one of {}", Filter::VERDICTS.join(", ")));
            }
        }
        let t = r.kind.as_str();
        // Keys of another type are refused: a `url` on a file sink is a mistake, not a no-op.
        let given: [(&str, bool); 16] = [
            ("format", r.format.is_some()),
            ("path", r.path.is_some()),
            ("followSymlinks", r.follow_symlinks.is_some()),
            ("address", r.address.is_some()),
            ("facility", r.facility.is_some()),
            ("appName", r.app_name.is_some()),
            ("hostname", r.hostname.is_some()),
            ("maxMessage", r.max_message.is_some()),
            ("url", r.url.is_some()),
            ("headers", !r.headers.is_empty()),
            ("batchSize", r.batch_size.is_some()),
            ("flushInterval", r.flush_interval.is_some()),
            ("queueSize", r.queue_size.is_some()),
            ("timeout", r.timeout.is_some()),
            ("retries", r.retries.is_some()),
            ("maxBackoff", r.max_backoff.is_some()),
        ];
        let allowed: &[&str] = match r.kind {
            SinkType::Stdout => &["format"],
            SinkType::File => &["format", "path", "followSymlinks"],
            SinkType::Syslog => &[
                "address",
                "facility",
                "appName",
                "hostname",
                "maxMessage",
                "queueSize",
                "timeout",
                "retries",
                "maxBackoff",
            ],
            SinkType::Webhook => {
                &["url", "headers", "batchSize", "flushInterval", "queueSize", "timeout", "retries", "maxBackoff"]
            }
        };
        if let Some((k, _)) = given.iter().find(|(k, g)| *g && !allowed.contains(k)) {
            return Err(format!("`{k}` is not a key of a {t} sink (it takes: {})", allowed.join(", ")));
        }
        let retry = Retry {
            retries: r.retries.unwrap_or(8).min(1000),
            base: Duration::from_millis(500),
            cap: r.max_backoff.map_or(Duration::from_secs(30), |s| s.0.max(Duration::from_millis(500))),
        };
        let timeout = r.timeout.map_or(Duration::from_secs(10), |s| s.0);
        if timeout.is_zero() {
            return Err("timeout: must be more than zero".to_owned());
        }
        let queue_size = bounded("queueSize", r.queue_size, 10_000, 1..=1_000_000)?;
        let kind = match r.kind {
            SinkType::Stdout => Kind::Stdout { format: r.format },
            SinkType::File => {
                let path = r.path.ok_or("a file sink needs `path` (stdout is `type: stdout`)")?;
                if path.as_os_str().is_empty() || path == Path::new("-") {
                    return Err("path: a file name (stdout is `type: stdout`)".to_owned());
                }
                Kind::File { path, format: r.format, follow_symlinks: r.follow_symlinks.unwrap_or(false) }
            }
            SinkType::Syslog => {
                let address = syslog::Address::parse(r.address.as_deref().unwrap_or("unix:///dev/log"))
                    .map_err(|e| format!("address: {e}"))?;
                let name = r.facility.as_deref().unwrap_or("local0");
                let facility = syslog::facility(name)
                    .ok_or_else(|| format!("facility: `{name}` is not one of {}", syslog::FACILITIES.join(", ")))?;
                Kind::Syslog(SyslogSpec {
                    address,
                    facility,
                    app_name: r.app_name.unwrap_or_else(|| "egress-agent".to_owned()),
                    hostname: r.hostname,
                    max_message: bounded("maxMessage", r.max_message, 8192, 480..=65_000)?,
                    // One message per send: a batch only lets the thread take what is waiting.
                    queue: Queue {
                        size: queue_size,
                        batching: Batching { size: 256, linger: Duration::ZERO },
                        timeout,
                        retry,
                    },
                })
            }
            SinkType::Webhook => {
                let url = webhook::check_url(r.url.as_deref().ok_or("a webhook sink needs `url`")?)
                    .map_err(|e| format!("url: {e}"))?;
                for k in r.headers.keys() {
                    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
                        return Err(format!("headers: `{k}` is not a header name"));
                    }
                }
                let linger = r.flush_interval.map_or(Duration::from_secs(1), |s| s.0);
                Kind::Webhook(WebhookSpec {
                    url,
                    headers: r.headers,
                    queue: Queue {
                        size: queue_size,
                        batching: Batching { size: bounded("batchSize", r.batch_size, 100, 1..=10_000)?, linger },
                        timeout,
                        retry,
                    },
                })
            }
        };
        Ok(SinkConfig { name: r.name, filter: r.filter, kind })
    }
}

/// The sinks the agent opens, from the command line and the configuration file:
///
/// - no `sinks:` in the file: one sink, `events`, to `--events`, else the file's `events:`, else
///   stdout, exactly as before sinks were configurable;
/// - with `sinks:`: those, plus the `events` sink if `--events` or the file's `events:` names
///   one (the flag wins over the key, as every flag does). Nothing is replaced or merged: what
///   is listed is opened;
/// - `--format` is the format of the `events` sink; the entries of `sinks:` have their own
///   `format:` (stdout: text on a terminal, else JSON; a file: JSON).
///
/// Unnamed entries are named by their type, then `type-N` (N: their place in the list, from 1)
/// when the type's name is taken.
pub fn resolve(
    cli_events: Option<&Path>,
    cli_format: Option<Format>,
    file_events: Option<&Path>,
    file_sinks: Option<&[SinkConfig]>,
) -> Result<Vec<SinkSpec>, String> {
    let Some(list) = file_sinks else {
        let events = cli_events.or(file_events).unwrap_or(Path::new("-"));
        return Ok(vec![SinkSpec::primary(events, cli_format)]);
    };
    let mut out = Vec::new();
    if let Some(e) = cli_events.or(file_events) {
        out.push(SinkSpec::primary(e, cli_format));
    }
    for (i, c) in list.iter().enumerate() {
        let name = match &c.name {
            Some(n) => n.clone(),
            None if out.iter().any(|s: &SinkSpec| s.name == c.kind_name()) => format!("{}-{}", c.kind_name(), i + 1),
            None => c.kind_name().to_owned(),
        };
        if out.iter().any(|s| s.name == name) {
            return Err(format!("sinks[{i}]: a sink named `{name}` is already configured"));
        }
        out.push(SinkSpec { name, filter: c.filter.clone(), kind: c.kind.clone() });
    }
    Ok(out)
}

impl SinkConfig {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Stdout { .. } => "stdout",
            Kind::File { .. } => "file",
            Kind::Syslog(_) => "syslog",
            Kind::Webhook(_) => "webhook",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<SinkConfig>, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn every_type_reads_with_its_defaults() {
        let l = parse(
            "- {name: siem, type: webhook, url: 'https://siem.example/hook', headers: {Authorization: Bearer x}, batchSize: 10, flushInterval: 250ms, queueSize: 50, timeout: 2, filter: {kinds: [connect], verdicts: [deny]}}
- {type: syslog, address: 'udp://127.0.0.1:514', facility: auth}
- {type: file, path: /var/log/e.jsonl, format: text}
- {type: stdout}",
        )
        .expect("valid");
        let Kind::Webhook(w) = &l[0].kind else { panic!("{:?}", l[0]) };
        assert_eq!(w.queue.size, 50);
        assert_eq!(w.queue.batching, Batching { size: 10, linger: Duration::from_millis(250) });
        assert_eq!((w.queue.timeout, w.queue.retry.retries), (Duration::from_secs(2), 8));
        assert_eq!(l[0].filter.verdicts, ["deny"]);
        let Kind::Syslog(s) = &l[1].kind else { panic!("{:?}", l[1]) };
        assert_eq!((s.facility, s.max_message, s.app_name.as_str()), (4, 8192, "egress-agent"));
        assert_eq!(
            l[2].kind,
            Kind::File { path: "/var/log/e.jsonl".into(), format: Some(Format::Text), follow_symlinks: false }
        );
        let f = parse("- {type: file, path: /l.jsonl, followSymlinks: true}").expect("valid");
        assert_eq!(f[0].kind, Kind::File { path: "/l.jsonl".into(), format: None, follow_symlinks: true });
        let e = parse("- {type: stdout, followSymlinks: true}").expect_err("file only");
        assert!(e.contains("`followSymlinks` is not a key of a stdout sink"), "{e}");
        let d = parse("- {type: syslog}").expect("defaults");
        let Kind::Syslog(s) = &d[0].kind else { panic!() };
        assert_eq!((s.address.clone(), s.facility), (syslog::Address::Unix("/dev/log".into()), 16));
    }

    #[test]
    fn mistakes_are_refused_saying_what_to_fix() {
        let cases = [
            ("- {type: file}", "needs `path`"),
            ("- {type: file, path: /x, url: 'http://a/'}", "`url` is not a key of a file sink"),
            ("- {type: webhook, url: 'ftp://a/'}", "http or https"),
            ("- {type: webhook, url: 'http://a/', batchSize: 0}", "batchSize: 0 is not between 1"),
            ("- {type: webhook, url: 'http://a/', flushInterval: 2h}", "unit must be ms, s or m"),
            ("- {type: syslog, address: 'udp://x'}", "host:port"),
            ("- {type: syslog, facility: local9}", "facility"),
            ("- {type: stdout, filter: {kinds: [conect]}}", "`conect` is not one of"),
            ("- {type: stdout, filter: {verdict: [deny]}}", "unknown field `verdict`"),
            ("- {type: stdout, nmae: x}", "unknown field `nmae`"),
            ("- {type: kafka}", "unknown variant `kafka`"),
            ("- {type: stdout, name: 'a b'}", "name `a b`"),
            ("- {type: stdout, name: events}", "is the sink --events defines"),
        ];
        for (yaml, want) in cases {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let e = parse("- {type: webhook, url: 'https://u:secret@h/x?token=t0k', timeout: 0}").expect_err("timeout");
        assert!(!e.contains("secret") && !e.contains("t0k"), "{e}");
        let ok =
            parse("- {type: webhook, url: 'https://u:secret@h/x?token=t0k', headers: {X-Key: k3y}}").expect("valid");
        let debug = format!("{ok:?}");
        assert!(!debug.contains("secret") && !debug.contains("t0k") && !debug.contains("k3y"), "{debug}");
    }

    fn names(v: &[SinkSpec]) -> Vec<(&str, &'static str)> {
        v.iter().map(|s| (s.name.as_str(), s.type_name())).collect()
    }

    #[test]
    fn the_command_line_and_the_file_combine_as_documented() {
        // No sinks: as before, one sink from --events, else events:, else stdout.
        let one = resolve(None, None, None, None).expect("ok");
        assert_eq!(one, [SinkSpec::primary(Path::new("-"), None)]);
        let f = resolve(Some(Path::new("/a")), Some(Format::Text), Some(Path::new("/b")), None).expect("ok");
        assert_eq!(f[0].kind, Kind::File { path: "/a".into(), format: Some(Format::Text), follow_symlinks: false });
        let mut followed = f.clone();
        SinkSpec::follow_primary_symlinks(&mut followed);
        assert_eq!(
            followed[0].kind,
            Kind::File { path: "/a".into(), format: Some(Format::Text), follow_symlinks: true }
        );
        let list = parse(
            "- {type: file, path: /f.jsonl}\n- {type: syslog}\n- {type: stdout, filter: {verdicts: [deny]}}\n- {type: file, path: /g}",
        )
        .expect("valid");
        // The list as written (unnamed entries named by type), events: added.
        let r = resolve(None, None, Some(Path::new("/e")), Some(&list)).expect("ok");
        assert_eq!(
            names(&r),
            [("events", "file"), ("file", "file"), ("syslog", "syslog"), ("stdout", "stdout"), ("file-4", "file")]
        );
        // --events wins over events: and is added to the list; --format is the events sink's only.
        let r = resolve(Some(Path::new("-")), Some(Format::Json), Some(Path::new("/e")), Some(&list)).expect("ok");
        assert_eq!(
            names(&r),
            [("events", "stdout"), ("file", "file"), ("syslog", "syslog"), ("stdout", "stdout"), ("file-4", "file")]
        );
        assert_eq!(r[0].kind, Kind::Stdout { format: Some(Format::Json) });
        assert_eq!(r[1].kind, Kind::File { path: "/f.jsonl".into(), format: None, follow_symlinks: false });
        let r = resolve(None, Some(Format::Text), None, Some(&list)).expect("ok");
        assert_eq!(names(&r)[0], ("file", "file"), "no events sink unless named");
        assert!(resolve(None, None, None, Some(&[])).expect("ok").is_empty(), "sinks: [] writes nowhere");
        let dup = parse("- {type: stdout, name: a}\n- {type: syslog, name: a}").expect("valid");
        assert!(resolve(None, None, None, Some(&dup)).expect_err("dup").contains("sinks[1]: a sink named `a`"));
    }
}
