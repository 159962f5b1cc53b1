//! Where records go: any number of sinks at once (`fanout`), each with a filter: JSON lines or
//! text to stdout or a file, syslog, a webhook; and the Prometheus metrics.

pub mod fanout;
pub mod filter;
pub mod health;
pub mod json;
pub mod metrics;
pub mod probes;
pub mod spec;
pub mod syslog;
pub mod text;
pub mod webhook;
pub mod worker;
