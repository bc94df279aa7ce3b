//! Hosts (with the readiness checks that fail), a host's readiness detail, retiring a host,
//! and API and enrollment tokens.

use crate::api::{seg, Api};
use crate::output::{clip, mid, pad, s, time_s};
use anyhow::Result;
use serde_json::{json, Value};

/// The ids of the checks that failed (and warned) in a host's last self-test report.
async fn failing_checks(api: &Api, host_id: &str) -> Result<Vec<String>> {
    let v = api
        .get(&format!("/api/v1/hosts/{}/readiness?limit=1", seg(host_id)))
        .await?;
    Ok(v["history"][0]["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| matches!(c["status"].as_str(), Some("fail" | "warn")))
        .map(|c| format!("{} {}", s(&c["id"]), s(&c["status"])))
        .collect())
}

/// The query string of the profiling window, or nothing.
fn window_query(window: Option<&str>) -> String {
    window
        .map(|w| format!("window={}", seg(w)))
        .unwrap_or_default()
}

pub(crate) async fn list(
    api: &Api,
    sort: Option<&str>,
    window: Option<&str>,
    json_out: bool,
) -> Result<i32> {
    let by_score = sort == Some("score");
    let path = if by_score {
        format!("/api/v1/hosts?sort=score&{}", window_query(window))
    } else {
        "/api/v1/hosts".to_string()
    };
    let mut v = api.get(path.trim_end_matches('&')).await?;
    // The failing checks, so nobody needs the API to learn why a host is not ready.
    if let Some(hosts) = v["hosts"].as_array_mut() {
        for h in hosts.iter_mut() {
            if matches!(h["readiness"].as_str(), Some("fail" | "warn")) {
                let id = s(&h["id"]);
                h["failing_checks"] = json!(failing_checks(api, &id).await?);
            }
        }
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<36}  {:<20} {:<20} {:<9} {:<20} {:<9} {:<7} {:>6}  READINESS",
        "ID", "HOSTNAME", "INSTANCE", "AGENT", "LAST SEEN (UTC)", "CONNECTED", "SENSOR", "LOST"
    );
    for h in v["hosts"].as_array().into_iter().flatten() {
        let st = &h["status"];
        let mut readiness = s(&h["readiness"]);
        if !h["readiness_since"].is_null() {
            readiness.push_str(&format!(" since {}", time_s(&h["readiness_since"])));
        }
        if !h["retired_at"].is_null() {
            readiness = format!("RETIRED {}", time_s(&h["retired_at"]));
        }
        println!(
            "{:<36}  {} {} {} {:<20} {:<9} {:<7} {:>6}  {}",
            s(&h["id"]),
            pad(&mid(&s(&h["hostname"]), 20), 20),
            pad(&mid(&s(&h["instance_id"]), 20), 20),
            pad(&clip(&s(&h["agent_version"]), 9), 9),
            time_s(&h["last_seen"]),
            if h["connected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            s(&st["sensor_mode"]),
            s(&st["events_lost"]),
            readiness
        );
        if by_score {
            match h["score"].as_f64() {
                Some(score) => println!(
                    "{:<38}score {score:.2}{}",
                    "",
                    if h["outlier"].as_bool() == Some(true) {
                        "  OUTLIER"
                    } else {
                        ""
                    }
                ),
                None => println!("{:<38}score: {}", "", s(&h["score_note"])),
            }
            for r in h["score_reasons"].as_array().into_iter().flatten() {
                println!("{:<40}{}", "", crate::output::printable(&s(r)));
            }
        }
        for c in h["failing_checks"].as_array().into_iter().flatten() {
            println!("{:<38}check: {}", "", s(c));
        }
        if let Some(r) = st["sensor_reason"].as_str() {
            println!("{:<38}sensor: {}", "", crate::output::printable(r));
        }
        for f in h["containment"].as_array().into_iter().flatten() {
            println!(
                "{:<38}{} {} since {} by {}: {}",
                "",
                crate::containment::target(&f["target"]),
                s(&f["state"]).to_uppercase(),
                time_s(&f["since"]),
                crate::output::printable(&s(&f["by"])),
                crate::output::printable(&s(&f["reason"]))
            );
        }
    }
    Ok(0)
}

/// `cairn hosts readiness HOST`: the last report's checks, then the history of verdicts.
pub(crate) async fn readiness(api: &Api, host: &str, limit: u32, json_out: bool) -> Result<i32> {
    let v = api
        .get(&format!(
            "/api/v1/hosts/{}/readiness?limit={limit}",
            seg(host)
        ))
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "Host {} ({})  readiness: {} since {}",
        s(&v["hostname"]),
        s(&v["host_id"]),
        s(&v["readiness"]),
        time_s(&v["since"])
    );
    let history = v["history"].as_array().cloned().unwrap_or_default();
    let Some(last) = history.first() else {
        println!("  no self-test report yet (the agent sends one when it starts and every 6 h)");
        return Ok(0);
    };
    println!("  last report {}:", time_s(&last["received_at"]));
    println!("    {:<28} {:<6} MEASURED", "CHECK", "STATUS");
    for c in last["checks"].as_array().into_iter().flatten() {
        println!(
            "    {} {:<6} {}",
            pad(&s(&c["id"]), 28),
            s(&c["status"]),
            clip(&s(&c["measured"]), 100)
        );
        if c["status"] != "pass" && c["remediation"].as_str().is_some_and(|r| !r.is_empty()) {
            println!("    {:<35}fix: {}", "", s(&c["remediation"]));
        }
    }
    if history.len() > 1 {
        println!("  history:");
        for r in &history {
            println!(
                "    {}  {:<5} {} passed, {} warned, {} failed",
                time_s(&r["received_at"]),
                s(&r["status"]),
                s(&r["passed"]),
                s(&r["warned"]),
                s(&r["failed"])
            );
        }
    }
    Ok(0)
}

pub(crate) async fn events(
    api: &Api,
    host: &str,
    from: Option<&str>,
    kind: Option<&str>,
    limit: u32,
    json_out: bool,
) -> Result<i32> {
    let mut q = format!("limit={limit}");
    if let Some(f) = from {
        q.push_str(&format!("&from={}", seg(f)));
    }
    if let Some(k) = kind {
        q.push_str(&format!("&kind={}", seg(k)));
    }
    let v = api
        .get(&format!("/api/v1/hosts/{}/events?{q}", seg(host)))
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let events = v["events"].as_array().cloned().unwrap_or_default();
    println!("{:<20} {:<14} {:>7}  WHAT", "TIME", "KIND", "PID");
    for e in &events {
        let p = &e["process"];
        let what = match p["args"].as_array() {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ if e["socket"].is_object() => format!(
                "{} {}:{}",
                s(&p["comm"]),
                s(&e["socket"]["daddr"]),
                s(&e["socket"]["dport"])
            ),
            _ => s(&p["comm"]),
        };
        println!(
            "{:<20} {} {:>7}  {}",
            time_s(&e["time"]),
            pad(&s(&e["kind"]), 14),
            s(&p["pid"]),
            clip(&what, 120)
        );
    }
    eprintln!("{} event(s)", events.len());
    Ok(0)
}

pub(crate) async fn retire(api: &Api, host: &str, reason: &str, json_out: bool) -> Result<i32> {
    let v = api
        .post(
            &format!("/api/v1/hosts/{}/retire", seg(host)),
            &json!({"reason": reason}),
        )
        .await?;
    if json_out {
        println!("{v}");
    } else {
        println!(
            "retired {} ({}): its agent is refused from now on (enroll again to collect from it); its collections and custody are kept",
            s(&v["hostname"]),
            s(&v["retired"])
        );
    }
    Ok(0)
}

pub(crate) async fn tokens(api: &Api, json_out: bool) -> Result<i32> {
    let v = api.get("/api/v1/tokens").await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<12}  {:<6} {:<24} {:<8} {:<20}  STATE",
        "ID", "KIND", "NAME", "ROLE", "CREATED (UTC)"
    );
    for t in v["tokens"].as_array().into_iter().flatten() {
        let state = if !t["revoked_at"].is_null() {
            format!("revoked {}", time_s(&t["revoked_at"]))
        } else if !t["expires_at"].is_null() {
            format!(
                "expires {}, {} uses left",
                time_s(&t["expires_at"]),
                s(&t["uses_left"])
            )
        } else {
            "active".into()
        };
        println!(
            "{:<12}  {:<6} {} {:<8} {:<20}  {}",
            s(&t["id"]),
            s(&t["kind"]),
            pad(&mid(&s(&t["name"]), 24), 24),
            s(&t["role"]),
            time_s(&t["created_at"]),
            state
        );
    }
    Ok(0)
}

pub(crate) async fn revoke(api: &Api, id: &str, json_out: bool) -> Result<i32> {
    let v: Value = api.delete(&format!("/api/v1/tokens/{}", seg(id))).await?;
    if json_out {
        println!("{v}");
    } else {
        println!(
            "revoked {} token(s) named {}",
            s(&v["revoked"]),
            crate::output::printable(id)
        );
    }
    Ok(0)
}

/// `cairn fleet`: groups with their odd ones out first, each with its reasons.
pub(crate) async fn fleet(api: &Api, window: Option<&str>, json_out: bool) -> Result<i32> {
    let q = window_query(window);
    let path = if q.is_empty() {
        "/api/v1/fleet".to_string()
    } else {
        format!("/api/v1/fleet?{q}")
    };
    let v = api.get(&path).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let groups = v["groups"].as_array().cloned().unwrap_or_default();
    if groups.is_empty() {
        println!("no groups: no agent has reported cloud context (VPC, scaling group) yet");
    }
    for g in &groups {
        let odd = g["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["outlier"].as_bool() == Some(true))
            .count();
        println!(
            "{}  ({} members, {} outlier{})",
            crate::output::printable(&s(&g["label"])),
            s(&g["members"]),
            odd,
            if odd == 1 { "" } else { "s" }
        );
        if let Some(note) = g["note"].as_str() {
            println!("  {}", crate::output::printable(note));
        }
        for h in g["hosts"].as_array().into_iter().flatten() {
            println!(
                "  {} {:>7.2}  {}  {}",
                if h["outlier"].as_bool() == Some(true) {
                    "!"
                } else {
                    " "
                },
                h["score"].as_f64().unwrap_or(0.0),
                pad(&mid(&s(&h["hostname"]), 24), 24),
                s(&h["host_id"])
            );
            for r in h["reasons"].as_array().into_iter().flatten() {
                println!("              {}", crate::output::printable(&s(&r["text"])));
            }
        }
    }
    let ungrouped = v["ungrouped"].as_array().map(Vec::len).unwrap_or(0);
    if ungrouped > 0 {
        println!(
            "{ungrouped} host(s) in no group (no cloud context from their agents): not scored"
        );
    }
    for t in v["truncated"].as_array().into_iter().flatten() {
        println!(
            "profiles cut: too many distinct {} features in the window",
            s(t)
        );
    }
    Ok(0)
}
