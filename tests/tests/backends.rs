//! The collector on the engines users already run: evidence in a real S3-compatible object
//! store (Garage on loopback), sealed, served and verified from there; an object store that
//! goes away pauses uploads with a clear status and nothing unstored is acknowledged; `/readyz`
//! and `/metrics` say what an operator needs.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use cairn_harness::garage::Garage;
use cairn_harness::*;

const MIB: u64 = 1 << 20;

fn s3_collector(garage: &Garage, base: &Path, prefix: &str) -> (Collector, Agent, String) {
    let mut env: Vec<(String, String)> = garage
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.push(("CAIRN_BLOBS".into(), garage.url(prefix)));
    let bins = Bins::beside_test_exe().unwrap();
    let collector =
        Collector::start_with(&bins, &base.join("collector"), "127.0.0.1", env, |_| Ok(()))
            .unwrap();
    let mut agent = Agent::enroll_in(&collector, &base.join("agent")).unwrap();
    agent.run().unwrap();
    let host = agent
        .wait_connected(&collector, Duration::from_secs(60))
        .unwrap();
    (collector, agent, host)
}

/// `GET path` on the API listener without a token: (status, body).
fn get_plain(c: &Collector, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&c.init.ca_cert)
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{}{path}", c.api_url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

fn collect_file(c: &Collector, host: &str, path: &Path) -> String {
    let req = c
        .cli_json(&[
            "collect",
            host,
            "--profile",
            "file",
            "--path",
            &path.to_string_lossy(),
            "--reason",
            "e2e object store",
        ])
        .unwrap();
    s(&req, "id").unwrap()
}

fn the_item(done: &serde_json::Value, path: &Path) -> serde_json::Value {
    let p = path.to_string_lossy();
    items(done)
        .into_iter()
        .find(|i| i["source"]["path"].as_str() == Some(p.as_ref()))
        .unwrap_or_else(|| panic!("no item for {p} in {done:#}"))
}

#[test]
fn evidence_in_an_object_store_is_sealed_served_and_verified_from_it() {
    let work = workdir("backends-s3").unwrap();
    let garage = Garage::start().unwrap();
    let (collector, _agent, host) = s3_collector(&garage, work.path(), "fleet-a");
    let (code, ready) = get_plain(&collector, "/readyz");
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("\"blob_store\":{\"ok\":true"), "{ready}");

    let file = work.path().join("evidence.bin");
    let sha = write_random_file(&file, 40 * MIB, 0x5353).unwrap();
    let cid = collect_file(&collector, &host, &file);
    let done = collector
        .wait_finished(&cid, Duration::from_secs(240))
        .unwrap();
    assert_eq!(done["status"], "sealed", "{}", summary(&done));
    let item = the_item(&done, &file);
    assert_eq!(s(&item, "sha256").unwrap(), sha);

    // Nothing went to the local chunk directory: the bytes are in the bucket.
    let local: Vec<_> = walk(&collector.data.join("chunks"));
    assert!(local.is_empty(), "chunks stored locally: {local:?}");

    // Served back from the object store, re-verified on the way out.
    let out = work.path().join("exported.bin");
    collector.export(&s(&item, "id").unwrap(), &out).unwrap();
    assert_eq!(sha256_file(&out).unwrap(), sha);

    // Custody verifies against the heads kept in the bucket.
    let v = collector
        .cli_raw(&["custody", "verify", &cid], Duration::from_secs(120))
        .unwrap();
    assert!(v.success(), "{}", v.describe("custody verify"));

    let (code, m) = get_plain(&collector, "/metrics");
    assert_eq!(code, 200);
    let chunks = metric(&m, "cairn_chunks_received_total");
    assert!(chunks >= 10.0, "40 MiB is at least 10 chunks: {chunks}");
    let puts = metric(&m, "cairn_object_store_request_seconds_count{op=\"put\"}");
    assert!(
        puts >= chunks,
        "every stored chunk is a PUT: {puts} < {chunks}"
    );
    assert_eq!(
        metric(&m, "cairn_object_store_request_errors_total{op=\"put\"}"),
        0.0
    );
    assert!(
        metric(
            &m,
            "cairn_object_store_request_seconds_count{op=\"put_head\"}"
        ) >= 1.0
    );
    assert!(metric(&m, "cairn_bytes_received_total") >= (40 * MIB) as f64);
    assert_eq!(metric(&m, "cairn_verification_failures_total"), 0.0);
    assert_eq!(metric(&m, "cairn_agents_connected"), 1.0);
    assert_eq!(metric(&m, "cairn_object_store_unavailable"), 0.0);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn an_object_store_that_goes_away_pauses_uploads_until_it_is_back() {
    let work = workdir("backends-s3-away").unwrap();
    let mut garage = Garage::start().unwrap();
    let (collector, _agent, host) = s3_collector(&garage, work.path(), "fleet-b");
    let file = work.path().join("big.bin");
    let sha = write_random_file(&file, 160 * MIB, 0xA11A).unwrap();
    let cid = collect_file(&collector, &host, &file);
    wait_for_every(
        "some chunks to be stored",
        Duration::from_secs(120),
        Duration::from_millis(30),
        || {
            let c = collector.show(&cid)?;
            if c["status"] == "sealed" {
                anyhow::bail!("the upload finished before the store went away: {c}");
            }
            Ok(items(&c)
                .into_iter()
                .find(|i| i["chunks_received"].as_u64().unwrap_or(0) >= 4))
        },
    )
    .unwrap();
    garage.stop();

    // The collection says why it waits; so do /healthz and /readyz.
    let paused = wait_for(
        "the collection to be paused",
        Duration::from_secs(60),
        || {
            let c = collector.show(&cid)?;
            Ok((c["status"] == "paused").then_some(c))
        },
    )
    .unwrap();
    let text = paused.to_string();
    assert!(text.contains("object store"), "no reason given: {paused:#}");
    let received_while_away = u(&the_item(&paused, &file), "chunks_received").unwrap();
    let (code, health) = get_plain(&collector, "/healthz");
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("\"store_unavailable\":true"), "{health}");
    let (code, ready) = get_plain(&collector, "/readyz");
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains("\"blob_store\":{\"ok\":false"), "{ready}");

    // Nothing more is acknowledged while the store is away.
    std::thread::sleep(Duration::from_secs(3));
    let still = collector.show(&cid).unwrap();
    assert_eq!(
        u(&the_item(&still, &file), "chunks_received").unwrap(),
        received_while_away,
        "chunks were recorded while the object store was down: {still:#}"
    );

    garage.resume().unwrap();
    let done = collector
        .wait_finished(&cid, Duration::from_secs(300))
        .unwrap();
    assert_eq!(done["status"], "sealed", "{}", summary(&done));
    assert_eq!(s(&the_item(&done, &file), "sha256").unwrap(), sha);
    let v = collector
        .cli_raw(&["custody", "verify", &cid], Duration::from_secs(120))
        .unwrap();
    assert!(v.success(), "{}", v.describe("custody verify"));
    let (code, ready) = get_plain(&collector, "/readyz");
    assert_eq!(code, 200, "{ready}");
}

/// The store answers but refuses writes (the key lost its write permission): the same pause,
/// with the store's answer in the reason, until the permission is back.
#[test]
fn an_object_store_refusing_writes_pauses_uploads_until_allowed() {
    let work = workdir("backends-s3-deny").unwrap();
    let garage = Garage::start().unwrap();
    let (collector, _agent, host) = s3_collector(&garage, work.path(), "fleet-c");
    let bucket = garage.bucket.clone();
    garage
        .cli(&["bucket", "deny", "--write", &bucket, "--key", "cairn-test"])
        .unwrap();
    let file = work.path().join("denied.bin");
    let sha = write_random_file(&file, 24 * MIB, 0xD3D3).unwrap();
    let cid = collect_file(&collector, &host, &file);
    let paused = wait_for(
        "the collection to be paused",
        Duration::from_secs(90),
        || {
            let c = collector.show(&cid)?;
            Ok((c["status"] == "paused").then_some(c))
        },
    )
    .unwrap();
    assert_eq!(
        u(&the_item(&paused, &file), "chunks_received").unwrap(),
        0,
        "a chunk was recorded that the store refused: {paused:#}"
    );
    let (_, health) = get_plain(&collector, "/healthz");
    // Garage answers 403 before reading a 4 MiB body and closes: the collector sees either the
    // 403 or the broken pipe, and says which request failed.
    assert!(
        health.contains("\"store_unavailable\":true") && health.contains("PUT /cairn-evidence"),
        "the failing request is shown: {health}"
    );
    garage
        .cli(&["bucket", "allow", "--write", &bucket, "--key", "cairn-test"])
        .unwrap();
    let done = collector
        .wait_finished(&cid, Duration::from_secs(300))
        .unwrap();
    assert_eq!(done["status"], "sealed", "{}", summary(&done));
    assert_eq!(s(&the_item(&done, &file), "sha256").unwrap(), sha);
    // The heads that could not be written meanwhile are published now, and custody verifies.
    wait_for(
        "the pending custody heads to be published",
        Duration::from_secs(30),
        || {
            let (code, h) = get_plain(&collector, "/healthz");
            Ok((code == 200 && h.contains("\"custody_heads_pending\":0")).then_some(()))
        },
    )
    .unwrap();
    let v = collector
        .cli_raw(&["custody", "verify", &cid], Duration::from_secs(120))
        .unwrap();
    assert!(v.success(), "{}", v.describe("custody verify"));
}

/// Two instances on one PostgreSQL and one bucket serve one fleet: a collection asked of
/// either reaches the agent wherever it is connected, custody verifies on both, and when the
/// instance an agent uploads to dies, the agent finishes on the other without sending again
/// what was acknowledged.
#[test]
fn two_instances_serve_one_fleet_and_an_agent_fails_over_mid_upload() {
    let work = workdir("backends-two").unwrap();
    let garage = Garage::start().unwrap();
    let mut env: Vec<(String, String)> = garage
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.push(("CAIRN_BLOBS".into(), garage.url("fleet")));
    env.push((
        "CAIRN_DATABASE".into(),
        backends::postgres_database().unwrap(),
    ));
    let bins = Bins::beside_test_exe().unwrap();
    let mut one =
        Collector::start_with(
            &bins,
            &work.path().join("one"),
            "127.0.0.1",
            env,
            |_| Ok(()),
        )
        .unwrap();
    let two = one.start_peer(&work.path().join("two")).unwrap();
    let both = format!("{},{}", one.quic_addr(), two.quic_addr());

    // Agent A on instance one (two listed after it); agent B on instance two.
    let mut a = Agent::enroll_in(&one, &work.path().join("a")).unwrap();
    a.set_collectors(&both).unwrap();
    a.run().unwrap();
    let host_a = a.wait_connected(&one, Duration::from_secs(60)).unwrap();
    let mut b = Agent::enroll_with(&two, work.path(), &["--new-identity"]).unwrap();
    b.run().unwrap();
    let host_b = b.wait_connected(&two, Duration::from_secs(60)).unwrap();
    assert_ne!(host_a, host_b);

    // A collection asked of instance two for agent A (connected to one) is collected.
    let req = two
        .cli_json(&[
            "collect",
            &host_a,
            "--profile",
            "volatile",
            "--reason",
            "cross-instance",
        ])
        .unwrap();
    let cid = s(&req, "id").unwrap();
    let done = two.wait_finished(&cid, Duration::from_secs(180)).unwrap();
    assert_eq!(done["status"], "sealed", "{}", summary(&done));
    for c in [&one, &two] {
        let v = c
            .cli_raw(&["custody", "verify", &cid], Duration::from_secs(120))
            .unwrap();
        assert!(v.success(), "{}", v.describe("custody verify"));
    }

    // Instance one dies while A uploads: A goes on with instance two.
    let file = work.path().join("big.bin");
    let sha = write_random_file(&file, 300 * MIB, 0x2222).unwrap();
    let cid = collect_file(&one, &host_a, &file);
    let before = wait_for_every(
        "8 chunks of the file to be received",
        Duration::from_secs(180),
        Duration::from_millis(30),
        || {
            let c = one.show(&cid)?;
            if c["status"] == "sealed" {
                anyhow::bail!("the upload finished before the instance could be killed: {c}");
            }
            Ok(items(&c).into_iter().find(|i| {
                i["chunks_received"].as_u64().unwrap_or(0) >= 8 && i["status"] != "sealed"
            }))
        },
    )
    .unwrap();
    one.kill();
    let done = two.wait_finished(&cid, Duration::from_secs(400)).unwrap();
    assert_eq!(done["status"], "sealed", "{}", summary(&done));
    let item = the_item(&done, &file);
    assert_eq!(s(&item, "sha256").unwrap(), sha);
    assert_eq!(
        u(&item, "duplicate_chunks").unwrap(),
        0,
        "chunks acknowledged by instance one ({} before the kill) were sent again: {item:#}",
        u(&before, "chunks_received").unwrap()
    );
    let v = two
        .cli_raw(&["custody", "verify", &cid], Duration::from_secs(180))
        .unwrap();
    assert!(v.success(), "{}", v.describe("custody verify"));
    // Agent A is now served by instance two, beside B.
    let (_, m) = get_plain(&two, "/metrics");
    assert_eq!(metric(&m, "cairn_agents_connected"), 2.0, "{m}");
}

/// A collector on the embedded stores moved to PostgreSQL + S3: every collection's custody
/// verifies there, the data directory is switched over, and the evidence is served from the
/// new stores after a restart.
#[test]
fn migrate_moves_a_populated_collector_without_loss() {
    let work = workdir("backends-migrate").unwrap();
    let (mut collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    assert!(collector.env.is_empty(), "starts on the embedded stores");
    let vol = collector
        .collect_wait(
            &host,
            "volatile",
            "before the move",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(vol["status"], "sealed", "{}", summary(&vol));
    let file = work.path().join("moved.bin");
    let sha = write_random_file(&file, 24 * MIB, 0x3333).unwrap();
    let cid = collect_file(&collector, &host, &file);
    let done = collector
        .wait_finished(&cid, Duration::from_secs(180))
        .unwrap();
    assert_eq!(done["status"], "sealed", "{}", summary(&done));
    let item_id = s(&the_item(&done, &file), "id").unwrap();
    collector.kill();

    let garage = Garage::start().unwrap();
    let db = backends::postgres_database().unwrap();
    let env: Vec<(String, String)> = garage
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut cmd = std::process::Command::new(collector.bins.collector().unwrap());
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .args(["migrate", "--data"])
        .arg(&collector.data)
        .args(["--to", &db, "--blobs", &garage.url("moved"), "--json"]);
    let out = run(cmd, Duration::from_secs(600)).unwrap();
    assert!(out.success(), "{}", out.describe("migrate"));
    let report = out.json().unwrap();
    assert_eq!(report["switched"], true, "{report:#}");
    assert!(u(&report, "chunks_copied").unwrap() >= 6, "{report:#}");
    assert!(report["collections_failed"].as_array().unwrap().is_empty());
    let tables = report["tables"].as_array().unwrap();
    let rows = |name: &str| {
        tables
            .iter()
            .find(|t| t[0] == name)
            .and_then(|t| t[1].as_u64())
            .unwrap_or_else(|| panic!("no {name} in {report:#}"))
    };
    assert!(rows("custody") > 10 && rows("items") > 3 && rows("timeline") > 0);
    assert!(
        u(&report, "collections_verified").unwrap() >= 2,
        "{report:#}"
    );

    // A second migration of the same directory is refused: it no longer uses the embedded
    // stores.
    let mut again = std::process::Command::new(collector.bins.collector().unwrap());
    again
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["migrate", "--data"])
        .arg(&collector.data)
        .args(["--to", &db]);
    let out = run(again, Duration::from_secs(60)).unwrap();
    assert!(!out.success() && out.combined().contains("already names shared back ends"));

    // Served from PostgreSQL + S3 now: the local stores are moved aside to prove it.
    std::fs::rename(collector.data.join("cairn.db"), work.path().join("old.db")).unwrap();
    std::fs::rename(
        collector.data.join("chunks"),
        work.path().join("old-chunks"),
    )
    .unwrap();
    std::fs::create_dir(collector.data.join("chunks")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        collector.data.join("chunks"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    collector.env = env;
    collector.restart().unwrap();
    for c in [&cid, &s(&vol, "id").unwrap()] {
        let v = collector
            .cli_raw(&["custody", "verify", c], Duration::from_secs(180))
            .unwrap();
        assert!(
            v.success(),
            "{}",
            v.describe("custody verify after the move")
        );
    }
    let exported = work.path().join("exported.bin");
    collector.export(&item_id, &exported).unwrap();
    assert_eq!(sha256_file(&exported).unwrap(), sha);
}
