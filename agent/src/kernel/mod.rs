//! The kernel side as the agent drives it: the running kernel's field offsets (`btf`), loading,
//! attaching and installing policies (`datapath`), and the flow and block tables (`flows`).

pub mod btf;
mod datapath;
mod flows;

pub use datapath::{Datapath, DatapathError};
