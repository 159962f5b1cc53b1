//! How the agent is operated and held to account: the audit trail (`audit`).

pub mod audit;
