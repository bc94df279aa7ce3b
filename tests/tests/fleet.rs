//! Fleet context end to end (issue #17): agents that ask an IMDSv2 stand-in (the real wire
//! format, a session token on every request) report where they run; the collector groups
//! them by VPC and Auto Scaling group, `cairn fleet` and `cairn hosts --sort score` show the
//! groups and scores, a host moved to another group is in its new group after its next
//! hello, and a trigger's answer carries its priority and why. A fleet of twelve simulated
//! hosts (each agent's sensor scoped to its own cgroup) finds the one that runs an odd binary
//! and connects to an odd port, and a low GuardDuty finding captures that binary's memory
//! there and only volatile state on a peer.

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
    // The move is kept as the host's membership history, on its timeline.
    let moved = collector
        .hosts()
        .unwrap()
        .into_iter()
        .find(|h| h["instance_id"] == "i-0web-prod0003")
        .unwrap();
    let moved = moved["id"].as_str().unwrap();
    let tl = collector
        .api_get(&format!(
            "/api/v1/timeline?host={moved}&kind=group_joined,group_left&from=-1h&order=oldest"
        ))
        .unwrap();
    let msgs: Vec<&str> = tl["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        &msgs[msgs.len() - 2..],
        ["left asg web-prod", "joined asg batch"],
        "{tl:#}"
    );
    assert!(msgs.contains(&"joined asg web-prod"), "{msgs:?}");
    assert!(
        msgs.contains(&"joined vpc vpc-0a1 (123456789012)"),
        "{msgs:?}"
    );
    for a in &mut agents {
        a.check_alive().unwrap();
    }
}

/// The simulated hosts' cgroups (`/cairn-fleet-PID/hN`) and what runs in them; everything is
/// killed and removed on drop.
struct Cgroups {
    top: std::path::PathBuf,
    hosts: Vec<std::path::PathBuf>,
    procs: Vec<std::process::Child>,
}

impl Cgroups {
    fn new(n: usize) -> Cgroups {
        let top = cgroup2_root()
            .unwrap()
            .join(format!("cairn-fleet-{}", std::process::id()));
        let hosts: Vec<_> = (0..n).map(|i| top.join(format!("h{i}"))).collect();
        for h in &hosts {
            std::fs::create_dir_all(h).unwrap();
        }
        Cgroups {
            top,
            hosts,
            procs: Vec::new(),
        }
    }

    /// The scope of host `i` as the sensor names cgroups (a path under the cgroup v2 root).
    fn scope(&self, i: usize) -> String {
        format!("/{}/h{i}", self.top.file_name().unwrap().to_string_lossy())
    }

    /// Runs `exe -c script` inside host `i`'s cgroup (moved there before the exec); its pid.
    fn run(&mut self, i: usize, exe: &str, script: &str) -> u32 {
        let child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec {exe} -c '{script}'",
                self.hosts[i].display()
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.procs.push(child);
        pid
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        std::thread::sleep(Duration::from_millis(200));
        for h in &self.hosts {
            let _ = std::fs::remove_dir(h);
        }
        let _ = std::fs::remove_dir(&self.top);
    }
}

/// A listener on loopback that accepts and holds every connection (never writes).
fn holding_listener() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

/// A bare GuardDuty finding (as GetFindings returns it) of low severity on an instance.
fn low_finding(id: &str, instance: &str) -> Value {
    serde_json::json!({
        "schemaVersion": "2.0", "accountId": "123456789012", "region": "eu-west-1", "partition": "aws",
        "id": id, "type": "Recon:EC2/PortProbeUnprotectedPort", "severity": 2,
        "title": "Unprotected port on EC2 instance is being probed.",
        "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": instance}},
        "service": {"serviceName": "guardduty", "count": 1}
    })
}

#[test]
fn the_one_host_unlike_its_peers_is_flagged_and_its_alert_captures_its_odd_process() {
    let work = workdir("fleet-twelve").unwrap();
    let mut collector = Collector::start(work.path()).unwrap();
    // Eight web servers in one Auto Scaling group, four batch hosts in another, one VPC.
    let layout: Vec<(usize, &str)> = (1..=8)
        .map(|n| (n, "web-prod"))
        .chain((1..=4).map(|n| (n, "batch")))
        .collect();
    let imds: Vec<Imds> = layout
        .iter()
        .map(|(n, asg)| Imds::start(instance(*n, asg)).unwrap())
        .collect();
    let mut cgroups = Cgroups::new(layout.len());
    let mut agents: Vec<Agent> = imds
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut agent =
                Agent::enroll_with(&collector, work.path(), &["--new-identity"]).unwrap();
            set_agent_option(&agent.state, "metadata", "\"aws\"").unwrap();
            set_agent_option(&agent.state, "metadata_url", &format!("\"{}\"", m.url)).unwrap();
            set_agent_option(&agent.state, "heartbeat_secs", "1").unwrap();
            set_agent_table_option(
                &agent.state,
                "sensor",
                "cgroup_scope",
                &format!("\"{}\"", cgroups.scope(i)),
            )
            .unwrap();
            agent.run().unwrap();
            agent
        })
        .collect();
    let instance_of = |i: usize| format!("i-0{}{:04}", layout[i].1, layout[i].0);
    let hosts = wait_for(
        "twelve agents with their cloud context, an eBPF sensor and a self-test",
        Duration::from_secs(120),
        || {
            let hosts = collector.hosts()?;
            let ready = hosts
                .iter()
                .filter(|h| {
                    // Its first self-test too: preparedness is compared across peers.
                    h["connected"] == true
                        && h["identity"]["cloud"]["scaling_group"].is_string()
                        && h["status"]["sensor_mode"] == "ebpf"
                        && h["readiness"].is_string()
                })
                .count();
            Ok((ready == layout.len()).then_some(hosts))
        },
    )
    .unwrap();
    let id_of = |i: usize| -> String {
        hosts
            .iter()
            .find(|h| h["instance_id"] == instance_of(i).as_str())
            .and_then(|h| h["id"].as_str())
            .unwrap()
            .to_string()
    };

    // Every host runs the same workload in its cgroup: bash, which reads a file and holds a
    // connection to the common service. web-prod-7 also runs an odd binary (bash under
    // another name) holding a connection to an odd port.
    let (common, odd_port) = (holding_listener(), holding_listener());
    let workload = format!(
        "/bin/cat /etc/hostname >/dev/null; exec 3<>/dev/tcp/127.0.0.1/{common}; read -t 900 <&3"
    );
    for i in 0..layout.len() {
        cgroups.run(i, "/bin/bash", &workload);
    }
    let odd = 6;
    let payload_dir = work.path().join(".x");
    std::fs::create_dir_all(&payload_dir).unwrap();
    let payload = payload_dir.join("payload");
    std::fs::copy("/bin/bash", &payload).unwrap();
    let payload = payload.to_string_lossy().into_owned();
    let payload_pid = cgroups.run(
        odd,
        &payload,
        &format!("exec 3<>/dev/tcp/127.0.0.1/{odd_port}; read -t 900 <&3"),
    );
    let odd_id = id_of(odd);

    // The collector flags exactly that host, with both reasons, and no other host.
    let mut last = Value::Null;
    let fleet = wait_for(
        "web-prod-7 flagged, every host profiled",
        Duration::from_secs(90),
        || {
            let f = collector.cli_json(&["fleet"])?;
            last = f.clone();
            let hosts = f["hosts"].as_array().cloned().unwrap_or_default();
            let profiled = hosts
                .iter()
                .filter(|h| h["features"].as_u64() >= Some(3))
                .count();
            let flagged = hosts
                .iter()
                .any(|h| h["host_id"] == odd_id.as_str() && h["outlier"] == true);
            Ok((profiled == layout.len() && flagged).then_some(f))
        },
    )
    .unwrap_or_else(|e| {
        let evs = collector
            .api_get(&format!("/api/v1/hosts/{odd_id}/events?limit=1000"))
            .unwrap_or_default();
        panic!("{e:#}\nlast fleet: {last:#}\nweb-prod-7's events: {evs:#}")
    });
    let outliers: Vec<&str> = fleet["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["outlier"] == true)
        .filter_map(|h| h["host_id"].as_str())
        .collect();
    assert_eq!(outliers, vec![odd_id.as_str()], "{fleet:#}");
    let web = group(&fleet, "asg web-prod").unwrap();
    assert_eq!(
        (web["members"].as_u64(), web["scored"].as_bool()),
        (Some(8), Some(true))
    );
    let flagged: Vec<&Value> = web["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["outlier"] == true)
        .collect();
    assert_eq!(flagged.len(), 1, "{web:#}");
    let reasons: Vec<&str> = flagged[0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| *r == format!("only web-prod-7 of 8 in asg web-prod ran {payload}")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| *r
            == format!("only web-prod-7 of 8 in asg web-prod connected to 127.0.0.1:{odd_port}")),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r.contains(&format!(":{common}"))),
        "{reasons:?}"
    );
    // The console's architecture view: the odd one out is marked in its groups with its
    // reasons, each a link to the timeline filtered to what made it odd.
    let shots =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let b = Browser::start(work.path(), &shots).unwrap();
    b.goto(&collector.console_link("responder", "admin").unwrap())
        .unwrap();
    b.goto(&format!("{}/architecture", collector.api_url()))
        .unwrap();
    b.wait_text("odd one out", Duration::from_secs(20), false)
        .unwrap();
    let rows = b.find_all("tr.outlier").unwrap();
    assert_eq!(rows.len(), 2, "odd in its asg and in its VPC, nowhere else");
    let row = b.text(&rows[0]).unwrap();
    assert!(
        row.contains("web-prod-7") && row.contains(&payload),
        "{row}"
    );
    b.screenshot("fleet-architecture").unwrap();
    let link = b.find("tr.outlier ul.reasons a.timeline").unwrap();
    b.click(&link).unwrap();
    wait_for(
        "the timeline filtered to the odd executable",
        Duration::from_secs(20),
        || {
            let results = b.script(
                "let r = document.querySelector('section.results table'); return r ? r.innerText : ''",
            )?;
            Ok(results
                .as_str()
                .is_some_and(|t| t.contains(&payload))
                .then_some(()))
        },
    )
    .unwrap();
    assert!(b.url().unwrap().contains(&odd_id), "{}", b.url().unwrap());
    drop(b);
    let batch = group(&fleet, "asg batch").unwrap();
    assert!(batch["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["outlier"] == false));

    // A low GuardDuty finding: one step higher on the outlier than on a peer, so a policy
    // that maps the peer's priority to volatile and the next to memory collects memory of
    // the odd process there. The self-test verdict (the same machine for all) may raise both.
    let peer = 2;
    let peer_id = id_of(peer);
    let verdict = |id: &str| {
        wait_for("a self-test verdict", Duration::from_secs(120), || {
            Ok(collector
                .hosts()?
                .into_iter()
                .find(|h| h["id"] == id)
                .and_then(|h| h["readiness"].as_str().map(str::to_string)))
        })
        .unwrap()
    };
    let (v_odd, v_peer) = (verdict(&odd_id), verdict(&peer_id));
    assert_eq!(v_odd, v_peer, "one machine, one verdict");
    let (peer_p, odd_p) = if v_peer == "fail" {
        ("medium", "high")
    } else {
        ("low", "medium")
    };
    std::fs::write(
        collector.data.join("triggers.toml"),
        format!("[priority]\n{peer_p} = \"volatile\"\n{odd_p} = \"memory\"\n"),
    )
    .unwrap();
    collector.restart().unwrap();
    let post = |finding: Value| {
        collector
            .api()
            .unwrap()
            .post("/api/v1/triggers/guardduty", &finding)
            .unwrap()
    };
    let on_odd = post(low_finding(
        "5ab1c0ffee0000000000000000000007",
        &instance_of(odd),
    ));
    let on_peer = post(low_finding(
        "5ab1c0ffee0000000000000000000003",
        &instance_of(peer),
    ));
    assert_eq!(on_odd["host_id"], odd_id.as_str(), "{on_odd}");
    assert_eq!(on_odd["priority"], odd_p, "{on_odd}");
    assert_eq!(on_peer["priority"], peer_p, "{on_peer}");
    assert!(
        on_odd["priority_reasons"][1]
            .as_str()
            .unwrap()
            .contains("outlier among its peers"),
        "{on_odd}"
    );
    assert_eq!(on_odd["profile"], "memory", "{on_odd}");
    assert_eq!(on_odd["pid"], payload_pid, "{on_odd}");
    assert!(
        on_odd["profile_note"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {payload_pid}")),
        "{on_odd}"
    );
    assert_eq!(on_peer["profile"], "volatile", "{on_peer}");
    assert_eq!(on_peer["pid"], Value::Null, "{on_peer}");

    // Both collections finish; the outlier's carries the odd process's core.
    let done = |v: &Value| {
        collector
            .wait_finished(v["id"].as_str().unwrap(), Duration::from_secs(240))
            .unwrap()
    };
    let (mem, vol) = (done(&on_odd), done(&on_peer));
    assert_ne!(mem["status"], "failed", "{}", summary(&mem));
    let core = format!("core.{payload_pid}.payload");
    assert!(
        items(&mem).iter().any(|i| i["name"] == core.as_str()),
        "no {core}: {}",
        summary(&mem)
    );
    assert_eq!(vol["status"], "sealed", "{}", summary(&vol));
    assert!(items(&vol)
        .iter()
        .all(|i| !i["name"].as_str().unwrap().starts_with("core.")));
    for a in &mut agents {
        a.check_alive().unwrap();
    }
}
