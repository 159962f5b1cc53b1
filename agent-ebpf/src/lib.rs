//! Exists so that the agent can list this crate as a build-dependency (cargo then rebuilds the
//! agent when the kernel programs change); the programs themselves are the `agent-ebpf` binary.
#![no_std]
