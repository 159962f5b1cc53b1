//! What normal egress looks like: the third parties each process talks to (inventory, and the
//! policy `learn` proposes from it), and each integration's rhythm and volume (baselines), with
//! the anomalies that depart from it.

pub mod anomalies;
pub mod blocks;
pub mod inventory;
pub mod learn;
pub mod settings;
pub mod stats;
pub mod watch;
