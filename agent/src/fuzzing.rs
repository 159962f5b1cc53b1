//! Entry points for the fuzz targets (`fuzz/`): each takes untrusted input the way the agent
//! does and must return, whatever the bytes, without panicking, hanging or growing without bound.
//! They touch no files: the policy's process selectors resolve against a fixed fake host (the
//! real resolver would expand `exe` globs on this machine's disk).

use std::sync::OnceLock;

use crate::{
    dns,
    events::{self, connect, enrich::Enriched},
    policy::{
        self,
        compile::CompiledPolicy,
        resolve::{ExeFile, Resolver},
    },
};

/// A fixed instant, so that a run is reproducible (approvals expire against it).
fn now() -> time::OffsetDateTime {
    time::macros::datetime!(2026-01-01 00:00 UTC)
}

/// Resolves every selector to one made-up answer; an `exe` pattern is still parsed as a glob,
/// which is the part of resolution the policy's text controls.
struct FakeHost;

impl Resolver for FakeHost {
    fn exes(&self, pattern: &str) -> Result<Vec<ExeFile>, String> {
        glob::Pattern::new(pattern).map_err(|e| e.to_string())?;
        Ok(vec![ExeFile { path: pattern.to_owned(), dev: 1, ino: 2, gen: None, script: false }])
    }

    fn user(&self, name: &str) -> Option<u32> {
        (name == "root").then_some(0).or_else(|| name.parse().ok())
    }

    fn cgroup(&self, path: &str) -> Option<(u64, u32)> {
        path.starts_with('/').then(|| (path.len() as u64, path.matches('/').count() as u32))
    }
}

/// A policy file's text as `check` reads it: parsed, merged, compiled (tables, shadowing).
pub fn policy(text: &str) {
    let files = [("policy.yaml".to_owned(), text.to_owned())];
    let _ = policy::load_texts(&files, now(), &FakeHost);
}

/// The embedded default policy, compiled once: the event target names rules against it.
fn default_policy() -> &'static CompiledPolicy {
    static P: OnceLock<CompiledPolicy> = OnceLock::new();
    P.get_or_init(|| match policy::load(&[], now(), &FakeHost) {
        Ok((_, compiled, _)) => compiled,
        Err(e) => panic!("the embedded default policy does not compile: {e}"),
    })
}

/// One ring-buffer record as the pipeline takes it: decoded, then written as a JSON record
/// (a DNS event's message decoded by hickory-proto, its name read as a domain pattern).
pub fn event(bytes: &[u8]) {
    let policy = default_policy();
    let who = Enriched::default();
    match events::decode(bytes) {
        Some(events::Record::Connect(ev)) => {
            let names = connect::RuleNames::of(&ev, Some(policy));
            let rec = connect::record(&ev, &who, &names, 0, None, None);
            let _ = serde_json::to_vec(&rec);
        }
        Some(events::Record::Dns(d)) => {
            let name = dns::event::query_name(&d);
            let _ = dns::event::answer_addrs(&d);
            let _ = dns::event::identity(&d);
            let rec = dns::event::record(&d, &who, Some(policy), Some(name), 0);
            let _ = serde_json::to_vec(&rec);
        }
        Some(events::Record::Exec(ex)) => {
            let _ = events::c_str(&ex.filename);
        }
        Some(events::Record::FlowEnd(_)) | None => {}
    }
}

/// The agent's configuration file as `run` and `check --config` read it: parsed and checked,
/// then the parts resolved at start (sinks, the metrics address, a policy bundle URL).
pub fn config(text: &str) {
    let Ok(c) = crate::config::AgentConfig::parse("agent.yaml", text) else { return };
    let _ = crate::sinks::spec::resolve(None, None, c.events.as_deref(), c.sinks.as_deref());
    if let Some(m) = &c.metrics {
        let _ = crate::cli::metrics_addr(m.listen());
    }
    let _ = crate::central::location(&c.policy);
}
