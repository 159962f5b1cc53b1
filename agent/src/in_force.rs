//! The policy in force: installing a compiled policy as a new generation, reloading the files
//! (a bad policy is refused and the running one stays), compiling again when selectors resolve
//! differently or an approval expires, and the generations events may still name.
#![expect(
    clippy::result_large_err,
    reason = "DatapathError wraps aya's large errors (see datapath.rs); these fail rarely and are logged"
)]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use tracing::{debug, error, info, warn};

use crate::{
    dns::ids::DomainIds,
    kernel::{Datapath, DatapathError},
    pipeline::PolicyView,
    policy::{self, compile, CompiledPolicy, Merged, Problem},
};

/// Policies kept to name the rules of events still in the ring buffer after reloads.
const KEEP_GENERATIONS: usize = 4;

pub fn log_warnings(warnings: &[Problem]) {
    for w in warnings {
        warn!(problem = %w, "policy warning");
    }
}

/// The policy in force and the generations events may still name.
pub struct PolicyState {
    pub paths: Vec<PathBuf>,
    pub merged: Merged,
    /// What the selectors of `merged` resolved to when it was last compiled.
    pub fingerprint: compile::Fingerprint,
    /// Set when `merged` is replaced (its selectors may watch other directories).
    pub merged_changed: bool,
    pub resolver: policy::resolve::HostResolver,
    pub generation: u32,
    /// The one in force and the few before it, so that events decided just before a reload
    /// (or a quick series of them) still name their rule.
    pub by_gen: BTreeMap<u32, Arc<CompiledPolicy>>,
    /// Domain pattern ids installed in the kernel, to name them in events.
    pub domain_ids: DomainIds,
    /// `learn`: every policy installed refuses nothing.
    pub monitor_only: bool,
    /// Audit records of installs and refusals, for the loop to write (see `control::audit`).
    pub audit: Vec<(&'static str, serde_json::Value)>,
    /// A central policy source (`--policy https://…`): the policy comes from its bundles, not
    /// from `paths`.
    pub central: Option<crate::central::Central>,
}

impl PolicyState {
    pub fn current(&self) -> &CompiledPolicy {
        &self.by_gen[&self.generation]
    }

    pub fn view(&self) -> PolicyView<'_> {
        PolicyView { by_gen: &self.by_gen, current: self.generation, domain_ids: &self.domain_ids }
    }

    /// Installs `p` as a new generation, unless it is identical to the one in force.
    /// `load_us`: how long reading and compiling took, for the log.
    pub fn install(
        &mut self,
        dp: &mut Datapath,
        merged: Merged,
        mut p: CompiledPolicy,
        why: &str,
        load_us: u64,
    ) -> Result<(), DatapathError> {
        if self.monitor_only {
            p.monitor_only();
        }
        self.fingerprint = p.fingerprint.clone();
        self.merged_changed = true;
        let cur = self.current();
        if cur.tables == p.tables && cur.mode == p.mode && cur.default == p.default && cur.rules == p.rules {
            // Nothing for the kernel; but the name, expiries and summaries may differ: keep the
            // new compilation under the same generation.
            debug!(why, "policy unchanged in the kernel");
            if cur.sha256 != p.sha256 {
                // The text changed (comments, owners, expiries …): still a policy installed.
                self.audit.push((
                    "policy_installed",
                    json!({"why": why, "policy": p.name, "generation": self.generation, "sha256": p.sha256, "kernel": "unchanged"}),
                ));
            }
            self.merged = merged;
            self.by_gen.insert(self.generation, Arc::new(p));
            return Ok(());
        }
        let started = Instant::now();
        let generation = self.generation + 1;
        dp.install(&p, generation)?;
        self.domain_ids = dp.domain_ids().clone();
        let name = p.name.clone();
        // The digest of the text this policy was compiled from, not of the files as they are
        // now (they may have changed since, or be a refused edit).
        let sha256 = p.sha256.clone();
        let prefixes = p.tables.v4.len() + p.tables.v6.len();
        self.generation = generation;
        self.merged = merged;
        self.by_gen.insert(generation, Arc::new(p));
        while self.by_gen.len() > KEEP_GENERATIONS {
            self.by_gen.pop_first();
        }
        let install_us = started.elapsed().as_micros() as u64;
        info!(why, policy = %name, generation, prefixes, load_us, install_us, "policy installed");
        self.audit.push((
            "policy_installed",
            json!({"why": why, "policy": name, "generation": generation, "sha256": sha256}),
        ));
        Ok(())
    }

    /// Reads the files again; a bad policy is refused and the current one stays. Says what
    /// happened, for the admin socket's `reload`.
    pub fn reload(&mut self, dp: &mut Datapath, why: &str) -> Result<&'static str, String> {
        if let Some(c) = &self.central {
            // The poller fetches at once; the loop installs what it brings (`status` shows it).
            info!(why, "fetching the policy bundle now");
            c.poke();
            return Ok("fetch requested");
        }
        if self.paths.is_empty() {
            info!(why, "running the embedded default policy: nothing to reload");
            return Ok("embedded default policy: nothing to reload");
        }
        let started = Instant::now();
        let before = self.generation;
        match policy::load(&self.paths, time::OffsetDateTime::now_utc(), &self.resolver) {
            Ok((merged, compiled, warnings)) => {
                log_warnings(&warnings);
                let load_us = started.elapsed().as_micros() as u64;
                if let Err(e) = self.install(dp, merged, compiled, why, load_us) {
                    error!(error = %e, "installing the policy failed; the previous policy stays in force");
                    return Err(format!("installing the policy failed: {e}; the previous policy stays in force"));
                }
                Ok(if self.generation == before { "unchanged" } else { "installed" })
            }
            Err(e) => {
                error!(why, error = %e, policy = %policy::describe(&self.paths), "policy refused; the previous policy stays in force");
                let sha256 = policy::digest(&self.paths);
                self.audit.push(("reload_refused", json!({"why": why, "error": e.to_string(), "sha256": sha256})));
                Err(format!("policy refused: {e}; the previous policy stays in force"))
            }
        }
    }

    /// Compiles the policy in force again if its selectors now resolve differently (a binary
    /// replaced, a cgroup recreated by a service restart, a user created), or `always` (an
    /// approval expired). Resolving alone is cheap; compiling is done only when needed.
    pub fn recompile(&mut self, dp: &mut Datapath, why: &str, always: bool) {
        let started = Instant::now();
        if !always && compile::selector_fingerprint(&self.merged, &self.resolver) == self.fingerprint {
            return;
        }
        let merged = self.merged.clone();
        match compile::compile(&merged, &self.resolver, time::OffsetDateTime::now_utc()) {
            Ok((compiled, warnings)) => {
                if compiled.tables != self.current().tables {
                    log_warnings(&warnings);
                }
                let load_us = started.elapsed().as_micros() as u64;
                if let Err(e) = self.install(dp, merged, compiled, why, load_us) {
                    error!(error = %e, "installing the policy failed; the previous policy stays in force");
                }
            }
            Err(e) => error!(why, error = %e, "recompiling the policy failed; the previous policy stays in force"),
        }
    }

    /// Time to the next expiry, at least a second: an expiry already past (clock steps) must not
    /// make the loop spin.
    pub fn until_expiry(&self) -> Duration {
        self.current().next_expiry.map_or(Duration::from_secs(24 * 3600), |t| {
            let left = t - time::OffsetDateTime::now_utc();
            Duration::try_from(left)
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600))
        })
    }
}
