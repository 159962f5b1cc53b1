//! Every record goes to each configured sink whose filter takes it. Local sinks (stdout, a file)
//! are written on the event loop, as before; syslog and webhook sinks get a non-blocking push
//! into their own queue (see `worker`). A sink that fails is counted and logged, and never stops
//! the others or enforcement.

use std::{
    io,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracing::{error, info, warn};

use super::{
    filter::Filter,
    health::{SinkHealth, Stats},
    json::{self, Format},
    metrics::Metrics,
    spec::{Kind, SinkSpec},
    syslog, webhook,
    worker::Worker,
};

/// How long the agent waits, when it stops, for the queued sinks to deliver what they hold.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {name}: opening {target}: {source}")]
    Open { name: String, target: String, source: io::Error },
}

enum Out {
    Local(json::Sink),
    /// A syslog sink: records are formatted here, sent by the thread.
    Syslog(syslog::Header, Worker),
    Webhook(Worker),
}

struct Entry {
    name: String,
    kind: &'static str,
    target: String,
    filter: Filter,
    out: Out,
    stats: Arc<Stats>,
    /// When a local write failure was last logged (they are logged at most every 10 s).
    reported: Option<Instant>,
    /// What `/metrics` has already been given.
    seen: (u64, u64, u64),
}

/// The sinks of a running agent. `Pipeline::sinks` holds it; `status` reads [`Sinks::health`].
pub struct Sinks {
    entries: Vec<Entry>,
    /// Some sink filters, writes text or formats syslog, so records are turned into a
    /// `serde_json::Value` first; else (the default: one JSON sink, no filter) they are
    /// serialized straight to text, as fast as before sinks were configurable.
    needs_value: bool,
}

impl Sinks {
    /// Opens every sink. A file that cannot be opened is an error (a typo must not leave a
    /// half-started enforcer); a receiver that is down is not (its thread retries).
    /// `terminal`: stdout is a terminal (stdout sinks without a format then write text).
    pub fn open(specs: &[SinkSpec], terminal: bool) -> Result<Self, SinkError> {
        let mut entries = Vec::with_capacity(specs.len());
        for s in specs {
            let stats = Arc::new(Stats::default());
            let open_err =
                |target: &str, source| SinkError::Open { name: s.name.clone(), target: target.to_owned(), source };
            let (target, out) = match &s.kind {
                Kind::Stdout { format } => {
                    let f = format.unwrap_or(if terminal { Format::Text } else { Format::Json });
                    let sink =
                        json::Sink::open(std::path::Path::new("-"), f, false).map_err(|e| open_err("stdout", e))?;
                    ("stdout".to_owned(), Out::Local(sink))
                }
                Kind::File { path, format, follow_symlinks } => {
                    let target = path.display().to_string();
                    let sink = json::Sink::open(path, format.unwrap_or(Format::Json), *follow_symlinks)
                        .map_err(|e| open_err(&target, e))?;
                    (target, Out::Local(sink))
                }
                Kind::Syslog(c) => {
                    let target = c.address.target();
                    let sender = syslog::Sender::new(c.address.clone(), c.max_message, c.queue.timeout);
                    let q = &c.queue;
                    let w = Worker::spawn(&s.name, sender, q.size, q.batching, q.retry, stats.clone())
                        .map_err(|e| open_err(&target, e))?;
                    (target, Out::Syslog(syslog::Header::new(c.facility, c.hostname.as_deref(), &c.app_name), w))
                }
                Kind::Webhook(c) => {
                    let target = webhook::target(&c.url);
                    let poster = webhook::Poster::new(c.url.clone(), c.headers.clone(), c.queue.timeout);
                    let q = &c.queue;
                    let w = Worker::spawn(&s.name, poster, q.size, q.batching, q.retry, stats.clone())
                        .map_err(|e| open_err(&target, e))?;
                    (target, Out::Webhook(w))
                }
            };
            info!(sink = %s.name, kind = s.type_name(), %target, "sink open");
            entries.push(Entry {
                name: s.name.clone(),
                kind: s.type_name(),
                target,
                filter: s.filter.clone(),
                out,
                stats,
                reported: None,
                seen: (0, 0, 0),
            });
        }
        let needs_value = entries.iter().any(|e| {
            e.filter != Filter::default()
                || match &e.out {
                    Out::Local(s) => s.format() != Format::Json,
                    Out::Syslog(..) => true,
                    Out::Webhook(_) => false,
                }
        });
        Ok(Sinks { entries, needs_value })
    }

    /// Hands a record to every sink that takes it.
    pub fn write<T: serde::Serialize>(&mut self, rec: &T) {
        if !self.needs_value {
            // No filter, so every sink takes it; and none is `audit` (they come as values).
            let text = match serde_json::to_string(rec) {
                Ok(t) => t,
                Err(e) => return error!(error = %e, "a record could not be serialized; skipped"),
            };
            for e in &mut self.entries {
                match &mut e.out {
                    Out::Local(sink) => account(&e.name, &e.stats, &mut e.reported, sink.write_json(&text)),
                    Out::Webhook(w) => w.push(text.clone()),
                    Out::Syslog(..) => {}
                }
            }
            return;
        }
        let value = match serde_json::to_value(rec) {
            Ok(v) => v,
            Err(e) => return error!(error = %e, "a record could not be serialized; skipped"),
        };
        self.write_value(&value);
    }

    pub fn write_value(&mut self, value: &Value) {
        // Serialized once, for every sink that wants the JSON text.
        let mut json: Option<String> = None;
        for e in &mut self.entries {
            if !e.filter.matches(value) {
                continue;
            }
            let text = json.get_or_insert_with(|| value.to_string());
            match &mut e.out {
                Out::Local(sink) => account(&e.name, &e.stats, &mut e.reported, sink.write_value(value, text)),
                Out::Syslog(h, w) => w.push(h.format(value, text)),
                Out::Webhook(w) => w.push(text.clone()),
            }
        }
    }

    /// After each batch of records: local sinks are flushed (and a rotated file reopened).
    pub fn flush(&mut self) {
        for e in &mut self.entries {
            if let Out::Local(sink) = &mut e.out {
                account(&e.name, &e.stats, &mut e.reported, sink.flush());
            }
        }
    }

    /// Every second: the counters into `/metrics`.
    pub fn publish(&mut self, m: &Metrics) {
        for e in &mut self.entries {
            let s = &e.stats;
            let now = (s.written.load(Relaxed), s.dropped.load(Relaxed), s.failed.load(Relaxed));
            let l = [e.name.as_str()];
            m.sink_written.with_label_values(&l).inc_by(now.0.saturating_sub(e.seen.0));
            m.sink_dropped.with_label_values(&l).inc_by(now.1.saturating_sub(e.seen.1));
            m.sink_failed.with_label_values(&l).inc_by(now.2.saturating_sub(e.seen.2));
            m.sink_queued.with_label_values(&l).set(i64::try_from(s.queued.load(Relaxed)).unwrap_or(i64::MAX));
            e.seen = now;
        }
    }

    /// Each sink's state, for `egress-agent status`.
    pub fn health(&self) -> Vec<SinkHealth> {
        self.entries
            .iter()
            .map(|e| {
                let s = &e.stats;
                let queued = s.queued.load(Relaxed);
                let capacity_left = match &e.out {
                    Out::Local(_) => true,
                    Out::Syslog(_, w) | Out::Webhook(w) => queued < w.capacity() as u64,
                };
                SinkHealth {
                    name: e.name.clone(),
                    kind: e.kind,
                    target: e.target.clone(),
                    written: s.written.load(Relaxed),
                    dropped: s.dropped.load(Relaxed),
                    failed: s.failed.load(Relaxed),
                    queued,
                    last_error: s.last_error(),
                    healthy: s.is_ok() && capacity_left,
                }
            })
            .collect()
    }

    /// The agent is stopping: local sinks are flushed, queued ones given a few seconds to
    /// deliver what they hold.
    pub fn close(&mut self) {
        self.flush();
        let deadline = Instant::now() + CLOSE_WAIT;
        for e in &mut self.entries {
            if let Out::Syslog(_, w) | Out::Webhook(w) = &mut e.out {
                if !w.close(deadline) {
                    warn!(sink = %e.name, queued = e.stats.queued.load(Relaxed), "sink did not deliver everything before the agent stopped");
                }
            }
        }
        for h in self.health() {
            info!(sink = %h.name, kind = h.kind, target = %h.target, written = h.written, dropped = h.dropped, failed = h.failed, last_error = h.last_error.as_deref().unwrap_or(""), "sink closed");
        }
    }
}

/// Counts what a local sink's write did. Failures are counted and logged now and then, never
/// fatal: stopping would detach the programs, and a full disk must not turn enforcement off.
/// The records a failed write lost (never part of one: see `json`) are counted as dropped.
fn account(name: &str, stats: &Stats, reported: &mut Option<Instant>, o: json::Outcome) {
    let was_ok = stats.is_ok();
    if o.written > 0 {
        stats.delivered(o.written);
    }
    let Some(e) = o.error else {
        if !was_ok && o.written > 0 {
            *reported = None;
            info!(sink = name, lost = stats.dropped.load(Relaxed), "writing events again");
        }
        return;
    };
    stats.failure(e.to_string());
    stats.lost(o.lost);
    if reported.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
        *reported = Some(Instant::now());
        error!(sink = name, error = %e, failed_writes = stats.failed.load(Relaxed), lost = stats.dropped.load(Relaxed), "writing events failed (no line is left half-written; the records lost are counted); enforcement continues");
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::json;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ea-fanout-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn file(name: &str, path: &Path, verdicts: &[&str]) -> SinkSpec {
        SinkSpec {
            name: name.to_owned(),
            filter: Filter { verdicts: verdicts.iter().map(|v| (*v).to_owned()).collect(), ..Filter::default() },
            kind: Kind::File { path: path.to_owned(), format: None, follow_symlinks: false },
        }
    }

    fn records() -> Vec<Value> {
        vec![
            json!({"ts": "t", "kind": "connect", "verdict": "deny", "x": 1.5}),
            json!({"ts": "t", "kind": "connect", "verdict": "allow"}),
            json!({"ts": "t", "kind": "anomaly", "vendor": "stripe"}),
        ]
    }

    #[test]
    fn each_sink_gets_what_its_filter_takes_and_counts_it() {
        let d = dir("filter");
        let (all, denied) = (d.join("all.jsonl"), d.join("denied.jsonl"));
        let mut s = Sinks::open(&[file("events", &all, &[]), file("denied", &denied, &["deny"])], false).expect("open");
        assert!(s.needs_value);
        for r in records() {
            s.write(&r);
        }
        s.write_value(&json!({"ts": "t", "kind": "audit", "audit": "agent_stop", "detail": {}}));
        s.close();
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        assert_eq!(read(&all).lines().count(), 3, "no audit without asking");
        assert_eq!(read(&denied), format!("{}\n", records()[0]));
        let h = s.health();
        assert_eq!((h[0].name.as_str(), h[0].kind, h[0].written, h[0].healthy), ("events", "file", 3, true));
        assert_eq!((h[1].written, h[1].dropped, h[1].failed), (1, 0, 0));
        assert_eq!(h[1].target, denied.display().to_string());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_fast_path_writes_what_the_general_one_does() {
        let d = dir("fast");
        let (fast, general) = (d.join("fast.jsonl"), d.join("general.jsonl"));
        let mut f = Sinks::open(&[file("events", &fast, &[])], false).expect("open");
        assert!(!f.needs_value);
        let mut g =
            Sinks::open(&[file("events", &general, &[]), file("x", &d.join("x"), &["deny"])], false).expect("open");
        for r in records() {
            f.write(&r);
            g.write(&r);
        }
        f.close();
        g.close();
        assert_eq!(std::fs::read(&fast).expect("fast"), std::fs::read(&general).expect("general"));
        let _ = std::fs::remove_dir_all(d);
    }
}
