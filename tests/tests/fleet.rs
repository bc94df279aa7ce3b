//! Fleet context end to end (issue #17): agents that ask an IMDSv2 stand-in (the real wire
//! format, a session token on every request) report where they run; the collector groups
//! them by VPC and Auto Scaling group, `cairn fleet` and `cairn hosts --sort score` show the
//! groups and scores, a host moved to another group is in its new group after its next
//! hello, and a trigger's answer carries its priority and why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cairn_harness::imds::{Imds, Instance};
use cairn_harness::*;
use serde_json::Value;

fn instance(n: usize, asg: &str) -> Instance {
    Instance {
        instance_id: format!("i-0{asg}{n:04}"),
        account_id: "123456789012".into(),
        region: "eu-west-1".into(),
        vpc_id: "vpc-0a1".into(),
        subnet_id: "subnet-0b2".into(),
        private_ip: format!("10.0.1.{n}"),
        asg: Some(asg.into()),
        name: format!("{asg}-{n}"),
    }
}

fn agent_at(collector: &Collector, work: &std::path::Path, imds: &Imds) -> Agent {
    let mut agent = Agent::enroll_with(collector, work, &["--new-identity"]).unwrap();
    set_agent_option(&agent.state, "metadata", "\"aws\"").unwrap();
    set_agent_option(&agent.state, "metadata_url", &format!("\"{}\"", imds.url)).unwrap();
    set_agent_option(&agent.state, "sensor_enabled", "false").unwrap();
    set_agent_option(&agent.state, "heartbeat_secs", "1").unwrap();
    agent.run().unwrap();
    agent
}

fn group<'a>(fleet: &'a Value, label: &str) -> Option<&'a Value> {
    fleet["groups"]
        .as_array()?
        .iter()
        .find(|g| g["label"] == label)
}

#[test]
fn agents_report_where_they_run_and_the_fleet_is_grouped_by_it() {
    let work = workdir("fleet").unwrap();
    let collector = Collector::start(work.path()).unwrap();
    let imds: Vec<Imds> = [
        (1, "web-prod"),
        (2, "web-prod"),
        (3, "web-prod"),
        (1, "batch"),
    ]
    .iter()
    .map(|(n, asg)| Imds::start(instance(*n, asg)).unwrap())
    .collect();
    let mut agents: Vec<Agent> = imds
        .iter()
        .map(|i| agent_at(&collector, work.path(), i))
        .collect();

    // Each host's identity carries its context: VPC, subnet, interfaces, the asg tag.
    let hosts = wait_for(
        "four agents with their cloud context",
        Duration::from_secs(60),
        || {
            let hosts = collector.hosts()?;
            let ready: Vec<Value> = hosts
                .into_iter()
                .filter(|h| {
                    h["connected"] == true && h["identity"]["cloud"]["scaling_group"].is_string()
                })
                .collect();
            Ok((ready.len() == 4).then_some(ready))
        },
    )
    .unwrap();
    let web1 = hosts
        .iter()
        .find(|h| h["instance_id"] == "i-0web-prod0001")
        .unwrap();
    let cloud = &web1["identity"]["cloud"];
    assert_eq!(cloud["network_id"], "vpc-0a1", "{cloud}");
    assert_eq!(cloud["subnet_id"], "subnet-0b2");
    assert_eq!(cloud["security_groups"][0], "sg-0web");
    assert_eq!(cloud["interfaces"][0]["private_ips"][0], "10.0.1.1");
    assert_eq!(cloud["instance_name"], "web-prod-1");
    assert_eq!(cloud["lifecycle_state"], "InService");
    assert_eq!(cloud["imdsv1_open"], false);
    let web1_id = web1["id"].as_str().unwrap().to_string();

    // `cairn fleet`: the VPC holds all four, the asg three (scored), batch one (not scored,
    // and it says so).
    let fleet = collector.cli_json(&["fleet"]).unwrap();
    let vpc = group(&fleet, "vpc vpc-0a1 (123456789012)").unwrap_or_else(|| panic!("{fleet}"));
    assert_eq!(vpc["members"], 4);
    let web = group(&fleet, "asg web-prod").unwrap();
    assert_eq!(web["members"], 3);
    assert_eq!(web["scored"], true);
    let batch = group(&fleet, "asg batch").unwrap();
    assert_eq!(batch["scored"], false);
    assert!(
        batch["note"].as_str().unwrap().contains("not scored"),
        "{batch}"
    );
    let text = collector
        .cli_text(&["fleet"], Duration::from_secs(30))
        .unwrap()
        .ok()
        .unwrap()
        .stdout
        .clone();
    assert!(
        text.contains("asg web-prod  (3 members, 0 outliers)"),
        "{text}"
    );
    assert!(
        text.contains("groups of fewer than 3 are not scored"),
        "{text}"
    );
    // A window that is not a duration, too long, or overflowing is a 400 that says why.
    let api = collector.api().unwrap();
    for (w, says) in [
        ("bogus", "bad duration"),
        ("40d", "longer than 31 days"),
        ("9223372036854775807d", "too long"),
        ("-1h", "bad duration"),
    ] {
        let e = api
            .get(&format!("/api/v1/fleet?window={w}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP 400") && e.contains(says), "{w}: {e}");
    }
    let e = api.get("/api/v1/hosts?sort=evil").unwrap_err().to_string();
    assert!(e.contains("HTTP 400"), "{e}");
    let sorted = collector.cli_json(&["hosts", "--sort", "score"]).unwrap();
    let list = sorted["hosts"].as_array().unwrap();
    assert!(list.iter().all(|h| h["score"].is_number()), "{sorted}");
    assert!(list
        .iter()
        .all(|h| h["groups"].as_array().unwrap().len() == 2));

    // A trigger's answer says its priority and why: nothing of the host's behaviour was seen
    // (the sensor is off), so fleet context leaves the alert's own severity; a failed
    // self-test (this machine's block devices are not readable) raises it one step.
    let readiness = wait_for(
        "web-prod-1's first self-test",
        Duration::from_secs(60),
        || {
            Ok(collector
                .hosts()?
                .into_iter()
                .find(|h| h["id"] == web1_id.as_str())
                .and_then(|h| h["readiness"].as_str().map(str::to_string)))
        },
    )
    .unwrap();
    let body = serde_json::json!({"host": web1_id, "reason": "fleet test", "severity": "low",
                                  "profile": "volatile"});
    let v = collector
        .api()
        .unwrap()
        .post("/api/v1/triggers/generic", &body)
        .unwrap();
    let reasons: Vec<&str> = v["priority_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(reasons[0], "alert severity low: low", "{reasons:?}");
    assert!(
        reasons[1].contains("nothing of its behaviour"),
        "{reasons:?}"
    );
    if readiness == "fail" {
        assert_eq!(v["priority"], "medium", "{v}");
        assert!(reasons[2].contains("self-test failed"), "{reasons:?}");
    } else {
        assert_eq!(v["priority"], "low", "readiness {readiness}: {v}");
        assert_eq!(reasons.len(), 2, "{reasons:?}");
    }

    // web-prod-3 moves to batch: after its next hello it is in batch, and web-prod has two
    // (too few to score).
    imds[2].update(|i| i.asg = Some("batch".into()));
    agents[2].terminate(Duration::from_secs(20)).unwrap();
    agents[2].run().unwrap();
    let fleet = wait_for(
        "the moved host in its new group",
        Duration::from_secs(60),
        || {
            let f = collector.cli_json(&["fleet"])?;
            Ok(group(&f, "asg batch")
                .is_some_and(|g| g["members"] == 2)
                .then_some(f))
        },
    )
    .unwrap();
    let web = group(&fleet, "asg web-prod").unwrap();
    assert_eq!(web["members"], 2);
    assert_eq!(web["scored"], false);
    for a in &mut agents {
        a.check_alive().unwrap();
    }
}
