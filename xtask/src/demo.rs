//! `cargo xtask demo`: the whole path on one machine, as a detection system would drive it.

use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use cairn_harness::{
    collector_with_agent_in, have_command, is_finished, items, sha256_file, wait_for_every,
};

use crate::procs::{build_release, repo_root, section};

pub fn run(keep_running: bool) -> Result<()> {
    // The demo is a first command on a fresh machine: it installs what its build needs, as
    // `cargo xtask test` does.
    crate::setup::for_demo(&[("curl", "curl")])?;
    section("building release binaries");
    let bins = build_release()?;

    let dir = repo_root().join(".cairn-demo");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;

    section("starting collector and agent");
    let (mut collector, mut agent, host_id) = collector_with_agent_in(&bins, &dir, |_| Ok(()))?;
    let (api_url, ca_cert, admin_token) = (
        collector.api_url(),
        collector.init.ca_cert.clone(),
        collector.init.admin_token.clone(),
    );
    println!("demo dir    {}", dir.display());
    println!("collector   QUIC {}  API {api_url}", collector.quic_addr());
    println!("            data {}", collector.data.display());
    println!("            log  {}", collector.log.display());
    println!("agent       host id {host_id}");
    println!("            log  {}", agent.log.display());

    section("POST /api/v1/collections (what a detection system sends)");
    let body = json!({
        "host": host_id,
        "profile": "volatile",
        "reason": "demo: suspicious process reported by the detection system",
    });
    let id = if have_command("curl") {
        let url = format!("{api_url}/api/v1/collections");
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail-with-body", "--cacert"])
            .arg(&ca_cert)
            .args(["-H", &format!("Authorization: Bearer {admin_token}")])
            .args(["-H", "Content-Type: application/json"])
            .args(["-d", &body.to_string(), &url]);
        println!(
            "$ curl --cacert {} -H 'Authorization: Bearer $CAIRN_TOKEN' \\\n    -H 'Content-Type: application/json' -d '{body}' {url}",
            ca_cert.display()
        );
        let out = cairn_harness::run(curl, Duration::from_secs(60))?.ok()?;
        println!("{}", out.stdout.trim());
        let v = out.json()?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the API answered without an id: {v}"))?
    } else {
        println!("(curl not installed: using the cairn CLI instead)");
        let v = collector.cli_json(&[
            "collect",
            &host_id,
            "--profile",
            "volatile",
            "--reason",
            "demo: suspicious process reported by the detection system",
        ])?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("`cairn collect` printed no id: {v}"))?
    };

    section(&format!("waiting for collection {id} to be sealed"));
    let collection = wait_for_every(
        "the collection to finish",
        Duration::from_secs(180),
        Duration::from_millis(250),
        || {
            collector.check_alive()?;
            agent.check_alive()?;
            let v = collector.show(&id)?;
            let st = v.get("status").and_then(Value::as_str).unwrap_or("");
            Ok(is_finished(st).then_some(v))
        },
    )?;
    let status = collection
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("?");
    println!("status: {status}");
    let items = items(&collection);
    println!("\n{:<28} {:>12}  {:<64}  ID", "NAME", "BYTES", "SHA-256");
    for it in &items {
        println!(
            "{:<28} {:>12}  {:<64}  {}",
            it.pointer("/source/name")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            it.get("raw_len").and_then(Value::as_u64).unwrap_or(0),
            it.get("sha256").and_then(Value::as_str).unwrap_or("?"),
            it.get("id").and_then(Value::as_str).unwrap_or("?"),
        );
    }
    if status != "sealed" {
        bail!("collection {id} ended as {status}: {collection:#}");
    }

    section(&format!("cairn custody verify {id}"));
    let verify = collector.cli_text(&["custody", "verify", &id], Duration::from_secs(600))?;
    println!("{}{}", verify.stdout, verify.stderr);
    if !verify.success() {
        bail!("custody verification failed");
    }

    let item = items
        .iter()
        .find(|i| i.get("raw_len").and_then(Value::as_u64).unwrap_or(0) > 0)
        .ok_or_else(|| anyhow!("no non-empty item to export"))?;
    let item_id = item
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("item without id: {item}"))?;
    let name = item
        .pointer("/source/name")
        .and_then(Value::as_str)
        .unwrap_or("item");
    let want = item.get("sha256").and_then(Value::as_str).unwrap_or("");
    let out = dir.join(format!("exported-{name}"));
    let out_s = out.to_string_lossy().into_owned();
    section(&format!("cairn export {item_id} -o {out_s}"));
    collector.export(item_id, &out)?;
    let got = sha256_file(&out)?;
    println!("manifest sha256 {want}\nexported sha256 {got}");
    if got != want {
        bail!("exported {name} does not match its manifest");
    }
    println!("match");

    section("explore");
    println!("export CAIRN_API={api_url}");
    println!("export CAIRN_TOKEN={admin_token}");
    println!("export CAIRN_CA_CERT={}", ca_cert.display());
    let c = bins.cli()?.display().to_string();
    println!("{c} hosts");
    println!("{c} show {id}");
    println!("{c} custody log {id}");
    println!("{c} custody verify {id}");
    println!("{c} export {item_id} -o /tmp/{name}");
    println!("{c} collections");
    println!("{c} archive {id} -o /tmp/cairn-{id}.tar");
    println!("{c} timeline {host_id} --limit 50");
    println!("{c} timeline sources");
    println!("{c} collect {host_id} --profile volatile --reason 'another look' --wait");

    section("console");
    let link = std::process::Command::new(bins.collector()?)
        .args([
            "console-link",
            "--name",
            "demo",
            "--role",
            "admin",
            "--url",
            &api_url,
        ])
        .arg("--data")
        .arg(&collector.data)
        .output()?;
    if !link.status.success() {
        bail!(
            "cairn-collector console-link failed: {}",
            String::from_utf8_lossy(&link.stderr)
        );
    }
    println!("the web console: {api_url}/ (sign in with the admin token above)");
    println!(
        "or open this one-time sign-in link (15 minutes): {}",
        String::from_utf8_lossy(&link.stdout).trim()
    );
    println!("(the collector's certificate is signed by the demo's own CA: {}; trust it or accept the warning)", ca_cert.display());

    if keep_running {
        let cp = collector.detach();
        let ap = agent.detach();
        println!(
            "\ncollector pid {} and agent pid {} keep running; stop them with: kill {} {}",
            cp.unwrap_or(0),
            ap.unwrap_or(0),
            cp.unwrap_or(0),
            ap.unwrap_or(0)
        );
    } else {
        println!(
            "\n(stopping collector and agent; `cargo xtask demo --keep-running` leaves them up)"
        );
    }
    Ok(())
}
