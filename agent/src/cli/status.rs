//! `egress-agent status`: what the running agent is doing, from its admin socket.

use std::process::ExitCode;

use serde_json::Value;

use super::AdminArgs;
use crate::control::admin::Request;

pub fn status(args: &AdminArgs, json: bool) -> ExitCode {
    let Some(v) = args.ask(&Request::Status {}) else { return ExitCode::FAILURE };
    if json {
        println!("{v:#}");
    } else {
        print!("{}", render(&v));
    }
    ExitCode::SUCCESS
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The status as a person reads it.
fn render(v: &Value) -> String {
    let a = &v["agent"];
    let p = &v["policy"];
    let mut out = format!(
        "agent    {} pid {} up {}s, watching {}\npolicy   {} ({} mode, default {}), generation {}, sha256 {}\n         last reload {} ({} installed, {} refused)\n",
        s(&a["version"]), s(&a["pid"]), s(&a["uptime_s"]), s(&a["cgroup"]),
        s(&p["name"]), s(&p["mode"]), s(&p["default"]), s(&p["generation"]), s(&p["sha256"]),
        s(&p["last_reload"]), s(&p["reloads_installed"]), s(&p["reloads_refused"]),
    );
    let src = &v["policy_source"];
    if src.is_object() {
        out.push_str(&format!(
            "source   {} serial {} (floor {}{}), every {}s, last check {}: {}{}\n",
            s(&src["source"]),
            s(&src["serial"]),
            s(&src["floor"]),
            if src["floor_from"] == "minSerial" { ", minSerial" } else { "" },
            s(&src["interval_s"]),
            s(&src["last_check"]),
            s(&src["last_result"]),
            src["last_error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default(),
        ));
    }
    let kills = v["kill_switch"].as_array().cloned().unwrap_or_default();
    if kills.is_empty() {
        out.push_str("kill     none\n");
    }
    for k in &kills {
        let what =
            if k["vendor"].is_null() { "ALL (but infrastructure allow rules)".to_owned() } else { s(&k["vendor"]) };
        out.push_str(&format!(
            "KILL     {what} until {} since {} by uid {} reason {}\n",
            if k["until"].is_null() { "lifted".into() } else { s(&k["until"]) },
            s(&k["since"]),
            s(&k["by_uid"]),
            s(&k["reason"])
        ));
    }
    for b in v["blocks"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "block    {} for {} ({}), {}s left\n",
            s(&b["vendor"]),
            s(&b["process"]),
            s(&b["anomaly"]),
            s(&b["seconds_left"])
        ));
    }
    out.push_str("vendors  last hour:   allowed  alerted   denied   bytes out    bytes in\n");
    for r in v["vendors_last_hour"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "         {:<12} {:>8} {:>8} {:>8} {:>11} {:>11}\n",
            s(&r["vendor"]),
            s(&r["allowed"]),
            s(&r["alerted"]),
            s(&r["denied"]),
            s(&r["bytes_out"]),
            s(&r["bytes_in"])
        ));
    }
    out.push_str("tables  ");
    for t in v["tables"].as_array().into_iter().flatten() {
        out.push_str(&format!(" {} {}/{}", s(&t["table"]), s(&t["entries"]), s(&t["capacity"])));
    }
    out.push('\n');
    let m = &v["memory"];
    if let Some(h) = m["heap"].as_object() {
        let mib = |k: &str| h.get(k).and_then(Value::as_f64).unwrap_or(0.0) / 1_048_576.0;
        out.push_str(&format!("memory   heap {:.1} MiB allocated, {:.1} MiB free;", mib("allocated"), mib("free")));
    } else {
        out.push_str("memory  ");
    }
    // The caches holding anything: an idle agent's list stays short.
    for c in m["caches"].as_array().into_iter().flatten().filter(|c| c["entries"].as_u64().unwrap_or(0) > 0) {
        out.push_str(&format!(" {} {}/{}", s(&c["cache"]), s(&c["entries"]), s(&c["capacity"])));
    }
    out.push('\n');
    let e = &v["events"];
    out.push_str(&format!(
        "events   {} lost in the kernel, {} folded, ring lag {}s\n",
        s(&e["dropped_in_kernel"]),
        s(&e["suppressed"]),
        s(&e["ring_lag_s"])
    ));
    let p = &v["pod_list"];
    if p.is_object() {
        let health = match (&p["last_error"], &p["fetched"]) {
            (Value::Null, _) => "ok".to_owned(),
            (e, f) if *f == true => format!("FAILING, the last good list stays in use ({})", s(e)),
            (e, _) => format!("NEVER FETCHED: pod selectors match nothing ({})", s(e)),
        };
        out.push_str(&format!(
            "pods     {} from {}, last fetched {}, {health}\n",
            s(&p["pods"]),
            s(&p["source"]),
            s(&p["last_ok"])
        ));
    }
    for k in v["sinks"].as_array().into_iter().flatten() {
        let health = if k["healthy"] == true { "ok".to_owned() } else { format!("FAILING ({})", s(&k["last_error"])) };
        out.push_str(&format!(
            "sink     {} {} {}: {} written, {} dropped, {} failed, {} queued, {health}\n",
            s(&k["name"]),
            s(&k["type"]),
            s(&k["target"]),
            s(&k["written"]),
            s(&k["dropped"]),
            s(&k["failed"]),
            s(&k["queued"])
        ));
    }
    out
}
