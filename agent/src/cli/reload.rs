//! `egress-agent reload`: the running agent reads its policy again (as SIGHUP does), and says
//! whether it was installed or refused.

use std::process::ExitCode;

use super::AdminArgs;
use crate::control::admin::Request;

pub fn reload(args: &AdminArgs) -> ExitCode {
    let Some(v) = args.ask(&Request::Reload {}) else { return ExitCode::FAILURE };
    if v["ok"] == true {
        println!("{}: generation {}", v["result"].as_str().unwrap_or("done"), v["generation"]);
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", v["error"].as_str().unwrap_or("reload failed"));
        ExitCode::FAILURE
    }
}
