//! Diagnostics go to stderr through tracing; the event stream (stdout or --events) stays clean.
//! `EGRESS_AGENT_LOG` sets the filter (default `info`), `EGRESS_AGENT_LOG_FORMAT=json` switches
//! to JSON lines for log shippers.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("EGRESS_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: journald, files and log shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let json = std::env::var("EGRESS_AGENT_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // A second init (tests) fails harmlessly.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
