//! Agents' readiness: their self-test reports as history, and the self-test's evidence round
//! trip — a `selftest` collection opened for the probe item, which arrives on an ordinary item
//! stream, then a read-back of every stored chunk through the custody verification. Only each
//! host's latest self-test collection is kept; collection lists leave them out.

use crate::custody::Custody;
use crate::error::{Error, Result};
use crate::storage::{CollectionOrigin, CollectionStatus, Stores};
use cairn_protocol::manifest::CollectRequest;
use cairn_protocol::readiness::{CheckStatus, SelftestReport, SCHEMA_VERSION};
use cairn_protocol::wire::Message;
use serde_json::json;

/// More checks than any agent runs: a report beyond it is refused, not stored.
pub const MAX_CHECKS: usize = 256;

/// The largest canary the collector decrypts: it is 32 bytes and an age header.
const MAX_CANARY: usize = 64 * 1024;

/// The self-test's encryption canary: decrypt what the host encrypted to the evidence key and
/// say what it was, so the host knows its offline evidence can be read here.
pub fn canary(key: &crate::crypt::EvidenceKey, ciphertext_b64: &str) -> Message {
    use base64::Engine;
    let result = (|| -> std::result::Result<String, String> {
        if ciphertext_b64.len() > MAX_CANARY {
            return Err(format!(
                "canary of {} bytes; at most {MAX_CANARY}",
                ciphertext_b64.len()
            ));
        }
        let cipher = base64::engine::general_purpose::STANDARD
            .decode(ciphertext_b64.trim())
            .map_err(|e| format!("canary is not base64: {e}"))?;
        let plain = key.decrypt(&cipher).map_err(|e| e.to_string())?;
        Ok(cairn_protocol::sha256_hex(&plain))
    })();
    match result {
        Ok(sha256) => Message::CanaryResult {
            ok: true,
            sha256: Some(sha256),
            error: None,
        },
        Err(e) => Message::CanaryResult {
            ok: false,
            sha256: None,
            error: Some(e),
        },
    }
}

/// Store a report; returns the host's verdict before it.
pub fn record(
    stores: &Stores,
    host_id: &str,
    report: &SelftestReport,
) -> Result<Option<CheckStatus>> {
    if report.schema_version > SCHEMA_VERSION
        || report.checks.is_empty()
        || report.checks.len() > MAX_CHECKS
    {
        return Err(Error::invalid(format!(
            "readiness report of schema {} with {} checks; this collector reads schema {SCHEMA_VERSION} with 1 to {MAX_CHECKS} checks",
            report.schema_version,
            report.checks.len()
        )));
    }
    let previous = stores.meta.insert_readiness(host_id, report)?;
    if previous.is_some_and(|p| p != report.status) {
        tracing::info!(
            "host {host_id} readiness changed: {} → {}",
            previous.map(|p| p.as_str()).unwrap_or("none"),
            report.status.as_str()
        );
    }
    Ok(previous)
}

/// Open the round trip's collection.
pub fn begin_round_trip(
    stores: &Stores,
    custody: &Custody,
    host_id: &str,
    collection_id: &str,
) -> Result<()> {
    if uuid::Uuid::parse_str(collection_id).is_err() {
        return Err(Error::invalid(format!(
            "self-test collection id {collection_id:?} is not a UUID"
        )));
    }
    let actor = format!("agent:{host_id}");
    let req = CollectRequest {
        collection_id: collection_id.to_string(),
        profile: "selftest".into(),
        reason: "readiness self-test: evidence round trip".into(),
        requested_by: actor.clone(),
        paths: Vec::new(),
        pid: None,
        container_id: None,
        devices: Vec::new(),
    };
    stores.meta.insert_collection(
        host_id,
        &req,
        CollectionStatus::Running,
        CollectionOrigin::Selftest,
    )?;
    custody.append(
        collection_id,
        &actor,
        "selftest_started",
        json!({"host_id": host_id}),
    )?;
    Ok(())
}

/// The agent went away before asking for the read-back.
pub fn abandon_round_trip(stores: &Stores, collection_id: &str) -> Result<()> {
    stores.meta.set_collection_status(
        collection_id,
        CollectionStatus::Failed,
        Some(&["the agent did not finish the self-test round trip".to_string()]),
    )?;
    Ok(())
}

/// Re-read every stored chunk of the probe item (through the custody verification, which
/// also checks the collection's chain), close the collection, prune older ones.
pub fn read_back(
    stores: &Stores,
    custody: &Custody,
    host_id: &str,
    collection_id: &str,
    item_id: &str,
) -> Result<Message> {
    let item = stores.meta.get_item(item_id)?;
    let belongs = item
        .as_ref()
        .is_some_and(|i| i.collection_id == collection_id);
    let report = if belongs {
        Some(custody.verify(collection_id)?)
    } else {
        None
    };
    let (ok, error) = match &report {
        Some(r) if r.ok && r.items_checked == 1 => (true, None),
        Some(r) if r.ok => (
            false,
            Some(format!(
                "{} sealed item(s) in the collection, expected 1",
                r.items_checked
            )),
        ),
        Some(r) => (false, r.error.clone()),
        None => (
            false,
            Some(format!(
                "item {item_id} is not in self-test collection {collection_id}"
            )),
        ),
    };
    let errors: Vec<String> = error.iter().cloned().collect();
    stores.meta.set_collection_status(
        collection_id,
        if ok {
            CollectionStatus::Sealed
        } else {
            CollectionStatus::Failed
        },
        Some(&errors),
    )?;
    custody.close(
        collection_id,
        "collector",
        "selftest_read_back",
        json!({"item_id": item_id, "ok": ok, "error": error}),
    )?;
    if ok {
        for sha in stores
            .meta
            .prune_selftest_collections(host_id, collection_id)?
        {
            if let Err(e) = stores.blobs.delete(&sha) {
                tracing::warn!("pruning self-test chunk {sha}: {e}");
            }
        }
    }
    Ok(Message::SelftestReadBackResult {
        item_id: item_id.to_string(),
        ok,
        sha256: item.and_then(|i| i.sha256).filter(|_| belongs),
        bytes_checked: report.map(|r| r.bytes_checked).unwrap_or(0),
        error,
    })
}
