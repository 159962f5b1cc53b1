//! Fetching a bundle: over HTTP(S) with `If-None-Match`, or from a file, within limits. A server
//! that hangs or trickles is cut off at the timeout (it bounds the whole request, body
//! included), a redirect loop after a few hops, and a body larger than the cap as soon as the cap
//! is passed: announced by Content-Length or streamed, no more than the cap is ever read.

use std::{
    io::Read as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::sinks::webhook::target;

/// Redirects followed (a CDN or a moved bucket needs one or two; a loop is cut off here).
pub const MAX_REDIRECTS: u32 = 5;

/// Where bundles come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Http(url::Url),
    File(PathBuf),
}

impl Location {
    /// A `--policy` value that names a bundle (`https://`, `http://`, `file://`), else None.
    pub fn parse(s: &str) -> Option<Result<Self, String>> {
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Some(Err(format!("`{s}`: a file:// URL needs an absolute path (file:///etc/…)")));
            }
            return Some(Ok(Location::File(PathBuf::from(path))));
        }
        if !(s.starts_with("https://") || s.starts_with("http://")) {
            return None;
        }
        Some(crate::sinks::webhook::check_url(s).map(Location::Http))
    }

    /// Plain HTTP: anyone on the path can change what it carries.
    pub fn is_plain_http(&self) -> bool {
        matches!(self, Location::Http(u) if u.scheme() == "http")
    }
}

impl std::fmt::Display for Location {
    /// Without credentials or query (they may carry a token).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Http(u) => f.write_str(&target(u)),
            Location::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For the whole request: connecting, the answer, and the body.
    pub timeout: Duration,
    pub max_bytes: u64,
}

/// What a fetch brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// 304, or the same bytes as last time.
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no complete answer within {0:?} (policySource.timeout): the server hangs or is too slow; cut off")]
    TimedOut(Duration),
    #[error("too many redirects (at most {MAX_REDIRECTS}; a redirect loop?); cut off")]
    TooManyRedirects,
    #[error("the server announces {announced} bytes, more than policySource.maxBytes ({max}); not read")]
    Announced { announced: u64, max: u64 },
    #[error("the bundle is larger than policySource.maxBytes ({max} bytes); cut off after {max} bytes")]
    TooLarge { max: u64 },
    #[error("HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Transport(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

pub struct Fetcher {
    pub location: Location,
    limits: Limits,
    agent: ureq::Agent,
}

impl Fetcher {
    pub fn new(location: Location, limits: Limits) -> Self {
        // An https source never follows a redirect to plain http: that would let whoever is on
        // the path serve the bundle (and, without a key, bypass the rule that plain http needs
        // one).
        let https = matches!(&location, Location::Http(u) if u.scheme() == "https");
        let agent = ureq::AgentBuilder::new()
            .timeout(limits.timeout)
            .redirects(MAX_REDIRECTS)
            .https_only(https)
            .user_agent(concat!("egress-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Fetcher { location, limits, agent }
    }

    /// Fetches the bundle; `etag`: what the last answer's ETag was.
    pub fn fetch(&self, etag: Option<&str>) -> Result<Fetched, FetchError> {
        match &self.location {
            Location::File(p) => self.read_file(p),
            Location::Http(u) => self.get(u, etag),
        }
    }

    fn read_file(&self, path: &std::path::Path) -> Result<Fetched, FetchError> {
        let err = |e: std::io::Error| FetchError::File { path: path.display().to_string(), message: e.to_string() };
        let f = std::fs::File::open(path).map_err(err)?;
        let bytes = read_capped(f, self.limits.max_bytes, None).map_err(|e| match e {
            FetchError::Transport(m) => FetchError::File { path: path.display().to_string(), message: m },
            other => other,
        })?;
        Ok(Fetched::Body { bytes, etag: None })
    }

    fn get(&self, url: &url::Url, etag: Option<&str>) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let mut req = self.agent.request_url("GET", url).set("Accept", "application/json");
        if let Some(e) = etag {
            req = req.set("If-None-Match", e);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => return Err(FetchError::Status(code)),
            Err(ureq::Error::Transport(t)) => return Err(self.transport(&t, url)),
        };
        match resp.status() {
            304 => return Ok(Fetched::NotModified),
            200 => {}
            code => return Err(FetchError::Status(code)),
        }
        let max = self.limits.max_bytes;
        if let Some(announced) = resp.header("Content-Length").and_then(|l| l.trim().parse::<u64>().ok()) {
            if announced > max {
                return Err(FetchError::Announced { announced, max });
            }
        }
        let etag = resp.header("ETag").map(str::to_owned);
        let bytes = read_capped(resp.into_reader(), max, Some((started, self.limits.timeout)))?;
        Ok(Fetched::Body { bytes, etag })
    }

    fn transport(&self, t: &ureq::Transport, url: &url::Url) -> FetchError {
        if t.kind() == ureq::ErrorKind::TooManyRedirects {
            return FetchError::TooManyRedirects;
        }
        let timed_out = std::error::Error::source(t)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock));
        if timed_out {
            return FetchError::TimedOut(self.limits.timeout);
        }
        // The transport error's Display names the URL with its query: show it as `target` does.
        let message = match t.message() {
            Some(m) => format!("{}: {m}", t.kind()),
            None => t.kind().to_string(),
        };
        FetchError::Transport(message.replace(url.as_str(), &target(url)))
    }
}

/// Reads at most `max` bytes; one more is an error, and nothing beyond it is read.
fn read_capped(r: impl std::io::Read, max: u64, deadline: Option<(Instant, Duration)>) -> Result<Vec<u8>, FetchError> {
    let mut bytes = Vec::new();
    match r.take(max.saturating_add(1)).read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
            return Err(FetchError::TimedOut(deadline.map_or(Duration::ZERO, |d| d.1)));
        }
        Err(e) => {
            // ureq reports the deadline passing mid-body as another kind on some paths.
            if let Some((started, limit)) = deadline {
                if started.elapsed() >= limit {
                    return Err(FetchError::TimedOut(limit));
                }
            }
            return Err(FetchError::Transport(format!("reading the body: {e}")));
        }
    }
    if bytes.len() as u64 > max {
        return Err(FetchError::TooLarge { max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_reads_no_more_than_one_byte_past_it() {
        let endless = std::io::repeat(b'x');
        assert_eq!(read_capped(endless, 1000, None), Err(FetchError::TooLarge { max: 1000 }));
        assert_eq!(read_capped(&b"12345"[..], 5, None).expect("at the cap"), b"12345");
        let e = FetchError::TooLarge { max: 8 }.to_string();
        assert!(e.contains("maxBytes") && e.contains("cut off"), "{e}");
    }

    #[test]
    fn policy_values_that_are_sources() {
        assert_eq!(Location::parse("/etc/p.yaml"), None);
        assert_eq!(Location::parse("file:///var/b.json"), Some(Ok(Location::File("/var/b.json".into()))));
        assert!(Location::parse("file://rel/b.json").is_some_and(|r| r.is_err()));
        let u = Location::parse("https://u:pw@h.example/b.json?token=x").and_then(Result::ok).expect("url");
        assert_eq!(u.to_string(), "https://h.example/b.json");
        assert!(!u.is_plain_http());
        assert!(Location::parse("http://127.0.0.1:8/b").and_then(Result::ok).is_some_and(|l| l.is_plain_http()));
    }

    #[test]
    fn a_file_source_is_capped_too() {
        let f = Fetcher::new(
            Location::File("/dev/zero".into()),
            Limits { timeout: Duration::from_secs(1), max_bytes: 4096 },
        );
        assert_eq!(f.fetch(None), Err(FetchError::TooLarge { max: 4096 }));
        let f = Fetcher::new(
            Location::File("/nonexistent/b.json".into()),
            Limits { timeout: Duration::from_secs(1), max_bytes: 4096 },
        );
        assert!(matches!(f.fetch(None), Err(FetchError::File { .. })));
    }
}
