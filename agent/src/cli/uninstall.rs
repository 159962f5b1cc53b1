//! `egress-agent uninstall`: removes the pinned datapath, which detaches its programs; says
//! what it removed. Refused while an agent runs with it (it holds the directory's lock).

use std::{path::PathBuf, process::ExitCode};

use crate::{config::AgentConfig, kernel::pin};

pub fn uninstall(pin_dir: Option<PathBuf>, config: Option<&std::path::Path>) -> ExitCode {
    let from_config = match config.map(AgentConfig::load).transpose() {
        Ok(c) => c.and_then(|c| c.pin_dir),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let root = pin_dir.or(from_config).unwrap_or_else(|| pin::DEFAULT_ROOT.into());
    if root.as_os_str() == "off" {
        println!("pinning is off: nothing to remove");
        return ExitCode::SUCCESS;
    }
    match pin::uninstall(&root) {
        Ok(removed) if removed.is_empty() => {
            println!("{}: nothing pinned", root.display());
            ExitCode::SUCCESS
        }
        Ok(removed) => {
            for p in &removed {
                println!("removed {}", p.display());
            }
            println!(
                "{}: {} pinned objects and directories removed; the programs are detached",
                root.display(),
                removed.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
