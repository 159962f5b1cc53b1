//! The kernel side as the agent drives it: the running kernel's field offsets (`btf`), loading,
//! attaching and installing policies (`datapath`), the flow and block tables (`flows`), the
//! counters it keeps (`counters`), and the pinned datapath (`pin`, `adopt`, `layout`).

mod adopt;
pub mod btf;
pub mod counters;
mod datapath;
pub mod exec_ids;
pub mod flows;
mod kills;
mod layout;
pub mod pin;
pub mod tables;

pub use datapath::{Datapath, DatapathError};
