//! Provisioning, idempotent: each step checks first and only acts when something is missing,
//! and says what failed and what to do when it cannot act.
//!
//! The kernel programs are built with the nightly toolchain (`-Z build-std=core` for the BPF
//! target needs its rust-src) and linked by bpf-linker. bpf-linker must use the very LLVM the
//! nightly rustc emits bitcode for, so it is built against the nightly's own libLLVM: a prefix
//! directory whose lib/ links to it stands in for an LLVM installation.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::util::{output, run};

/// The kernel programs and the fuzz targets are built with it.
pub const TOOLCHAIN: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM versions bpf-linker 0.13.0 can be built against (its `llvm-<major>` features).
const BPF_LINKER_LLVM: [&str; 3] = ["21", "22", "23"];

pub fn kernel_toolchain() -> Result<()> {
    nightly_with_rust_src()?;
    bpf_linker()
}

fn nightly_with_rust_src() -> Result<()> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the kernel programs (https://rustup.rs)")?;
    // `nightly-<host>` is the channel; a dated `nightly-2026-...` toolchain is another one.
    let channel = format!("{TOOLCHAIN}-");
    let has_channel = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|t| t.strip_prefix(&channel).is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit())));
    if !has_channel {
        run(Command::new("rustup").args(["toolchain", "install", TOOLCHAIN, "--profile", "minimal"]))
            .context("no nightly toolchain, and installing one failed: the kernel programs need nightly Rust")?;
    }
    let comps = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", TOOLCHAIN]))?;
    if !String::from_utf8_lossy(&comps.stdout).lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask setup: adding rust-src to the {TOOLCHAIN} toolchain");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", TOOLCHAIN]))
            .context("adding rust-src to nightly failed: it is needed to build `core` for the BPF target")?;
    }
    Ok(())
}

/// The nightly's libLLVM shared object, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn nightly_libllvm() -> Result<PathBuf> {
    let out = output(Command::new("rustc").args([&format!("+{TOOLCHAIN}"), "--print", "sysroot"]))?;
    let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib");
    let found = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")));
    found.ok_or_else(|| {
        anyhow!("the nightly toolchain has no libLLVM.so.* in {}: cannot build bpf-linker against it", lib.display())
    })
}

/// `22` from `libLLVM.so.22.1-rust-...`.
fn llvm_major(lib: &Path) -> Result<String> {
    let name = lib.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.strip_prefix("libLLVM.so.")
        .and_then(|v| v.split('.').next())
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("cannot read the LLVM version from {name}"))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"))
}

fn bpf_linker() -> Result<()> {
    let libllvm = nightly_libllvm()?;
    // The installed bpf-linker's rpath points into this prefix: it must outlive the build, so it
    // lives beside cargo's own files, not in a temporary directory.
    let prefix = cargo_home().join("egress-agent-llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let own_name = libllvm.file_name().ok_or_else(|| anyhow!("bad libLLVM path"))?;
    for link in [lib.join("libLLVM.so"), lib.join(own_name)] {
        if std::fs::read_link(&link).ok().as_deref() != Some(libllvm.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&libllvm, &link)
                .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
        }
    }
    let installed = Command::new("bpf-linker").arg("--version").output().ok().filter(|o| o.status.success());
    if let Some(o) = installed {
        let v = String::from_utf8_lossy(&o.stdout);
        if v.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
        eprintln!("xtask setup: replacing {} with bpf-linker {BPF_LINKER_VERSION}", v.trim());
    }
    let major = llvm_major(&libllvm)?;
    if !BPF_LINKER_LLVM.contains(&major.as_str()) {
        bail!(
            "the nightly toolchain uses LLVM {major}, but bpf-linker {BPF_LINKER_VERSION} supports LLVM {}: install a nightly from that range (the aya-ebpf pinned here was verified with nightly 2026-05-19, LLVM 22)",
            BPF_LINKER_LLVM.join(", ")
        );
    }
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (a few minutes, once)");
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))
    .with_context(|| format!("building bpf-linker against {} failed (see cargo's output above)", libllvm.display()))?;
    Ok(())
}

/// Programs the kernel tests drive, and the Debian packages that provide them.
const TEST_TOOLS: [(&str, &str); 9] = [
    ("curl", "curl"),
    ("dig", "dnsutils"),
    ("dnsmasq", "dnsmasq-base"),
    ("python3", "python3"),
    ("ip", "iproute2"),
    ("nc", "netcat-openbsd"),
    ("sysctl", "procps"),
    ("setpriv", "util-linux"),
    // `systemd-analyze verify` checks deploy/systemd's unit.
    ("systemd-analyze", "systemd"),
];

pub fn test_deps() -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS.iter().filter(|(bin, _)| !on_path(bin)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!(
            "the kernel tests need {} and there is no apt-get to install them: install them by hand",
            missing.join(", ")
        );
    }
    eprintln!("xtask setup: installing {}", missing.join(", "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {} failed", missing.join(", ")))
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_file_name() {
        assert_eq!(llvm_major(Path::new("/x/libLLVM.so.22.1-rust-1.97.0-nightly")).ok().as_deref(), Some("22"));
        assert!(llvm_major(Path::new("/x/libLLVM.so")).is_err());
    }
}
