//! `egress-agent block VENDOR [--for 30m] [--reason TEXT]`, `block --all`, and `unblock`: the
//! incident kill switch, carried out by the running agent (see `control::killswitch`).

use std::process::ExitCode;

use super::{AdminArgs, BlockArgs, UnblockArgs};
use crate::control::admin::Request;

pub fn block(args: &BlockArgs) -> ExitCode {
    let request = Request::Block {
        vendor: args.vendor.clone(),
        all: args.all,
        for_s: args.r#for.map(|d| d.as_secs()),
        reason: args.reason.clone(),
    };
    answer(&args.admin, &request)
}

pub fn unblock(args: &UnblockArgs) -> ExitCode {
    answer(&args.admin, &Request::Unblock { vendor: args.vendor.clone(), all: args.all })
}

fn answer(admin: &AdminArgs, request: &Request) -> ExitCode {
    let Some(v) = admin.ask(request) else { return ExitCode::FAILURE };
    if v["ok"] != true {
        eprintln!("{}", v["error"].as_str().unwrap_or("refused"));
        return ExitCode::FAILURE;
    }
    let k = &v["kill"];
    let what = k["vendor"]
        .as_str()
        .map_or_else(|| "all egress but the infrastructure allow rules".to_owned(), |s| format!("vendor {s}"));
    match v["action"].as_str() {
        Some("block") => {
            let until = k["until"].as_str().map_or_else(|| "until lifted".to_owned(), |u| format!("until {u}"));
            println!("blocked: {what}, {until}");
        }
        _ => println!("unblocked: {what}"),
    }
    if let Some(w) = v["warning"].as_str() {
        eprintln!("warning: {w}");
    }
    ExitCode::SUCCESS
}
