//! Builds the kernel programs (agent-ebpf) for the BPF target with the nightly toolchain and
//! bpf-linker, so that the agent binary can embed the object: one self-contained binary to ship.
use anyhow::{anyhow, Context as _};
use aya_build::{build_ebpf, Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent directory"))?
        .join("agent-ebpf");
    let root = root.to_str().context("non-UTF-8 path to agent-ebpf")?.to_owned();
    build_ebpf([Package { name: "agent-ebpf", root_dir: &root, ..Default::default() }], Toolchain::Nightly)
        .context("building the kernel programs failed; run `cargo xtask setup` first")
}
