//! Where records go.

pub mod json;
