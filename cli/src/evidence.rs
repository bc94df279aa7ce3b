//! Evidence in and out: exports checked against a custody chain verified here, imports of
//! offline collections checked file by file, and the local custody check itself.

use crate::api::{seg, Api};
use crate::exit::{fail, Exit};
use crate::output::{human, print_collection, printable, s};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

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
        .get(&format!("/api/v1/collections/{}/custody", seg(collection)))
        .await?;
    if let Err(e) = verify_log_locally(&log) {
        return fail(
            Exit::Verify,
            format!(
                "the custody chain of collection {collection} does not verify: {e:#}; not exported"
            ),
        );
    }
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

/// Where downloaded bytes go: stdout (`-o -`), or a file written beside its name as
/// `NAME.partial` and put in place only when complete — never over an existing file unless
/// `--force`.
pub(crate) enum Sink {
    Stdout(std::io::Stdout),
    File {
        tmp: PathBuf,
        dest: PathBuf,
        force: bool,
        file: std::io::BufWriter<std::fs::File>,
    },
}

impl Sink {
    pub(crate) fn open(output: &Path, force: bool) -> Result<Sink> {
        if output == Path::new("-") {
            return Ok(Sink::Stdout(std::io::stdout()));
        }
        if !force && output.symlink_metadata().is_ok() {
            return fail(
                Exit::Conflict,
                format!(
                    "{} exists: not overwritten; pass --force to replace it, or choose another -o",
                    output.display()
                ),
            );
        }
        let mut tmp = output.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Sink::File {
            tmp,
            dest: output.to_path_buf(),
            force,
            file: std::io::BufWriter::new(file),
        })
    }

    pub(crate) fn is_stdout(&self) -> bool {
        matches!(self, Sink::Stdout(_))
    }

    pub(crate) fn write(&mut self, b: &[u8]) -> Result<()> {
        match self {
            Sink::Stdout(o) => o.write_all(b).context("cannot write to stdout"),
            Sink::File { file, tmp, .. } => file
                .write_all(b)
                .with_context(|| format!("cannot write {}", tmp.display())),
        }
    }

    /// What to call the output in messages.
    pub(crate) fn name(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".into(),
            Sink::File { dest, .. } => dest.display().to_string(),
        }
    }

    /// Where the incomplete bytes are, for an error message.
    pub(crate) fn partial(&self) -> String {
        match self {
            Sink::Stdout(_) => "the bytes already written to stdout are incomplete".into(),
            Sink::File { tmp, .. } => format!("kept as {}", tmp.display()),
        }
    }

    /// Everything written: flushed, and the file put in place.
    pub(crate) fn commit(self) -> Result<()> {
        match self {
            Sink::Stdout(mut o) => o.flush().context("cannot write to stdout"),
            Sink::File {
                tmp,
                dest,
                force,
                file,
            } => {
                file.into_inner()
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {}", tmp.display(), e.error()))?
                    .sync_all()
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                if force {
                    std::fs::rename(&tmp, &dest)
                        .with_context(|| format!("cannot write {}", dest.display()))?;
                } else {
                    // A link fails where a file appeared meanwhile: still never overwritten.
                    if let Err(e) = std::fs::hard_link(&tmp, &dest) {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            return fail(
                                Exit::Conflict,
                                format!("{} appeared while downloading: not overwritten (pass --force to replace it); the download is {}", dest.display(), tmp.display()),
                            );
                        }
                        return Err(e).with_context(|| format!("cannot write {}", dest.display()));
                    }
                    std::fs::remove_file(&tmp)
                        .with_context(|| format!("cannot remove {}", tmp.display()))?;
                }
                Ok(())
            }
        }
    }
}

/// A progress bar on stderr for a download, when a person watches it.
fn download_bar(total: Option<u64>, quiet: bool) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ) {
        if total.is_some() {
            bar.set_style(style);
        }
    }
    if quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// The item `spec` names: an id or id prefix, `COLLECTION:NAME`, or (with `name`) a name in
/// the collection `spec`. A name matches an item's name or its path on the host.
async fn resolve_item(api: &Api, spec: &str, name: Option<&str>) -> Result<String> {
    let (collection, name) = match (name, spec.split_once(':')) {
        (Some(n), _) => (spec, n),
        (None, Some((c, n))) => (c, n),
        (None, None) => return Ok(spec.to_string()),
    };
    let c = api
        .get(&format!("/api/v1/collections/{}", seg(collection)))
        .await?;
    let items = c["items"].as_array().cloned().unwrap_or_default();
    let named = |i: &&Value| i["name"] == name || i["source"]["path"] == name;
    let mut found: Vec<&Value> = items.iter().filter(named).collect();
    if found.is_empty() {
        // A base name (`auth.log`) finds `/var/log/auth.log`.
        found = items
            .iter()
            .filter(|i| {
                [&i["name"], &i["source"]["path"]].into_iter().any(|v| {
                    v.as_str()
                        .is_some_and(|p| p.rsplit('/').next() == Some(name))
                })
            })
            .collect();
    }
    match found.as_slice() {
        [one] => Ok(s(&one["id"])),
        [] => {
            let names: Vec<String> = items.iter().take(20).map(|i| s(&i["name"])).collect();
            fail(
                Exit::NotFound,
                format!(
                    "no item named {} in collection {}; its items: {}{}",
                    printable(name),
                    s(&c["id"]),
                    names.join(", "),
                    if items.len() > 20 { ", …" } else { "" }
                ),
            )
        }
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|i| format!("{} ({})", s(&i["id"]), s(&i["source"]["path"])))
                .collect();
            fail(
                Exit::Conflict,
                format!(
                    "{} items of collection {} are named {}: export one by id: {}",
                    many.len(),
                    s(&c["id"]),
                    printable(name),
                    list.join(", ")
                ),
            )
        }
    }
}

/// `cairn export`: an item's exact raw bytes, checked against the SHA-256 its custody chain
/// (verified here) sealed it with.
pub(crate) async fn export(
    api: &Api,
    spec: &str,
    name: Option<&str>,
    output: &Path,
    force: bool,
    json_out: bool,
) -> Result<i32> {
    let id = resolve_item(api, spec, name).await?;
    let meta = api.get(&format!("/api/v1/items/{}", seg(&id))).await?;
    let item = s(&meta["item_id"]);
    let expected = sealed_sha256(api, &s(&meta["collection_id"]), &item).await?;
    if s(&meta["sha256"]) != expected {
        return fail(
            Exit::Verify,
            format!(
                "item {item} says SHA-256 {}, its custody chain sealed {expected}: not exported; run `cairn custody verify {}`",
                s(&meta["sha256"]),
                s(&meta["collection_id"])
            ),
        );
    }
    let mut sink = Sink::open(output, force)?;
    let mut resp = api
        .send(
            api.http
                .get(api.url(&format!("/api/v1/items/{}/raw", seg(&item)))),
        )
        .await?;
    let bar = download_bar(resp.content_length(), json_out);
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(b) = resp.chunk().await.with_context(|| {
        format!(
            "download interrupted (the collector refuses to serve a chunk that fails verification); {}",
            sink.partial()
        )
    })? {
        h.update(&b);
        sink.write(&b)?;
        n += b.len() as u64;
        bar.set_position(n);
    }
    bar.finish_and_clear();
    let got = hex::encode(h.finalize());
    if got != expected {
        return fail(
            Exit::Verify,
            format!(
                "downloaded {n} bytes hash to {got}, custody sealed {expected}; {}",
                sink.partial()
            ),
        );
    }
    let to_stdout = sink.is_stdout();
    let dest = sink.name();
    sink.commit()?;
    let summary = format!("{got}  {dest}  ({n} bytes, matches the SHA-256 sealed in custody)");
    if to_stdout {
        eprintln!("{summary}");
    } else if json_out {
        println!(
            "{}",
            json!({"item": item, "path": output, "bytes": n, "sha256": got})
        );
    } else {
        println!("{summary}");
    }
    Ok(0)
}

/// `cairn archive`: the whole collection as one tar (items, manifests, custody, SHA256SUMS),
/// streamed to the file or stdout as it arrives.
pub(crate) async fn archive(
    api: &Api,
    collection: &str,
    output: &Path,
    force: bool,
    json_out: bool,
) -> Result<i32> {
    let c = api
        .get(&format!("/api/v1/collections/{}", seg(collection)))
        .await?;
    let id = s(&c["id"]);
    let mut sink = Sink::open(output, force)?;
    let mut resp = api
        .send(
            api.http
                .get(api.url(&format!("/api/v1/collections/{}/archive", seg(&id)))),
        )
        .await?;
    let bar = download_bar(None, json_out);
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(b) = resp.chunk().await.with_context(|| {
        format!(
            "archive download interrupted (the collector stops at a chunk that fails verification); {}",
            sink.partial()
        )
    })? {
        h.update(&b);
        sink.write(&b)?;
        n += b.len() as u64;
        bar.set_position(n);
    }
    bar.finish_and_clear();
    let to_stdout = sink.is_stdout();
    let dest = sink.name();
    sink.commit()?;
    let sha = hex::encode(h.finalize());
    let missing = crate::output::failed_items(&c);
    let v = json!({"collection": id, "path": output, "bytes": n, "sha256": sha,
                   "status": c["status"], "failed_items": missing});
    if json_out && !to_stdout {
        println!("{v}");
    } else {
        let line = format!(
            "collection {id} ({}) archived to {dest}: {} ({n} bytes), SHA-256 {sha}; check it with `tar xf` then `sha256sum -c SHA256SUMS` inside cairn-{id}/",
            s(&c["status"]).to_lowercase(),
            human(n)
        );
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    if missing > 0 {
        eprintln!("note: {missing} item(s) of this collection FAILED and are not in the archive (`cairn show {id}` says why)");
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
                    .put(api.url(&format!(
                        "/api/v1/import/collections/{}/items/{}",
                        seg(&cid),
                        seg(item)
                    )))
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
            &format!("/api/v1/import/collections/{}/finish", seg(&cid)),
            &json!({"items": rec.items, "errors": errors}),
        )
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print_collection(&c);
    }
    Ok(crate::collections::finished_code(&c))
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
