//! The webhook sink: records POSTed as JSON arrays (`[rec, rec, ...]`) by a blocking HTTP client
//! on the sink's own thread (see `worker` for the queue, batches, retries and order).
//!
//! A 2xx is delivered; a 408, 429, 5xx or a transport error (refused, reset, timed out) is
//! retried with backoff; any other status means the receiver refuses the content, and retrying
//! would not change that: the batch is dropped and counted. Redirects are not followed, so the
//! headers (often an `Authorization`) never go to a host the configuration did not name.
//! Neither the headers nor the URL's credentials or query appear in logs or `status`.

use std::{collections::BTreeMap, fmt, time::Duration};

use super::worker::{Deliver, Failure};

/// A value kept out of `Debug` output, logs and `status` (a header's value: a bearer token).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A URL the webhook may post to: http or https, with a host.
pub fn check_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{}` is not a URL: {e}", redact(s)))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("the scheme must be http or https, not `{}`", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(u)
}

/// The URL without credentials, query or fragment: what logs and `status` show.
pub fn target(u: &url::Url) -> String {
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}{}", u.scheme(), u.host_str().unwrap_or(""), u.path())
}

/// A string that failed to parse as a URL, shown up to any credentials or query.
fn redact(s: &str) -> String {
    let s = s.split(['?', '#']).next().unwrap_or("");
    match s.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.rsplit_once('@').map_or(rest, |(_, h)| h)),
        None => s.rsplit_once('@').map_or(s, |(_, h)| h).to_owned(),
    }
}

pub struct Poster {
    agent: ureq::Agent,
    url: url::Url,
    headers: BTreeMap<String, Secret>,
}

impl Poster {
    pub fn new(url: url::Url, headers: BTreeMap<String, Secret>, timeout: Duration) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .redirects(0)
            .user_agent(concat!("egress-agent/", env!("CARGO_PKG_VERSION")));
        Poster { agent: agent.build(), url, headers }
    }
}

/// The body for a batch of records, each already JSON text.
pub fn body(batch: &[String]) -> String {
    let mut b = String::with_capacity(batch.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    b.push('[');
    for (i, r) in batch.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push_str(r);
    }
    b.push(']');
    b
}

/// Worth retrying: the receiver is busy or broken now, not refusing this content.
pub fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

impl Deliver for Poster {
    fn deliver(&mut self, batch: &[String]) -> Result<(), Failure> {
        let mut req = self.agent.request_url("POST", &self.url).set("Content-Type", "application/json");
        for (k, v) in &self.headers {
            req = req.set(k, &v.0);
        }
        match req.send_string(&body(batch)) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, _)) => {
                Err(Failure { sent: 0, retry: retryable(code), message: format!("HTTP {code}") })
            }
            // The transport error's own Display names the URL (with its query): say only what
            // kind of failure it was, and the URL as `target` shows it if the detail names it.
            Err(ureq::Error::Transport(t)) => {
                let message = match t.message() {
                    Some(m) => format!("{}: {m}", t.kind()).replace(self.url.as_str(), &target(&self.url)),
                    None => t.kind().to_string(),
                };
                Err(Failure { sent: 0, retry: true, message })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_secrets() {
        let u = check_url("https://user:pw@siem.example:8443/hook?token=abc#x").expect("valid");
        assert_eq!(target(&u), "https://siem.example:8443/hook");
        assert!(check_url("ftp://x/y").expect_err("scheme").contains("http or https"));
        let e = check_url("https://user:pw@[bad/x?token=abc").expect_err("bad");
        assert!(!e.contains("pw") && !e.contains("abc"), "{e}");
        assert_eq!(format!("{:?}", Secret("Bearer t0ken".into())), "<redacted>");
    }

    #[test]
    fn a_batch_is_one_json_array_in_order() {
        let b = body(&[r#"{"a":1}"#.to_owned(), r#"{"b":2}"#.to_owned()]);
        assert_eq!(b, r#"[{"a":1},{"b":2}]"#);
        let v: serde_json::Value = serde_json::from_str(&body(&[])).expect("json");
        assert_eq!(v, serde_json::json!([]));
    }

    #[test]
    fn only_busy_or_broken_receivers_are_retried() {
        assert!(retryable(503) && retryable(429) && retryable(408) && retryable(500));
        assert!(!retryable(400) && !retryable(401) && !retryable(404) && !retryable(301));
    }
}
