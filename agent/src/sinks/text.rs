//! One compact line per record, for a person watching a terminal (`--format text`): time,
//! verdict, process, destination, domain, vendor and rule; what else a kind carries after it.

use serde_json::Value;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// The line for one record (its JSON form, as the JSON format would write it).
pub fn line(v: &Value) -> String {
    // Seconds are enough on a terminal.
    let ts = s(v, "ts").get(11..19).unwrap_or("");
    let kind = s(v, "kind");
    let who = format!("{}[{}]", s(v, "comm"), v["pid"]);
    let exe = s(v, "exe");
    let vendor = v["vendor"].as_str().map_or(String::new(), |x| format!(" vendor={x}"));
    let mut out = match kind {
        "connect" | "flow" => {
            let verdict = s(v, "verdict").to_uppercase();
            let domain = v["domain"].as_str().map_or(String::new(), |d| format!(" ({d})"));
            let mut l = format!(
                "{ts} {verdict:<5} {kind:<7} {who} {exe} -> {}:{} {}{domain}{vendor} rule={}",
                s(v, "dst"),
                v["dport"],
                s(v, "proto"),
                s(v, "rule")
            );
            if kind == "flow" {
                l.push_str(&format!(
                    " {} out={} in={} {}ms",
                    s(v, "state"),
                    v["bytes_out"],
                    v["bytes_in"],
                    v["duration_ms"]
                ));
            }
            if v["suppressed"].as_u64().is_some_and(|n| n > 0) {
                l.push_str(&format!(" (x{})", v["suppressed"]));
            }
            if v["blocked"] == true {
                l.push_str(" BLOCKED");
            }
            l
        }
        "dns" => format!(
            "{ts} {:<5} dns     {who} {exe} {} {} {} -> {}",
            s(v, "verdict").to_uppercase(),
            s(v, "phase"),
            s(v, "qtype"),
            s(v, "query"),
            v["addresses"]
        ),
        "anomaly" => format!(
            "{ts} ANOM  {}  {who} {} party={} {} observed={} threshold={} action={}",
            s(v, "anomaly"),
            s(v, "process"),
            s(v, "party"),
            s(v, "destination"),
            v["observed"],
            v["threshold"],
            s(v, "action")
        ),
        "response" => format!(
            "{ts} BLOCK {} {} vendor={} anomaly={} {}s",
            s(v, "state"),
            s(v, "process"),
            s(v, "vendor"),
            s(v, "anomaly"),
            v["seconds"]
        ),
        _ => v.to_string(),
    };
    // A line per record, whatever a field held.
    out.retain(|c| c != '\n' && c != '\r');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_connect_record_is_one_readable_line() {
        let v = json!({"ts":"2026-12-02T03:21:57.99Z","kind":"connect","pid":7,"comm":"curl","exe":"/usr/bin/curl",
            "proto":"tcp","dst":"198.18.128.10","dport":443,"verdict":"deny","vendor":"stripe","rule":"vendor/stripe",
            "domain":"api.stripe.com","suppressed":3,"blocked":true});
        assert_eq!(
            line(&v),
            "03:21:57 DENY  connect curl[7] /usr/bin/curl -> 198.18.128.10:443 tcp (api.stripe.com) vendor=stripe rule=vendor/stripe (x3) BLOCKED"
        );
        let f = json!({"ts":"2026-12-02T03:21:58Z","kind":"flow","pid":7,"comm":"a\nb","verdict":"allow","dst":"1.2.3.4",
            "dport":1,"proto":"udp","rule":"default","state":"end","bytes_out":5,"bytes_in":6,"duration_ms":2});
        let l = line(&f);
        assert!(!l.contains('\n') && l.contains("end out=5 in=6 2ms"), "{l}");
    }
}
