//! `cargo xtask fuzz [target] [--seconds N]`: the cargo-fuzz targets of `fuzz/` (libFuzzer, with
//! AddressSanitizer), each for N seconds, on the nightly toolchain `setup` provisions. Fails if
//! any target finds a crash (the input is kept in `fuzz/artifacts/<target>/`); prints, per
//! target, the executions, their rate and the edges covered.
//!
//! Each run starts from the committed seeds (`fuzz/corpus/<target>`, read only) and the inputs
//! earlier runs on this machine found (`fuzz/work/<target>`, not committed), and adds what it
//! finds to the latter.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    setup::{self, TOOLCHAIN},
    util::{run, workspace_root},
};

/// Every target, in the order they run.
pub const TARGETS: [&str; 4] = ["policy", "dns", "event", "config"];

/// Installed when no cargo-fuzz is on the PATH.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target when `cargo xtask test` runs them: a smoke run, not a campaign.
pub const TEST_SECONDS: u32 = 20;

struct Stats {
    execs: u64,
    execs_per_s: u64,
    cov: u64,
    corpus: u64,
}

pub fn run_targets(only: Option<&str>, seconds: u32) -> Result<()> {
    let targets: Vec<&str> = match only {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target `{t}`: the targets are {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    setup::kernel_toolchain()?;
    cargo_fuzz()?;
    let root = workspace_root();
    let fuzz = root.join("fuzz");
    // The host build of the kernel's DNS programs checks itself first: if the shims drifted from
    // what the kernel does, the dns target would fuzz something else.
    run(nightly_cargo(&fuzz).args(["test", "--quiet", "--package", "agent-ebpf-host"]))
        .context("the host build of the kernel's DNS programs fails its own tests")?;
    run(nightly_cargo(&root).args(["fuzz", "build", "--fuzz-dir", "fuzz"]))?;
    let mut crashed = Vec::new();
    let mut table = Vec::new();
    for t in &targets {
        eprintln!("xtask fuzz: {t} for {seconds} s");
        match one(&root, t, seconds)? {
            Ok(s) => table.push((*t, s)),
            Err(artifact) => crashed.push(format!("{t}: {artifact}")),
        }
    }
    println!("{:<8} {:>8} {:>12} {:>10} {:>7} {:>7}", "target", "seconds", "execs", "execs/s", "edges", "corpus");
    for (t, s) in &table {
        println!("{t:<8} {seconds:>8} {:>12} {:>10} {:>7} {:>7}", s.execs, s.execs_per_s, s.cov, s.corpus);
    }
    if !crashed.is_empty() {
        bail!(
            "fuzzing found {} crash(es):\n  {}\nreproduce with `cargo +{TOOLCHAIN} fuzz run --fuzz-dir fuzz TARGET FILE`, fix it, and add the input as a unit test of the module that crashed",
            crashed.len(),
            crashed.join("\n  ")
        );
    }
    Ok(())
}

fn nightly_cargo(dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    // The rustup proxy picks the toolchain from `+nightly`; cargo's own variables from the
    // `cargo xtask` that runs us would point it back at stable.
    c.arg(format!("+{TOOLCHAIN}")).current_dir(dir).env_remove("RUSTC").env_remove("RUSTUP_TOOLCHAIN");
    c
}

fn cargo_fuzz() -> Result<()> {
    let found = Command::new("cargo-fuzz").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("xtask fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
            .context("installing cargo-fuzz failed (see cargo's output above)")?;
    }
    Ok(())
}

/// Runs one target; Ok(Err(path)) when it crashed, with the input that did it.
fn one(root: &Path, target: &str, seconds: u32) -> Result<Result<Stats, String>> {
    let fuzz = root.join("fuzz");
    let work = fuzz.join("work").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let seeds = fuzz.join("corpus").join(target);
    let dict = fuzz.join("dict").join(format!("{target}.dict"));
    let log = fuzz.join("work").join(format!("{target}.log"));
    let mut cmd = nightly_cargo(root);
    cmd.args(["fuzz", "run", "--fuzz-dir", "fuzz", target]).arg(&work).arg(&seeds).arg("--");
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // A slow input is a finding too (a parse without bounds): ten seconds is far beyond any.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048");
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdout(Stdio::from(file.try_clone()?)).stderr(Stdio::from(file));
    let status = cmd.status().context("starting cargo fuzz")?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        let artifact = text
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .map_or_else(|| format!("no input saved; see {}", log.display()), |p| p.trim().to_owned());
        return Ok(Err(artifact));
    }
    Ok(Ok(stats(&text).with_context(|| format!("no libFuzzer statistics in {}", log.display()))?))
}

/// libFuzzer's final statistics and the coverage of its last status line (`#N DONE cov: C ...`).
fn stats(log: &str) -> Option<Stats> {
    let stat = |name: &str| {
        log.lines().find_map(|l| l.strip_prefix(&format!("stat::{name}:")).and_then(|v| v.trim().parse::<u64>().ok()))
    };
    let field = |line: &str, name: &str| {
        let mut words = line.split_whitespace();
        // `corp: 35/1300b`: the count before the slash.
        words.find(|w| *w == name).and_then(|_| words.next()).and_then(|v| v.split('/').next()?.parse::<u64>().ok())
    };
    let last = log.lines().rev().find(|l| l.starts_with('#') && l.contains(" cov: "))?;
    Some(Stats {
        execs: stat("number_of_executed_units")?,
        execs_per_s: stat("average_exec_per_sec")?,
        cov: field(last, "cov:")?,
        corpus: field(last, "corp:").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_libfuzzer_statistics() {
        let log = "#2 INITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #400 NEW cov: 120 ft: 200 corp: 33/1200b lim: 4 exec/s: 0\n\
                   #81920 DONE cov: 130 ft: 222 corp: 35/1300b lim: 4 exec/s: 4096 rss: 80Mb\n\
                   Done 81920 runs in 21 second(s)\n\
                   stat::number_of_executed_units: 81920\n\
                   stat::average_exec_per_sec:     3900\n";
        let s = super::stats(log).expect("parses");
        assert_eq!((s.execs, s.execs_per_s, s.cov, s.corpus), (81920, 3900, 130, 35));
    }
}
