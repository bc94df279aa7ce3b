//! Evidence in and out: exports checked against a custody chain verified here, imports of
//! offline collections checked file by file, and the local custody check itself.

use crate::api::Api;
use crate::output::{print_collection, printable, s};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

/// Check a custody log's chain and signatures here, with the collector's public key, so a
/// verdict does not rest on the server's word alone.
pub(crate) fn verify_log_locally(log: &Value) -> Result<()> {
    use ed25519_dalek::Verifier;
    let records: Vec<cairn_protocol::custody::CustodyRecord> =
        serde_json::from_value(log["records"].clone())?;
    let key_hex = log["public_key"]
        .as_str()
        .context("custody log has no public key")?;
    let key_bytes: [u8; 32] = hex::decode(key_hex)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("public key is not 32 bytes"))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)?;
    cairn_protocol::custody::verify_chain(&records, |h, sig| {
        let (Ok(h), Ok(sig)) = (hex::decode(h), hex::decode(sig)) else {
            return false;
        };
        ed25519_dalek::Signature::from_slice(&sig).is_ok_and(|sig| vk.verify(&h, &sig).is_ok())
    })?;
    Ok(())
}

/// The SHA-256 the custody chain sealed an item with, from a chain checked here with the
/// collector's public key: an export is compared with that, not with the database's word.
async fn sealed_sha256(api: &Api, collection: &str, item: &str) -> Result<String> {
    let log = api
        .get(&format!("/api/v1/collections/{collection}/custody"))
        .await?;
    verify_log_locally(&log).context("the collection's custody chain does not verify")?;
    log["records"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|r| r["action"] == "item_sealed" && r["details"]["item_id"] == item)
        .and_then(|r| r["details"]["sha256"].as_str().map(str::to_string))
        .with_context(|| {
            format!("item {item} has no item_sealed record in the custody chain of collection {collection}")
        })
}

pub(crate) async fn export(api: &Api, item: &str, output: &PathBuf, json_out: bool) -> Result<i32> {
    let meta = api.get(&format!("/api/v1/items/{item}")).await?;
    let expected = sealed_sha256(api, &s(&meta["collection_id"]), item).await?;
    if s(&meta["sha256"]) != expected {
        bail!(
            "item {item} says SHA-256 {}, its custody chain sealed {expected}: not exported; run `cairn custody verify {}`",
            s(&meta["sha256"]),
            s(&meta["collection_id"])
        );
    }
    let mut resp = api
        .send(api.http.get(api.url(&format!("/api/v1/items/{item}/raw"))))
        .await?;
    let total = resp.content_length().unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    if json_out || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let tmp = output.with_extension("partial");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(b) = resp.chunk().await.context(
        "download interrupted (the collector refuses to serve a chunk that fails verification)",
    )? {
        h.update(&b);
        f.write_all(&b)?;
        n += b.len() as u64;
        bar.set_position(n);
    }
    f.flush()?;
    drop(f);
    bar.finish_and_clear();
    let got = hex::encode(h.finalize());
    if got != expected {
        bail!(
            "downloaded {n} bytes hash to {got}, custody sealed {expected}; kept as {}",
            tmp.display()
        );
    }
    std::fs::rename(&tmp, output)?;
    if json_out {
        println!(
            "{}",
            json!({"item": item, "path": output, "bytes": n, "sha256": got})
        );
    } else {
        println!(
            "{}  {}  ({} bytes, matches the SHA-256 sealed in custody)",
            got,
            output.display(),
            n
        );
    }
    Ok(0)
}

pub(crate) async fn import(api: &Api, dir: &std::path::Path, json_out: bool) -> Result<i32> {
    let rec_path = dir.join("collection.json");
    let rec_text = std::fs::read_to_string(&rec_path).with_context(|| {
        format!(
            "cannot read {} — is this a directory written by `cairn-agent collect --out`?",
            rec_path.display()
        )
    })?;
    let rec: cairn_protocol::manifest::CollectionRecord = serde_json::from_str(&rec_text)
        .with_context(|| format!("{} is not a collection record", rec_path.display()))?;
    let cid = rec.request.collection_id.clone();
    let started: Value = api
        .send(
            api.http
                .post(api.url("/api/v1/import/collections"))
                .header("content-type", "application/json")
                .body(rec_text),
        )
        .await?
        .json()
        .await?;
    if started["resumed"] == true && !json_out {
        eprintln!("resuming the import of collection {cid}: items already sealed are kept");
    }
    let mut ok_items = Vec::new();
    let mut errors = rec.errors.clone();
    // Every file in items/ must be one the record lists: anything else was added afterwards.
    let listed: std::collections::HashSet<&str> = rec.items.iter().map(String::as_str).collect();
    if let Ok(rd) = std::fs::read_dir(dir.join("items")) {
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name
                .strip_suffix(".cairn")
                .or_else(|| name.strip_suffix(".cairn.age"))
                .or_else(|| name.strip_suffix(".manifest.json"));
            if !stem.is_some_and(|s| listed.contains(s)) {
                errors.push(format!(
                    "items/{} is not an item of collection.json; not imported",
                    printable(&name)
                ));
            }
        }
    }
    for item in &rec.items {
        // The manifest beside the stream must be this item's and agree with what the
        // collector reads from the stream.
        let side_path = dir.join("items").join(format!("{item}.manifest.json"));
        let side: Option<cairn_protocol::manifest::ItemManifest> = match std::fs::read(&side_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(format!(
                    "item {item}: {} is not its manifest ({e}); not imported",
                    side_path.display()
                ));
                None
            }
        };
        let Some(side) = side else { continue };
        if side.header.item_id != *item || side.header.collection_id != cid {
            errors.push(format!(
                "item {item}: {} is the manifest of item {} of collection {}; not imported",
                side_path.display(),
                printable(&side.header.item_id),
                printable(&side.header.collection_id)
            ));
            continue;
        }
        // `collect --out DIR --encrypt` writes `ID.cairn.age`: sent as is, the collector holds
        // the key that decrypts it.
        let clear = dir.join("items").join(format!("{item}.cairn"));
        let sealed = dir.join("items").join(format!("{item}.cairn.age"));
        let path = if !clear.exists() && sealed.exists() {
            sealed
        } else {
            clear
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("item {item}: cannot read {}: {e}", path.display()));
                continue;
            }
        };
        let body = reqwest::Body::wrap_stream(tokio_util_stream(file));
        match api
            .send(
                api.http
                    .put(api.url(&format!("/api/v1/import/collections/{cid}/items/{item}")))
                    .body(body),
            )
            .await
        {
            Ok(r) => {
                let v: Value = r.json().await?;
                if v["sha256"].as_str() != Some(side.sha256.as_str()) {
                    errors.push(format!(
                        "item {item}: the stream seals as {}, its manifest.json says {}",
                        s(&v["sha256"]),
                        printable(&side.sha256)
                    ));
                    continue;
                }
                if !json_out {
                    eprintln!("imported {item}  {}", s(&v["sha256"]));
                }
                ok_items.push(item.clone());
            }
            Err(e) => errors.push(format!("item {item}: {e:#}")),
        }
    }
    let c = api
        .post(
            &format!("/api/v1/import/collections/{cid}/finish"),
            &json!({"items": rec.items, "errors": errors}),
        )
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print_collection(&c);
    }
    Ok(if c["status"] == "sealed" { 0 } else { 3 })
}

/// A file as a stream of byte blocks, for a streaming request body.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}
