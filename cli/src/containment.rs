//! `cairn isolate`, `release`, `freeze`, `thaw`, `kill` and `containment`: containment asked
//! of a host's agent, waited for until the agent says what it enforced.

use crate::api::{seg, Api};
use crate::exit::{fail, Exit};
use crate::output::{printable, s, time_s};
use anyhow::Result;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What to contain and how long to wait for the agent's answer.
pub struct Ask<'a> {
    pub host: &'a str,
    pub action: &'a str,
    pub reason: &'a str,
    pub container: Option<&'a str>,
    pub pid: Option<u32>,
    pub allow: &'a [String],
    /// None: do not wait.
    pub wait: Option<Duration>,
}

/// `--allow CIDR[,tcp/PORT|udp/PORT][,NOTE]`: `10.0.0.5`, `10.0.0.0/24,tcp/22,jump host`.
pub fn parse_allow(s: &str) -> Result<Value> {
    match cairn_protocol::containment::Allow::parse_spec(s) {
        Ok(a) => Ok(serde_json::to_value(a)?),
        Err(e) => fail(Exit::Usage, format!("--allow {e}")),
    }
}

pub async fn contain(api: &Api, a: &Ask<'_>, json_out: bool) -> Result<i32> {
    let mut body = json!({ "reason": a.reason });
    if let Some(c) = a.container {
        body["container"] = json!(c);
    }
    if let Some(p) = a.pid {
        body["pid"] = json!(p);
    }
    if !a.allow.is_empty() {
        body["allow"] = Value::Array(
            a.allow
                .iter()
                .map(|x| parse_allow(x))
                .collect::<Result<_>>()?,
        );
    }
    let path = format!("/api/v1/hosts/{}/", seg(a.host));
    let row = match a.action {
        "isolate" => api.post(&format!("{path}isolation"), &body).await?,
        "release" => api.delete_json(&format!("{path}isolation"), &body).await?,
        "unmark-last-breath" => {
            api.delete_json(&format!("{path}last-breath"), &body)
                .await?
        }
        other => api.post(&format!("{path}{other}"), &body).await?,
    };
    let id = s(&row["id"]);
    let Some(limit) = a.wait else {
        if json_out {
            println!("{}", serde_json::to_string_pretty(&row)?);
        } else {
            println!("{} requested: {id}", a.action);
            if row["agent_connected"] == false {
                println!("the agent is not connected: it is sent when the agent connects");
            }
        }
        return Ok(Exit::Ok.code());
    };
    let start = Instant::now();
    let done = loop {
        let r = api
            .get(&format!("/api/v1/containment/{}", seg(&id)))
            .await?;
        if matches!(r["status"].as_str(), Some("done" | "failed")) {
            break r;
        }
        if start.elapsed() > limit {
            if json_out {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            return fail(
                Exit::Contain,
                format!(
                    "{} {id} not confirmed by the agent within {} s (status {}); it stays queued: \
                     `cairn containment {}` shows when it is",
                    a.action,
                    limit.as_secs(),
                    s(&r["status"]),
                    a.host
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        print_outcome(&done);
    }
    Ok(if done["status"] == "done" {
        Exit::Ok
    } else {
        Exit::Contain
    }
    .code())
}

fn print_outcome(r: &Value) {
    let o = &r["outcome"];
    if r["status"] == "done" {
        println!(
            "{} {}: done by {} at {}",
            s(&r["action"]),
            target(&r["target"]),
            printable(&s(&o["mechanism"])),
            time_s(&o["at"])
        );
        if let Some(h) = o["rules_sha256"].as_str() {
            println!("rules in force: sha256 {h}");
        }
        if let Some(ms) = o["verified_rtt_ms"].as_f64() {
            println!("collector reached through it: {ms:.1} ms round trip");
        }
        if let Some(p) = o["pids"].as_array().filter(|p| !p.is_empty()) {
            println!("processes: {}", p.len());
        }
    } else {
        let how = if o["rolled_back"] == true {
            "rolled back"
        } else {
            "failed"
        };
        println!(
            "{} {} {how}: {}",
            s(&r["action"]),
            target(&r["target"]),
            printable(o["error"].as_str().unwrap_or("no reason given"))
        );
    }
}

/// How a target is shown (terminal-safe).
pub(crate) fn target(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("container") => format!("container {}", printable(&s(&t["id"]))),
        Some("process") => format!("process tree {}", s(&t["pid"])),
        _ => "host".into(),
    }
}

/// `cairn containment HOST`: what is in force, then the history.
pub async fn show(api: &Api, host: &str, json_out: bool) -> Result<i32> {
    let v = api
        .get(&format!("/api/v1/hosts/{}/containment", seg(host)))
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let now = v["in_force"].as_array().cloned().unwrap_or_default();
    if now.is_empty() {
        println!("{}: nothing contained", printable(&s(&v["hostname"])));
    }
    for f in &now {
        println!(
            "{} {} since {} by {}: {}",
            target(&f["target"]),
            s(&f["state"]).to_uppercase(),
            time_s(&f["since"]),
            printable(&s(&f["by"])),
            printable(&s(&f["reason"]))
        );
    }
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        println!();
    }
    for r in &history {
        println!(
            "{}  {:<8} {:<24} {:<7} {:<20} {}",
            time_s(&r["requested_at"]),
            s(&r["action"]),
            target(&r["target"]),
            s(&r["status"]),
            printable(&s(&r["requested_by"])),
            printable(&s(&r["reason"]))
        );
    }
    Ok(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_are_read_as_responders_write_them() {
        assert_eq!(
            parse_allow("10.0.0.5").unwrap(),
            json!({"cidr": "10.0.0.5"})
        );
        assert_eq!(
            parse_allow("10.0.0.0/24,tcp/22,jump host").unwrap(),
            json!({"cidr": "10.0.0.0/24", "proto": "tcp", "port": 22, "note": "jump host"})
        );
        assert_eq!(
            parse_allow("fd00::53,UDP/53").unwrap(),
            json!({"cidr": "fd00::53", "proto": "udp", "port": 53})
        );
        assert!(parse_allow("10.0.0.1,22").is_err());
        assert!(parse_allow("10.0.0.1,icmp/1").is_err());
        assert!(parse_allow("10.0.0.1,tcp/99999").is_err());
    }
}
