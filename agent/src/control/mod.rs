//! How the agent is operated and held to account: the audit trail (`audit`), the admin socket
//! (`admin`) and the verbs it serves (`verbs`), the incident kill switch (`killswitch`), and the
//! last hour's counters `status` shows (`recent`).

pub mod admin;
pub mod audit;
pub mod killswitch;
pub mod recent;
pub mod verbs;
