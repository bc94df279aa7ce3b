//! Containment end to end, enforced by the real kernel: a collector in the root network
//! namespace, an agent in a "host" namespace, TCP/UDP servers in a "peer" namespace. The
//! host is isolated through the API, everything but the agent's channel is cut, a collection
//! still seals, a restarted agent is still isolated, and a release leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_harness::netns::Topology;
use cairn_harness::{cgroup2_root, run, summary, workdir, Agent, Bins, Collector};
use std::time::Duration;

const PORT: u16 = 7000;

fn root() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string));
    uid.as_deref() == Some("0")
}

/// A collector in the root namespace, an enrolled agent running in a fresh "host" namespace:
/// (work dir, topology, collector, agent, host id). Fields drop in reverse: agent, collector,
/// then the namespaces.
struct Setup {
    agent: Agent,
    c: Collector,
    t: Topology,
    work: cairn_harness::tempfile::TempDir,
    host: String,
}

fn setup(
    name: &str,
    tag: &str,
    configure: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> Setup {
    let work = workdir(name).unwrap();
    let t = Topology::create(tag).unwrap();
    let c = Collector::start_at(
        &Bins::beside_test_exe().unwrap(),
        &work.path().join("collector"),
        &t.root_ip,
        configure,
    )
    .unwrap();
    let mut agent = Agent::enroll_in(&c, &work.path().join("agent")).unwrap();
    agent.run_in_netns(&t.host_ns).unwrap();
    let host = agent.wait_connected(&c, Duration::from_secs(60)).unwrap();
    Setup {
        agent,
        c,
        t,
        work,
        host,
    }
}

fn nft_ruleset(ns: &str) -> String {
    let mut c = Topology::command(ns, "nft");
    c.args(["list", "ruleset"]);
    let out = run(c, Duration::from_secs(10)).unwrap();
    assert!(out.success(), "{}", out.describe("nft list ruleset"));
    out.stdout
}

/// (host → peer TCP, UDP, ping v4, TCP over v6, peer → host TCP)
fn reach(t: &Topology) -> [bool; 5] {
    [
        Topology::tcp_connects(&t.host_ns, &t.peer_ip, PORT).unwrap(),
        Topology::udp_echoes(&t.host_ns, &t.peer_ip, PORT).unwrap(),
        Topology::pings(&t.host_ns, &t.peer_ip).unwrap(),
        Topology::tcp_connects(&t.host_ns, &t.peer_ip6, PORT).unwrap(),
        Topology::tcp_connects(&t.peer_ns, &t.host_peer_ip, PORT).unwrap(),
    ]
}

fn contain(c: &Collector, args: &[&str]) -> serde_json::Value {
    let out = c.cli_text(args, Duration::from_secs(120)).unwrap();
    assert!(out.success(), "{}", out.describe(&args.join(" ")));
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn an_isolated_host_reaches_only_its_collector_until_released() {
    if !root() {
        eprintln!("skipped: network namespaces and nftables need root");
        return;
    }
    let Setup {
        mut agent,
        c,
        t,
        work,
        host,
    } = setup("containment", "iso", |_| Ok(()));
    let _peer4 = Topology::echo_servers(&t.peer_ns, &t.peer_ip, PORT).unwrap();
    let _peer6 = Topology::echo_servers(&t.peer_ns, &t.peer_ip6, PORT).unwrap();
    let _on_host = Topology::echo_servers(&t.host_ns, &t.host_peer_ip, PORT).unwrap();
    assert_eq!(reach(&t), [true; 5], "before isolation");

    // Isolated, with one TCP port of the peer allowed.
    let allow = format!("{},tcp/{},jump host", t.peer_ip, PORT + 1);
    let _jump = Topology::echo_servers(&t.peer_ns, &t.peer_ip, PORT + 1).unwrap();
    let done = contain(
        &c,
        &[
            "--json",
            "isolate",
            &host,
            "--reason",
            "IR-15: isolate",
            "--allow",
            &allow,
        ],
    );
    assert_eq!(done["status"], "done", "{done}");
    let o = &done["outcome"];
    assert!(o["mechanism"].as_str().unwrap().contains("nftables"), "{o}");
    assert!(o["verified_rtt_ms"].as_f64().is_some(), "{o}");
    let rules_sha = o["rules_sha256"].as_str().unwrap().to_string();
    assert_eq!(reach(&t), [false; 5], "while isolated");
    assert!(
        Topology::tcp_connects(&t.host_ns, &t.peer_ip, PORT + 1).unwrap(),
        "the allow-listed port stays reachable"
    );
    assert!(nft_ruleset(&t.host_ns).contains("cairn_isolation"));

    // The evidence channel still works: a collection seals, and says the host is isolated.
    let col = c
        .collect_wait(
            &host,
            "volatile",
            "IR-15: while isolated",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(col["status"], "sealed", "{}", summary(&col));
    let cid = col["id"].as_str().unwrap();
    let out = work.path().join("network.json");
    c.export(&format!("{cid}:network.json"), &out).unwrap();
    let network: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        network["isolation"]["host"]["rules_sha256"],
        rules_sha.as_str(),
        "{}",
        network["isolation"]
    );

    // The host list and the history say who isolated it and why.
    let hosts = c.api_get("/api/v1/hosts").unwrap();
    let me = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == host.as_str())
        .unwrap();
    assert_eq!(me["containment"][0]["state"], "isolated", "{me}");
    assert_eq!(me["containment"][0]["reason"], "IR-15: isolate");

    // Restarted with its table gone (as after a reboot): isolated again before it connects.
    agent.kill();
    let mut del = Topology::command(&t.host_ns, "nft");
    del.args(["delete", "table", "inet", "cairn_isolation"]);
    assert!(run(del, Duration::from_secs(10)).unwrap().success());
    assert!(Topology::tcp_connects(&t.host_ns, &t.peer_ip, PORT).unwrap());
    agent.run_in_netns(&t.host_ns).unwrap();
    agent.wait_connected(&c, Duration::from_secs(60)).unwrap();
    assert_eq!(reach(&t), [false; 5], "isolated after a restart");

    // Released: everything works again and nothing of cairn is left.
    let released = contain(&c, &["--json", "release", &host, "--reason", "IR-15: done"]);
    assert_eq!(released["status"], "done", "{released}");
    assert_eq!(reach(&t), [true; 5], "after release");
    assert!(!nft_ruleset(&t.host_ns).contains("cairn"));

    // Custody: requested, sent, isolated (with the hash of the rules), released.
    let h = c
        .api_get(&format!("/api/v1/hosts/{host}/containment"))
        .unwrap();
    assert_eq!(h["in_force"], serde_json::json!([]), "{h}");
    let actions: Vec<&str> = h["custody"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"isolated") && actions.contains(&"released"),
        "{actions:?}"
    );
    let isolated = h["custody"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "isolated")
        .unwrap();
    assert_eq!(isolated["details"]["rules_sha256"], rules_sha.as_str());

    // And the timeline shows both moments.
    let tl = c
        .api_get(&format!(
            "/api/v1/timeline?host={host}&kind=containment&from=-1h"
        ))
        .unwrap();
    let msgs: Vec<&str> = tl["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        msgs.iter().any(|m| m.starts_with("isolated host"))
            && msgs.iter().any(|m| m.starts_with("released host")),
        "{msgs:?}"
    );
}

fn nft_root(script: &str) -> bool {
    let mut c = std::process::Command::new("nft");
    c.args(["-f", "-"]).stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    child.wait().unwrap().success()
}

/// Removes the test's block in the root namespace even when an assertion failed.
struct Block(String);

impl Drop for Block {
    fn drop(&mut self) {
        nft_root(&format!("table inet {0}\ndelete table inet {0}\n", self.0));
    }
}

#[test]
fn an_isolation_that_cuts_the_agent_off_is_rolled_back() {
    if !root() {
        eprintln!("skipped: network namespaces and nftables need root");
        return;
    }
    let Setup {
        agent: _agent,
        c,
        t,
        work: _work,
        host,
    } = setup("containment-rollback", "rb", |_| Ok(()));
    let _peer = Topology::echo_servers(&t.peer_ns, &t.peer_ip, PORT).unwrap();

    // What the agent sends the collector is lost from now on (what the collector sends still
    // arrives): the command gets there, the proof of the channel cannot.
    let table = format!("cairntest_block_{}", std::process::id());
    assert!(nft_root(&format!(
        "table inet {table} {{\n chain input {{ type filter hook input priority -400; policy accept; ip saddr {} udp dport {} drop; }}\n}}\n",
        t.host_ip, c.quic_port
    )));
    let block = Block(table);
    let asked = contain(
        &c,
        &[
            "--json",
            "isolate",
            &host,
            "--reason",
            "IR-15: rollback",
            "--no-wait",
        ],
    );
    let id = asked["id"].as_str().unwrap().to_string();
    // Enforced, then undone when the round trip fails.
    let mut seen = false;
    let start = std::time::Instant::now();
    loop {
        let present = nft_ruleset(&t.host_ns).contains("cairn_isolation");
        seen |= present;
        if seen && !present {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "isolation applied: {seen}; never rolled back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Topology::tcp_connects(&t.host_ns, &t.peer_ip, PORT).unwrap());
    drop(block);
    // The answer reaches the collector once the agent can talk to it again.
    let start = std::time::Instant::now();
    let row = loop {
        let r = c.api_get(&format!("/api/v1/containment/{id}")).unwrap();
        if r["status"] == "failed" || r["status"] == "done" {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no answer: {r}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["outcome"]["rolled_back"], true, "{row}");
    assert!(
        row["outcome"]["error"]
            .as_str()
            .unwrap()
            .contains("collector"),
        "{row}"
    );
    let h = c
        .api_get(&format!("/api/v1/hosts/{host}/containment"))
        .unwrap();
    assert_eq!(h["in_force"], serde_json::json!([]), "{h}");
    assert!(h["custody"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "containment_rolled_back"));
}

/// A "container": a cgroup named as Docker names them, with a process in it.
struct FakeContainer {
    id: String,
    dir: std::path::PathBuf,
    top: std::path::PathBuf,
    init: std::process::Child,
}

impl FakeContainer {
    fn start(ns: &str) -> FakeContainer {
        let pid = std::process::id();
        let id = format!("{:064x}", 0xcafe_0000_u64 + u64::from(pid));
        let top = cgroup2_root().unwrap().join(format!("cairn-e2e-{pid}"));
        let dir = top.join(format!("docker-{id}.scope"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Topology::command(ns, "sh");
        c.arg("-c").arg(format!(
            "echo $$ > {}/cgroup.procs && exec sleep 600",
            dir.display()
        ));
        let init = c.spawn().unwrap();
        FakeContainer { id, dir, top, init }
    }

    /// Whether a TCP connection from inside the container (its cgroup, in `ns`) works.
    fn tcp_connects(&self, ns: &str, addr: &str, port: u16) -> bool {
        let mut c = Topology::command(ns, "sh");
        c.arg("-c").arg(format!(
            "echo $$ > {}/cgroup.procs && exec python3 -c \"import socket,sys\ns=socket.create_connection(('{addr}',{port}),timeout=1.5)\ns.sendall(b'x')\nsys.exit(0 if s.recv(1)==b'x' else 1)\"",
            self.dir.display()
        ));
        run(c, Duration::from_secs(10)).unwrap().success()
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = self.init.kill();
        let _ = self.init.wait();
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_dir(&self.top);
    }
}

#[test]
fn isolating_a_container_cuts_only_that_container() {
    if !root() {
        eprintln!("skipped: network namespaces, cgroups and BPF need root");
        return;
    }
    let Setup {
        agent: _agent,
        c,
        t,
        work: _work,
        host,
    } = setup("containment-container", "ctr", |_| Ok(()));
    let _peer = Topology::echo_servers(&t.peer_ns, &t.peer_ip, PORT).unwrap();
    let ctr = FakeContainer::start(&t.host_ns);
    assert!(ctr.tcp_connects(&t.host_ns, &t.peer_ip, PORT), "before");

    let done = contain(
        &c,
        &[
            "--json",
            "isolate",
            &host,
            "--container",
            &ctr.id[..12],
            "--reason",
            "IR-15: one container",
        ],
    );
    assert_eq!(done["status"], "done", "{done}");
    assert!(
        done["outcome"]["mechanism"]
            .as_str()
            .unwrap()
            .contains("cgroup_skb"),
        "{done}"
    );
    assert!(
        !ctr.tcp_connects(&t.host_ns, &t.peer_ip, PORT),
        "the container is cut"
    );
    assert!(
        Topology::tcp_connects(&t.host_ns, &t.peer_ip, PORT).unwrap(),
        "the host around it is not"
    );
    assert!(
        !nft_ruleset(&t.host_ns).contains("cairn"),
        "no host table for a container"
    );
    // The agent's own channel is untouched: a collection still seals.
    let col = c
        .collect_wait(
            &host,
            "volatile",
            "IR-15: container isolated",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(col["status"], "sealed", "{}", summary(&col));

    // Frozen, its memory is still captured; thawed, it runs on.
    let id12 = &ctr.id[..12];
    let events = ctr.dir.join("cgroup.events");
    let frozen = || {
        std::fs::read_to_string(&events)
            .unwrap()
            .contains("frozen 1")
    };
    let done = contain(
        &c,
        &[
            "--json",
            "freeze",
            &host,
            "--container",
            id12,
            "--reason",
            "IR-15: freeze",
        ],
    );
    assert_eq!(done["status"], "done", "{done}");
    assert!(frozen(), "cgroup.events says frozen");
    let mem = c
        .cli_json_timeout(
            &[
                "collect",
                &host,
                "--profile",
                "memory",
                "--container",
                id12,
                "--reason",
                "IR-15: frozen memory",
                "--wait",
                "--timeout",
                "300",
            ],
            Duration::from_secs(320),
        )
        .unwrap();
    assert_eq!(mem["status"], "sealed", "{}", summary(&mem));
    let core = mem["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "process_core")
        .unwrap_or_else(|| panic!("no core: {}", summary(&mem)));
    assert_eq!(core["status"], "sealed", "{core}");
    assert!(frozen(), "still frozen after the capture");
    let done = contain(
        &c,
        &[
            "--json",
            "thaw",
            &host,
            "--container",
            id12,
            "--reason",
            "IR-15: thaw",
        ],
    );
    assert_eq!(done["status"], "done", "{done}");
    assert!(!frozen(), "thawed");

    let released = contain(
        &c,
        &[
            "--json",
            "release",
            &host,
            "--container",
            &ctr.id[..12],
            "--reason",
            "IR-15: done",
        ],
    );
    assert_eq!(released["status"], "done", "{released}");
    assert!(
        ctr.tcp_connects(&t.host_ns, &t.peer_ip, PORT),
        "after release"
    );
    let pins = std::path::Path::new("/sys/fs/bpf/cairn/isolation");
    let left: Vec<_> = std::fs::read_dir(pins)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pins left: {left:?}");
    // Containment actions are not collections: two of them on this connection leave the
    // host's two collection slots free.
    let col = c
        .collect_wait(
            &host,
            "volatile",
            "IR-15: after release",
            &[],
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(col["status"], "sealed", "{}", summary(&col));
}

#[test]
fn a_trigger_rule_collects_then_isolates_then_collects_in_that_order() {
    if !root() {
        eprintln!("skipped: network namespaces and nftables need root");
        return;
    }
    let Setup {
        agent,
        c,
        t,
        work,
        host,
    } = setup("containment-trigger", "trg", |data| {
        std::fs::write(
                data.join("triggers.toml"),
                "[generic.severity]\ncritical = \"volatile\"\n\n\
                 [[containment]]\nsource = \"generic\"\nseverity = [\"critical\"]\nthen = [\"isolate\", \"volatile\"]\n",
            )?;
        Ok(())
    });
    let _peer = Topology::echo_servers(&t.peer_ns, &t.peer_ip, PORT).unwrap();
    let api = c.api().unwrap();
    // Nothing is contained by an alert no rule names.
    let low = api
        .post(
            "/api/v1/triggers/generic",
            &serde_json::json!({"host": host, "reason": "IR-15 low", "severity": "low", "dedup_key": "low"}),
        )
        .unwrap();
    assert_eq!(low["then"], serde_json::json!([]), "{low}");
    let v = api
        .post(
            "/api/v1/triggers/generic",
            &serde_json::json!({"host": host, "reason": "IR-15 miner", "severity": "critical", "rule": "miner"}),
        )
        .unwrap();
    assert_eq!(v["then"], serde_json::json!(["isolate", "volatile"]), "{v}");
    let first = v["id"].as_str().unwrap().to_string();
    let start = std::time::Instant::now();
    let h = loop {
        let h = c
            .api_get(&format!("/api/v1/hosts/{host}/containment"))
            .unwrap();
        if h["sequences"][0]["status"] == "done" {
            break h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "sequence not done: {h}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let seq = &h["sequences"][0];
    let log: Vec<&str> = seq["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(
        log[1].starts_with("isolate: containment ") && log[2].starts_with("volatile: collection "),
        "{log:?}"
    );
    let second = log[2].rsplit(' ').next().unwrap().to_string();
    assert!(!reach(&t)[0], "isolated by the rule");
    assert_eq!(h["in_force"][0]["state"], "isolated", "{h}");
    assert!(
        h["in_force"][0]["by"]
            .as_str()
            .unwrap()
            .contains("[[containment]]"),
        "{h}"
    );

    // In that order: the first collection saw the host open, the second saw it isolated.
    let isolation = |cid: &str| {
        let col = c.api_get(&format!("/api/v1/collections/{cid}")).unwrap();
        assert_eq!(col["status"], "sealed", "{}", summary(&col));
        let out = work.path().join(format!("network-{cid}.json"));
        c.export(&format!("{cid}:network.json"), &out).unwrap();
        let n: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        (col, n["isolation"]["host"].clone())
    };
    let (c1, before) = isolation(&first);
    let (c2, after) = isolation(&second);
    assert!(
        before.is_null(),
        "the first collection ran before the isolation: {before}"
    );
    assert!(
        after["rules_sha256"].is_string(),
        "the second ran isolated: {after}"
    );
    let isolated_at = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "isolate")
        .map(|r| r["outcome"]["at"].as_str().unwrap().to_string())
        .unwrap();
    let ns = |t: &str| cairn_protocol::rfc3339::parse_ns(t).unwrap();
    let (finished, requested) = (
        ns(c1["finished_at"].as_str().unwrap()),
        ns(c2["requested_at"].as_str().unwrap()),
    );
    assert!(finished <= ns(&isolated_at), "{c1} {isolated_at}");
    assert!(ns(&isolated_at) <= requested, "{isolated_at} {c2}");

    // Break glass on the host, while the agent runs: released there, recorded here.
    let out = agent
        .command(
            Some(&t.host_ns),
            "isolation",
            &["release", "--local", "--reason", "IR-15: break glass"],
        )
        .unwrap();
    assert!(
        out.success(),
        "{}",
        out.describe("isolation release --local")
    );
    assert!(reach(&t)[0], "released on the host");
    let start = std::time::Instant::now();
    let local = loop {
        let h = c
            .api_get(&format!("/api/v1/hosts/{host}/containment"))
            .unwrap();
        let found = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["requested_by"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("local:"))
                    && r["status"] == "done"
            })
            .cloned();
        if let Some(r) = found {
            assert_eq!(h["in_force"], serde_json::json!([]), "{h}");
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "break glass not recorded: {h}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(local["reason"], "IR-15: break glass", "{local}");
    assert_eq!(local["action"], "release", "{local}");
}

/// The host's `last-breath` collection once it is final: (collection view, custody log).
fn last_breath_collection(
    c: &Collector,
    host: &str,
    wait: Duration,
) -> (serde_json::Value, serde_json::Value) {
    let api = c.api().unwrap();
    let until = std::time::Instant::now() + wait;
    loop {
        let list = api
            .get(&format!("/api/v1/collections?host={host}"))
            .unwrap();
        let found = list["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["profile"] == "last-breath")
            .cloned();
        if let Some(r) = found {
            let id = r["id"].as_str().unwrap().to_string();
            let view = api.get(&format!("/api/v1/collections/{id}")).unwrap();
            if matches!(
                view["status"].as_str(),
                Some("sealed" | "partial" | "failed")
            ) {
                let log = api
                    .get(&format!("/api/v1/collections/{id}/custody"))
                    .unwrap();
                return (view, log);
            }
        }
        assert!(
            std::time::Instant::now() < until,
            "no final last-breath collection within {wait:?}: {list:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn custody_record<'a>(log: &'a serde_json::Value, action: &str) -> &'a serde_json::Value {
    let records = log["records"].as_array().or(log.as_array()).unwrap();
    records
        .iter()
        .find(|r| r["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {log:#}"))
}

/// A "container" whose root is an overlay (lower: the host's /, upper: a directory of the
/// test), as a runtime mounts one: its writable layer is the upperdir.
struct OverlayContainer {
    ctr: FakeContainer,
    upper: std::path::PathBuf,
    merged: std::path::PathBuf,
}

impl OverlayContainer {
    fn start(ns: &str, base: &std::path::Path) -> OverlayContainer {
        let pid = std::process::id();
        let id = format!("{:064x}", 0xbea7_0000_u64 + u64::from(pid));
        let top = cgroup2_root().unwrap().join(format!("cairn-e2e-lb-{pid}"));
        let dir = top.join(format!("docker-{id}.scope"));
        std::fs::create_dir_all(&dir).unwrap();
        let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut m = std::process::Command::new("mount");
        m.args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir=/,upperdir={},workdir={}",
                upper.display(),
                work.display()
            ))
            .arg(&merged);
        let out = run(m, Duration::from_secs(10)).unwrap();
        assert!(out.success(), "{}", out.describe("mount overlay"));
        // In its cgroup, in a mount namespace whose root is the overlay: it writes a file
        // (into the upperdir) and waits.
        let mut c = Topology::command(ns, "sh");
        c.arg("-c").arg(format!(
            "echo $$ > {}/cgroup.procs && exec unshare --mount --root={} /bin/sh -c 'mkdir -p /var/tmp/.x && echo payload-of-the-attacker > /var/tmp/.x/dropper && exec sleep 600'",
            dir.display(),
            merged.display()
        ));
        let init = c.spawn().unwrap();
        OverlayContainer {
            ctr: FakeContainer { id, dir, top, init },
            upper,
            merged,
        }
    }
}

impl Drop for OverlayContainer {
    fn drop(&mut self) {
        let _ = self.ctr.init.kill();
        let _ = self.ctr.init.wait();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.merged)
            .status();
    }
}

#[test]
fn a_marked_container_that_exits_sends_its_writable_layer_as_its_last_breath() {
    if !root() {
        eprintln!("skipped: cgroups, overlay mounts and namespaces need root");
        return;
    }
    let Setup {
        agent: _agent,
        c,
        t,
        work,
        host,
    } = setup("containment-last-breath", "lbc", |_| Ok(()));
    let mut ctr = OverlayContainer::start(&t.host_ns, &work.path().join("overlay"));
    let dropper = ctr.upper.join("var/tmp/.x/dropper");
    cairn_harness::wait_for("the container's file", Duration::from_secs(10), || {
        Ok(dropper.is_file().then_some(()))
    })
    .unwrap();

    let done = contain(
        &c,
        &[
            "--json",
            "last-breath",
            &host,
            "--container",
            &ctr.ctr.id,
            "--reason",
            "IR-15: keep its layer",
        ],
    );
    assert_eq!(done["status"], "done", "{done}");
    let mechanism = done["outcome"]["mechanism"].as_str().unwrap();
    assert!(
        mechanism.contains(&ctr.upper.display().to_string()),
        "the mark found the writable layer: {done}"
    );
    let shown = contain(&c, &["--json", "containment", &host]);
    assert!(
        shown["in_force"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["state"] == "marked for last breath"),
        "{shown}"
    );

    // The container's last process exits.
    ctr.ctr.init.kill().unwrap();
    ctr.ctr.init.wait().unwrap();
    let (view, log) = last_breath_collection(&c, &host, Duration::from_secs(120));
    let items = view["items"].as_array().unwrap();
    let layer_file = items
        .iter()
        .find(|i| i["source"]["path"] == "/var/tmp/.x/dropper")
        .unwrap_or_else(|| panic!("no dropper in {}", summary(&view)));
    assert_eq!(layer_file["status"], "sealed", "{layer_file}");
    assert_eq!(
        layer_file["source"]["details"]["root"],
        ctr.upper.display().to_string(),
        "{layer_file}"
    );
    assert_eq!(
        layer_file["sha256"].as_str().unwrap(),
        cairn_harness::sha256_bytes(b"payload-of-the-attacker\n")
    );
    for doc in ["host.json", "processes.json", "network.json"] {
        assert!(
            items
                .iter()
                .any(|i| i["source"]["name"] == doc && i["status"] == "sealed"),
            "{doc} in {}",
            summary(&view)
        );
    }
    assert_eq!(view["status"], "sealed", "{}", summary(&view));
    let asked = custody_record(&log, "trigger_received");
    assert_eq!(
        asked["details"]["last_breath"]["event"], "container_exit",
        "{asked}"
    );
    let finished = custody_record(&log, "collection_finished");
    assert_eq!(
        finished["details"]["items_sealed"].as_u64(),
        Some(items.len() as u64),
        "{finished}"
    );
    // The mark was used: the agent removed it and said so.
    let history = cairn_harness::wait_for("the mark removed", Duration::from_secs(30), || {
        let v = contain(&c, &["--json", "containment", &host]);
        Ok(v["in_force"].as_array().unwrap().is_empty().then_some(v))
    })
    .unwrap();
    let unmarked = &history["history"][0];
    assert_eq!(unmarked["action"], "unmark_last_breath", "{history:#}");
    assert!(
        unmarked["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("local:cairn-agent"),
        "{unmarked}"
    );
}

#[test]
fn a_marked_host_sends_its_last_breath_when_the_agent_is_stopped() {
    if !root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let Setup {
        mut agent,
        c,
        t,
        work: _work,
        host,
    } = setup("containment-last-breath-host", "lbh", |_| Ok(()));
    // Not marked: SIGTERM stops the agent at once, and nothing is collected.
    let started = std::time::Instant::now();
    let status = agent.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let list = c
        .api()
        .unwrap()
        .get(&format!("/api/v1/collections?host={host}"))
        .unwrap();
    assert_eq!(list["collections"].as_array().unwrap().len(), 0, "{list}");
    agent.run_in_netns(&t.host_ns).unwrap();
    agent.wait_connected(&c, Duration::from_secs(60)).unwrap();

    let done = contain(
        &c,
        &[
            "--json",
            "last-breath",
            &host,
            "--reason",
            "IR-15: an instance about to be scaled in",
        ],
    );
    assert_eq!(done["status"], "done", "{done}");
    let status = agent.terminate(Duration::from_secs(40)).unwrap();
    assert!(status.success(), "the agent exits cleanly: {status}");
    let (view, log) = last_breath_collection(&c, &host, Duration::from_secs(30));
    assert_eq!(view["status"], "sealed", "{}", summary(&view));
    assert!(
        view["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("last-breath:"),
        "{view}"
    );
    let items = view["items"].as_array().unwrap();
    assert!(
        items.iter().any(|i| i["source"]["name"] == "events.jsonl"),
        "the flight recorder goes too: {}",
        summary(&view)
    );
    let asked = custody_record(&log, "trigger_received");
    assert_eq!(asked["details"]["last_breath"]["event"], "host_shutdown");
    assert_eq!(asked["details"]["last_breath"]["budget_secs"], 20);
    let finished = custody_record(&log, "collection_finished");
    assert!(finished["details"]["bytes_sealed"].as_u64().unwrap() > 0);
}
