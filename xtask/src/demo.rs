//! `cargo xtask demo`: the whole path on one machine, as a detection system would drive it.

use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::procs::{
    have_command, is_finished, repo_root, run_capture, section, wait_for, Bins, Stack,
};

fn file_sha256(path: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn run(keep_running: bool) -> Result<()> {
    section("building release binaries");
    let bins = Bins::build_release()?;

    let dir = repo_root().join(".cairn-demo");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;

    section("starting collector and agent");
    let mut stack = Stack::start(&bins, &dir)?;
    println!("demo dir    {}", stack.dir.display());
    println!(
        "collector   QUIC {}  API {}",
        stack.quic_addr, stack.api_url
    );
    println!("            data {}", stack.data.display());
    println!("            log  {}", stack.collector.log.display());
    println!("agent       host id {}", stack.host_id);
    println!("            log  {}", stack.agent.log.display());

    section("POST /api/v1/collections (what a detection system sends)");
    let body = json!({
        "host": stack.host_id,
        "profile": "volatile",
        "reason": "demo: suspicious process reported by the detection system",
    });
    let cli = stack.cli();
    let id = if have_command("curl") {
        let url = format!("{}/api/v1/collections", stack.api_url);
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail-with-body", "--cacert"])
            .arg(&stack.ca_cert)
            .args([
                "-H",
                &format!("Authorization: Bearer {}", stack.admin_token),
            ])
            .args(["-H", "Content-Type: application/json"])
            .args(["-d", &body.to_string(), &url]);
        println!(
            "$ curl --cacert {} -H 'Authorization: Bearer $CAIRN_TOKEN' \\\n    -H 'Content-Type: application/json' -d '{body}' {url}",
            stack.ca_cert.display()
        );
        let out = run_capture(curl, Duration::from_secs(60))?.ok()?;
        println!("{}", out.stdout.trim());
        let v = out.json()?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the API answered without an id: {v}"))?
    } else {
        println!("(curl not installed: using the cairn CLI instead)");
        let v = cli.json(&[
            "collect",
            &stack.host_id,
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
    let collection = wait_for(
        "the collection to finish",
        Duration::from_secs(180),
        Duration::from_millis(250),
        || {
            stack.collector.check_alive()?;
            stack.agent.check_alive()?;
            let v = cli.json(&["show", &id])?;
            let st = v.get("status").and_then(Value::as_str).unwrap_or("");
            Ok(is_finished(st).then_some(v))
        },
    )?;
    let status = collection
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("?");
    println!("status: {status}");
    let items = collection
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
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
    let verify = cli.text(&["custody", "verify", &id])?;
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
    cli.text(&["export", item_id, "-o", &out_s])?.ok()?;
    let got = file_sha256(&out)?;
    println!("manifest sha256 {want}\nexported sha256 {got}");
    if got != want {
        bail!("exported {name} does not match its manifest");
    }
    println!("match");

    section("explore");
    println!("export CAIRN_API={}", stack.api_url);
    println!("export CAIRN_TOKEN={}", stack.admin_token);
    println!("export CAIRN_CA_CERT={}", stack.ca_cert.display());
    let c = bins.cli.display();
    println!("{c} hosts");
    println!("{c} show {id}");
    println!("{c} custody log {id}");
    println!("{c} custody verify {id}");
    println!("{c} export {item_id} -o /tmp/{name}");
    println!(
        "{c} collect {} --profile volatile --reason 'another look' --wait",
        stack.host_id
    );

    if keep_running {
        let cp = stack.collector.detach();
        let ap = stack.agent.detach();
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
