//! Where records go.

pub mod json;
pub mod metrics;
pub mod text;
