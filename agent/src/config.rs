//! The agent's own configuration (`--config FILE`): everything that is not policy. YAML like the
//! policy; unknown keys are refused with their place. Every command-line flag overrides the file,
//! and with no file the defaults apply.
//!
//! ```yaml
//! policy: [/etc/egress-agent/policy.d]   # or one bundle URL: [https://host/bundle.json]
//! policyFileMaxBytes: 8388608            # the largest policy file read
//! policySource: {publicKey: /etc/egress-agent/policy.pub, interval: 60s, timeout: 10s, maxBytes: 8388608, minSerial: 42}
//! cgroup: /system.slice
//! state: /var/lib/egress-agent
//! events: /var/log/egress-agent/events.jsonl
//! eventsFollowSymlinks: false                # a symlink at `events` is refused unless true
//! cmdline: false
//! ringBytes: 4194304
//! maxFlows: 131072
//! flowUpdate: 60
//! eventsPerKey: 5
//! metrics: 127.0.0.1:9464
//! admin: /run/egress-agent/admin.sock
//! pinDir: /sys/fs/bpf/egress-agent
//! failMode: closed
//! kubernetes: {pods: api}     # pod namespace, name, labels (see kube::KubeConfig)
//! sinks:                      # see sinks::spec; README "Sinks"
//!   - {type: syslog, address: unix:///dev/log}
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    /// Policy files or directories (as `--policy`).
    #[serde(default)]
    pub policy: Vec<PathBuf>,
    /// The largest policy file read, in bytes (`--policy-file-max-bytes`; default 8 MiB).
    pub policy_file_max_bytes: Option<u64>,
    /// How a policy bundle URL in `policy` is fetched and verified (README "Central policy").
    pub policy_source: Option<crate::central::SourceConfig>,
    pub cgroup: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub events: Option<PathBuf>,
    /// `events` may be a symbolic link (`--events-follow-symlinks`; by default one is refused).
    pub events_follow_symlinks: Option<bool>,
    /// Command lines in events (default true; `--no-cmdline` turns them off).
    pub cmdline: Option<bool>,
    pub ring_bytes: Option<u32>,
    pub max_flows: Option<u32>,
    /// Seconds.
    pub flow_update: Option<u64>,
    pub events_per_key: Option<u32>,
    /// Where `/metrics` is served: `ADDR:PORT`, or `off` (default `127.0.0.1:9464`); also
    /// written `metrics: {listen: ADDR:PORT}`.
    pub metrics: Option<MetricsConfig>,
    /// The admin socket's path, or `off` (default `/run/egress-agent/admin.sock`).
    pub admin: Option<PathBuf>,
    /// The bpffs directory the datapath is pinned in, or `off` (default
    /// `/sys/fs/bpf/egress-agent`).
    pub pin_dir: Option<PathBuf>,
    /// What a deliberate stop does with the pinned datapath: `open` (default) or `closed`.
    pub fail_mode: Option<crate::kernel::pin::FailMode>,
    /// Where the host's files are mounted when the agent runs in a container (`/host` in the
    /// DaemonSet): `exe` selectors are looked up there.
    pub host_root: Option<PathBuf>,
    /// Where pod names, namespaces and labels come from on Kubernetes (README "Kubernetes").
    pub kubernetes: Option<crate::kube::KubeConfig>,
    /// Where records go besides (or instead of) `events` (README "Sinks"; `sinks::spec::resolve`
    /// says how this combines with `--events` and `--format`).
    pub sinks: Option<Vec<crate::sinks::spec::SinkConfig>>,
}

/// `metrics: ADDR:PORT` or `metrics: {listen: ADDR:PORT}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged, expecting = "ADDR:PORT, `off`, or {listen: ADDR:PORT}")]
pub enum MetricsConfig {
    Addr(String),
    Table(MetricsTable),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsTable {
    pub listen: String,
}

impl MetricsConfig {
    pub fn listen(&self) -> &str {
        match self {
            MetricsConfig::Addr(a) => a,
            MetricsConfig::Table(t) => &t.listen,
        }
    }
}

/// The largest configuration file read: it is a few lines; what is larger is a mistake.
const MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Read { path: String, source: crate::policy::files::ReadError },
    #[error("{path}:{line}:{column}: error: {field}: {message}")]
    Invalid { path: String, line: usize, column: usize, field: String, message: String },
}

impl AgentConfig {
    /// Reads and checks `path` (a regular file, as policy files are). An empty file is the
    /// defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use crate::policy::files::{read_text, ReadError};
        let name = path.display().to_string();
        let text = read_text(path, MAX_BYTES).map_err(|source| match source {
            ReadError::NotUtf8 { pos, .. } => ConfigError::Invalid {
                path: name.clone(),
                line: pos.line,
                column: pos.column,
                field: "(document)".to_owned(),
                message: source.to_string(),
            },
            source => ConfigError::Read { path: name.clone(), source },
        })?;
        Self::parse(&name, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        // Before serde_yaml_ng reads it: deep nesting costs its parser quadratic time.
        crate::policy::locate::check_depth(text).map_err(|deep| ConfigError::Invalid {
            path: file.to_owned(),
            line: deep.pos.line,
            column: deep.pos.column,
            field: "(document)".to_owned(),
            message: deep.to_string(),
        })?;
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let c: Self = serde_path_to_error::deserialize(de).map_err(|err| {
            let field = match err.path().to_string() {
                p if p == "." || p.is_empty() => "(document)".to_owned(),
                p => p,
            };
            let inner = err.into_inner();
            let (line, column) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = inner.to_string();
            // serde_yaml_ng appends the place and starts with the path; the error shows both.
            let message = message.rfind(" at line ").map_or(message.clone(), |i| message[..i].to_owned());
            // serde_yaml_ng's own path may be shorter than serde_path_to_error's (`sinks` for
            // `sinks[0]`, whose entry is checked as a whole): drop it whenever it is a prefix.
            let message = match message.split_once(": ") {
                Some((head, rest)) if !head.contains(' ') && field.starts_with(head) => rest.to_owned(),
                _ => message,
            };
            ConfigError::Invalid { path: file.to_owned(), line, column, field, message }
        })?;
        c.check(file, text)?;
        Ok(c)
    }

    /// Bounds the command line checks too, with the place of the key.
    fn check(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| {
            // The key's own line (a top-level key: at the start of a line).
            let line = text.lines().position(|l| l.starts_with(&format!("{field}:"))).map_or(0, |i| i + 1);
            ConfigError::Invalid { path: file.to_owned(), line, column: 1, field: field.to_owned(), message }
        };
        if let Some(n) = self.policy_file_max_bytes {
            crate::cli::check_policy_file_max_bytes(n).map_err(|e| bad("policyFileMaxBytes", e))?;
        }
        if let Some(n) = self.ring_bytes {
            if n < 4096 || !n.is_power_of_two() {
                return Err(bad("ringBytes", format!("{n} is not a power of two of at least 4096")));
            }
        }
        if let Some(m) = &self.metrics {
            crate::cli::metrics_addr(m.listen()).map_err(|e| bad("metrics", e))?;
        }
        if let Some(list) = &self.sinks {
            // Names are settled with the flags in `resolve`; duplicates are caught here already.
            crate::sinks::spec::resolve(None, None, self.events.as_deref(), Some(list)).map_err(|e| bad("sinks", e))?;
        }
        if let Some(n) = self.max_flows {
            if !(16..=(1 << 22)).contains(&n) {
                return Err(bad("maxFlows", format!("{n} is not between 16 and 4194304")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key_and_defaults_when_empty() {
        let c = AgentConfig::parse(
            "a.yaml",
            "policy: [/etc/p.yaml, /etc/p.d]\ncgroup: /system.slice\nstate: /var/lib/ea\nevents: '-'\neventsFollowSymlinks: true\ncmdline: false\nringBytes: 8192\nmaxFlows: 1024\nflowUpdate: 30\neventsPerKey: 0\n",
        )
        .expect("valid");
        assert_eq!(c.policy, [PathBuf::from("/etc/p.yaml"), PathBuf::from("/etc/p.d")]);
        assert_eq!(c.events_follow_symlinks, Some(true));
        assert_eq!(
            (c.cmdline, c.ring_bytes, c.max_flows, c.flow_update, c.events_per_key),
            (Some(false), Some(8192), Some(1024), Some(30), Some(0))
        );
        assert_eq!(AgentConfig::parse("a.yaml", "\n").expect("empty"), AgentConfig::default());
    }

    #[test]
    fn a_policy_url_and_its_source_settings() {
        let c = AgentConfig::parse(
            "a.yaml",
            "policy: [https://p.example/b.json]\npolicySource: {publicKey: /etc/ea/p.pub, interval: 30s, timeout: 5s, maxBytes: 65536}\n",
        )
        .expect("valid");
        let s = c.policy_source.expect("policySource");
        assert_eq!((s.public_key, s.max_bytes), (Some(PathBuf::from("/etc/ea/p.pub")), Some(65536)));
        let e = AgentConfig::parse("a.yaml", "policySource: {interval: 0s}\n").expect_err("zero").to_string();
        assert!(e.starts_with("a.yaml:1:") && e.contains("policySource.interval"), "{e}");
    }

    #[test]
    fn metrics_is_an_address_or_a_listen_table_and_admin_a_path() {
        let c =
            AgentConfig::parse("a.yaml", "metrics: {listen: '127.0.0.1:9500'}\nadmin: /run/ea.sock\n").expect("valid");
        assert_eq!(c.metrics.as_ref().map(MetricsConfig::listen), Some("127.0.0.1:9500"));
        assert_eq!(c.admin, Some(PathBuf::from("/run/ea.sock")));
        let c = AgentConfig::parse("a.yaml", "metrics: 'off'\n").expect("valid");
        assert_eq!(c.metrics.as_ref().map(MetricsConfig::listen), Some("off"));
        let e = AgentConfig::parse("a.yaml", "metrics: {listen: nowhere}\n").expect_err("bad").to_string();
        assert!(e.starts_with("a.yaml:1:1: error: metrics:") && e.contains("nowhere"), "{e}");
        let e = AgentConfig::parse("a.yaml", "metrics: {listn: '127.0.0.1:1'}\n").expect_err("bad").to_string();
        assert!(e.contains("a.yaml:1:") && e.contains("metrics"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_place() {
        let e = AgentConfig::parse("a.yaml", "state: /x\nmetricz: 1\n").expect_err("unknown").to_string();
        assert!(e.starts_with("a.yaml:2:1: error:") && e.contains("unknown field `metricz`"), "{e}");
        let e = AgentConfig::parse("a.yaml", "maxFlows: many\n").expect_err("bad").to_string();
        assert!(e.contains("a.yaml:1:") && e.contains("maxFlows"), "{e}");
        let e = AgentConfig::parse("a.yaml", "ringBytes: 5000\n").expect_err("bounds").to_string();
        assert!(e.starts_with("a.yaml:1:1: error: ringBytes:") && e.contains("power of two"), "{e}");
    }

    #[test]
    fn the_policy_file_cap_is_read_and_bounded() {
        let c = AgentConfig::parse("a.yaml", "policyFileMaxBytes: 65536\n").expect("valid");
        assert_eq!(c.policy_file_max_bytes, Some(65536));
        let e = AgentConfig::parse("a.yaml", "state: /s\npolicyFileMaxBytes: 10\n").expect_err("small").to_string();
        assert!(e.starts_with("a.yaml:2:1: error: policyFileMaxBytes: 10 is not between 1024"), "{e}");
    }

    #[test]
    fn the_file_is_read_within_bounds_and_a_bad_byte_placed() {
        let dir = std::env::temp_dir().join(format!("ea-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("agent.yaml");
        std::fs::write(&f, b"state: /s\ncgroup: /caf\xe9\n").expect("write");
        let e = AgentConfig::load(&f).expect_err("latin-1").to_string();
        assert!(e.starts_with(&format!("{}:2:13: error: (document): not UTF-8", f.display())), "{e}");
        let zero = dir.join("zero.yaml");
        let _ = std::fs::remove_file(&zero);
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let e = AgentConfig::load(&zero).expect_err("device").to_string();
        assert!(e.contains("a character device (a symbolic link to /dev/zero), not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn deep_nesting_is_refused_with_its_place_before_parsing() {
        let started = std::time::Instant::now();
        let e = AgentConfig::parse("a.yaml", &format!("sinks: {}", "[".repeat(200_000))).expect_err("deep").to_string();
        assert!(e.starts_with("a.yaml:1:71: error: (document): nested deeper than 64 levels"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn sinks_are_read_and_their_mistakes_placed() {
        let c = AgentConfig::parse(
            "a.yaml",
            "events: /e.jsonl\nsinks:\n  - type: syslog\n    address: udp://127.0.0.1:514\n  - type: webhook\n    url: https://h/x\n",
        )
        .expect("valid");
        assert_eq!(c.sinks.as_ref().map(Vec::len), Some(2));
        let e =
            AgentConfig::parse("a.yaml", "sinks:\n  - type: syslog\n    adress: x\n").expect_err("typo").to_string();
        assert!(e.starts_with("a.yaml:3:5: error: sinks[0].adress: unknown field `adress`"), "{e}");
        let e = AgentConfig::parse("a.yaml", "sinks:\n  - type: webhook\n    url: ftp://x/\n")
            .expect_err("scheme")
            .to_string();
        assert!(e.starts_with("a.yaml:2:3: error: sinks[0]: url: the scheme must be http or https"), "{e}");
        let e = AgentConfig::parse("a.yaml", "sinks:\n  - {type: stdout, name: a}\n  - {type: stdout, name: a}\n")
            .expect_err("dup")
            .to_string();
        assert!(e.starts_with("a.yaml:1:1: error: sinks:") && e.contains("named `a`"), "{e}");
    }
}
