//! Domains: names as policies write them, the stable ids the kernel learns addresses under, the
//! host build of the kernel's wire parser, and the names each process resolved.

pub mod event;
pub mod ids;
pub mod name;
pub mod names;
pub mod registrable;
#[cfg(test)]
mod wire;
