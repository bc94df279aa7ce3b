//! Checks against the collector: reachability (QUIC handshake with mutual TLS and a hello round
//! trip), certificate expiry, clock skew, an evidence round trip through the real upload
//! path, and that what this host encrypts to the collector's key the collector can decrypt — and sending the finished report (`report`), with the reports that could not be sent
//! before kept in the state directory until the collector takes them.

use super::{result, SelftestOptions, Verdict};
use crate::transport::connection::Connector;
use crate::transport::control;
use crate::transport::upload::{self, ChunkSpool};
use anyhow::{anyhow, bail, Context, Result};
use cairn_protocol::manifest::{ItemHeader, ItemKind, Source};
use cairn_protocol::readiness::{CheckResult, CheckStatus, SelftestReport};
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Skew beyond which timelines across hosts mislead (warn), and beyond which certificates'
/// validity windows break (fail).
const SKEW_WARN: Duration = Duration::from_secs(2);
const SKEW_FAIL: Duration = Duration::from_secs(300);
/// Certificates expiring sooner than this are a warning.
const EXPIRY_WARN_DAYS: i64 = 30;
/// Size of the round trip's probe item: half random (stored raw), half text (compressed).
const PROBE_BYTES: usize = 512 * 1024;

const NOT_ENROLLED: &str = "enroll this host: cairn-agent enroll --collector HOST:PORT --token TOKEN --ca-sha256 FINGERPRINT";

pub async fn checks(opts: &SelftestOptions) -> Vec<CheckResult> {
    let start = Instant::now();
    let cfg = match opts.state.load() {
        Ok(c) => c,
        Err(e) => {
            let measured = format!("not enrolled: {e:#}");
            return [
                "collector.certificate",
                "collector.reachability",
                "collector.clock_skew",
                "collector.evidence_round_trip",
                "collector.evidence_decryptable",
            ]
            .iter()
            .map(|id| result(id, Verdict::fail(measured.clone(), NOT_ENROLLED), start))
            .collect();
        }
    };
    let mut out = vec![result("collector.certificate", certificates(opts), start)];
    let start = Instant::now();
    let connector = match Connector::new(&opts.state, &cfg).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let v = Verdict::fail(
                format!("cannot prepare a connection to {}: {e:#}", cfg.collector),
                "check the collector address in agent.toml and the certificate files in the state directory; enroll again if they are damaged",
            );
            out.push(result("collector.reachability", v, start));
            out.push(result(
                "collector.clock_skew",
                Verdict::warn(
                    "not measured: no connection",
                    "fix collector.reachability first",
                ),
                start,
            ));
            for id in [
                "collector.evidence_round_trip",
                "collector.evidence_decryptable",
            ] {
                out.push(result(
                    id,
                    Verdict::fail(
                        "not tested: no connection",
                        "fix collector.reachability first",
                    ),
                    start,
                ));
            }
            return out;
        }
    };
    let host = crate::identity::host_identity_in(&cfg.metadata_config(), &opts.host_root);
    let pong = control::probe(&connector, host.clone()).await;
    let (reach, skew) = match &pong {
        Ok(p) => (
            Verdict::pass(format!(
                "QUIC handshake with mutual TLS and hello round trip to {} in {:.1} ms ({})",
                cfg.collector,
                p.rtt.as_secs_f64() * 1000.0,
                p.collector_version
            )),
            clock_skew(p),
        ),
        Err(e) => (
            Verdict::fail(
                format!("collector at {} unreachable: {e:#}", cfg.collector),
                format!("check that the collector runs and that UDP port {} is open from this host to it (security groups, firewalls, NetworkPolicy); `cairn-agent ping` retries the handshake", cfg.collector.rsplit(':').next().unwrap_or("?")),
            ),
            Verdict::warn(
                "not measured: the collector did not answer",
                "fix collector.reachability first",
            ),
        ),
    };
    out.push(result("collector.reachability", reach, start));
    out.push(CheckResult {
        duration_ms: 0,
        ..result("collector.clock_skew", skew, Instant::now())
    });
    let start = Instant::now();
    let trip = if pong.is_ok() {
        let spool = ChunkSpool::new(opts.state.spool(), cfg.spool_max_bytes);
        match tokio::time::timeout(Duration::from_secs(60), round_trip(&connector, &spool, &host))
            .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => Verdict::fail(
                format!("evidence round trip to {} failed: {e:#}", cfg.collector),
                "check the collector's log and its free disk space; the collector must accept items from this agent",
            ),
            Err(_) => Verdict::fail(
                format!("evidence round trip to {} did not finish within 60 s", cfg.collector),
                "check the bandwidth to the collector and the collector's load",
            ),
        }
    } else {
        Verdict::fail(
            "not tested: the collector did not answer",
            "fix collector.reachability first",
        )
    };
    out.push(result("collector.evidence_round_trip", trip, start));
    let start = Instant::now();
    let decryptable = match &pong {
        Ok(p) => evidence_decryptable(&connector, p.evidence_recipient.as_deref()).await,
        Err(_) => Verdict::fail(
            "not tested: the collector did not answer",
            "fix collector.reachability first",
        ),
    };
    out.push(result("collector.evidence_decryptable", decryptable, start));
    out
}

/// A random 32-byte canary encrypted here to the collector's evidence recipient, sent on a
/// stream of its own; the collector must decrypt it and answer its SHA-256. This is what
/// proves evidence encrypted on hosts (offline collections) can be read at the collector.
async fn evidence_decryptable(connector: &Connector, recipient: Option<&str>) -> Verdict {
    let Some(text) = recipient else {
        return Verdict::warn(
            "the collector gave no evidence recipient: it keeps evidence unencrypted at rest, and offline collections cannot be encrypted to it (`cairn-agent collect --encrypt`)",
            "turn on encryption at rest at the collector (an age identity for evidence), so chunks on its disk, in backups and offline collections on removable media are unreadable without its key",
        );
    };
    let recipient = match crate::encryption::Recipient::parse(text) {
        Ok(r) => r,
        Err(e) => {
            return Verdict::fail(
                format!("the collector's evidence recipient is unusable: {e}"),
                "check the collector's evidence key configuration; it must hand out an age X25519 recipient (age1…)",
            )
        }
    };
    let canary: [u8; 32] = rand::random();
    let ciphertext = match recipient.encrypt(&canary) {
        Ok(c) => c,
        Err(e) => {
            return Verdict::fail(
                format!("cannot encrypt the canary to {}: {e}", recipient.as_str()),
                "report this as a bug in the agent",
            )
        }
    };
    let want = cairn_protocol::sha256_hex(&canary);
    let limit = Duration::from_secs(10);
    match tokio::time::timeout(limit, canary_round_trip(connector, &ciphertext)).await {
        Ok(Ok(reply)) => judge_canary(reply, &want, recipient.as_str()),
        Ok(Err(e)) => Verdict::fail(
            format!("the encryption canary did not reach the collector: {e:#}"),
            "check the collector's log; fix collector.reachability first if it fails too",
        ),
        Err(_) => Verdict::fail(
            format!(
                "the collector did not answer the encryption canary within {} s",
                limit.as_secs()
            ),
            "check the collector's log and load",
        ),
    }
}

async fn canary_round_trip(connector: &Connector, ciphertext: &[u8]) -> Result<Message> {
    use base64::Engine;
    let conn = connector.get().await;
    let (mut send, mut recv) = conn.open_bi().await?;
    let ciphertext = base64::engine::general_purpose::STANDARD.encode(ciphertext);
    write_message(&mut send, Message::Canary { ciphertext }).await?;
    let reply = read_frame(&mut recv).await?;
    let _ = send.finish();
    match reply {
        Some(Frame::Message(m)) => Ok(m),
        Some(Frame::Chunk(_)) => bail!("the collector answered the canary with a chunk"),
        None => bail!("the collector closed the canary stream without an answer"),
    }
}

/// The collector's answer to the canary whose SHA-256 is `want`.
fn judge_canary(reply: Message, want: &str, recipient: &str) -> Verdict {
    let key_fix = "the collector's age identity does not match the recipient it hands out: check its evidence key; until then evidence encrypted on hosts (offline collections) cannot be read there";
    match reply {
        Message::CanaryResult { ok: true, sha256: Some(sha), .. } if sha == want => Verdict::pass(format!(
            "a random 32-byte canary encrypted on this host to {recipient} was decrypted by the collector (SHA-256 {}…)",
            &want[..16]
        )),
        Message::CanaryResult { ok: true, sha256, .. } => Verdict::fail(
            format!(
                "the collector decrypted the canary to other bytes (SHA-256 {}, this host sent {want})",
                sha256.unwrap_or_else(|| "none".into())
            ),
            key_fix,
        ),
        Message::CanaryResult { ok: false, error, .. } => Verdict::fail(
            format!(
                "the collector cannot decrypt what is encrypted to its recipient {recipient}: {}",
                error.unwrap_or_else(|| "no reason given".into())
            ),
            key_fix,
        ),
        Message::Error { code, message } => Verdict::fail(
            format!("the collector refused the encryption canary ({code}): {message}"),
            "upgrade the collector: it hands out an evidence recipient but does not check canaries",
        ),
        other => Verdict::fail(
            format!("unexpected answer to the encryption canary: {}", other.name()),
            "upgrade the agent and the collector to the same version",
        ),
    }
}

fn certificates(opts: &SelftestOptions) -> Verdict {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut worst = CheckStatus::Pass;
    let mut notes = Vec::new();
    for (file, what) in [
        ("agent.pem", "agent certificate"),
        ("ca.pem", "collector CA"),
    ] {
        let text = match opts.state.read(file) {
            Ok(t) => t,
            Err(e) => {
                worst = CheckStatus::Fail;
                notes.push(format!("{what}: {e:#}"));
                continue;
            }
        };
        let parsed = x509_parser::pem::parse_x509_pem(text.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|(_, pem)| {
                pem.parse_x509()
                    .map(|c| {
                        (
                            c.validity().not_before.timestamp(),
                            c.validity().not_after.timestamp(),
                        )
                    })
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok((not_before, not_after)) => {
                let days = (not_after - now) / 86400;
                let until = cairn_protocol::rfc3339::from_unix(not_after).unwrap_or_default();
                if now < not_before {
                    worst = CheckStatus::Fail;
                    notes.push(format!(
                        "{what} is not valid yet (this host's clock is behind?)"
                    ));
                } else if now >= not_after {
                    worst = CheckStatus::Fail;
                    notes.push(format!("{what} expired at {until}"));
                } else {
                    if days < EXPIRY_WARN_DAYS {
                        worst = worst.max(CheckStatus::Warn);
                    }
                    notes.push(format!("{what} valid until {until} ({days} days)"));
                }
            }
            Err(e) => {
                worst = CheckStatus::Fail;
                notes.push(format!("{what} ({file}) cannot be parsed: {e}"));
            }
        }
    }
    let measured = notes.join("; ");
    let fix = "enroll the agent again with a fresh token (cairn-collector token create) to get a new certificate";
    match worst {
        CheckStatus::Pass => Verdict::pass(measured),
        CheckStatus::Warn => Verdict::warn(measured, fix),
        CheckStatus::Fail => Verdict::fail(measured, fix),
    }
}

fn clock_skew(p: &control::Pong) -> Verdict {
    let server = match cairn_protocol::rfc3339::parse(&p.server_time) {
        Ok(t) => t,
        Err(e) => {
            return Verdict::warn(
                format!(
                    "the collector's time {:?} is not RFC 3339: {e}",
                    p.server_time
                ),
                "upgrade the collector",
            )
        }
    };
    let skew = p.local_mid - server;
    let abs = skew.unsigned_abs();
    let measured = format!(
        "this host's clock is {:+.3} s from the collector's (± {:.1} ms round trip)",
        skew.as_seconds_f64(),
        p.rtt.as_secs_f64() * 1000.0
    );
    let fix = "synchronise both clocks with NTP (chrony, systemd-timesyncd; on EC2 the Amazon Time Sync Service)";
    if abs > SKEW_FAIL {
        Verdict::fail(measured, fix)
    } else if abs > SKEW_WARN {
        Verdict::warn(measured, fix)
    } else {
        Verdict::pass(measured)
    }
}

/// The probe item: random bytes (incompressible, stored raw) then text (compressed by zstd).
fn probe_bytes() -> Vec<u8> {
    use rand::RngCore;
    let mut b = vec![0u8; PROBE_BYTES / 2];
    rand::thread_rng().fill_bytes(&mut b);
    let line = b"cairn readiness self-test: this item travels the normal upload path\n";
    while b.len() < PROBE_BYTES {
        b.extend_from_slice(line);
    }
    b.truncate(PROBE_BYTES);
    b
}

/// A small item hashed, compressed and sent through the normal upload path into a
/// `selftest` collection, then read back from the collector's store and compared.
async fn round_trip(
    connector: &Arc<Connector>,
    spool: &Arc<ChunkSpool>,
    host: &cairn_protocol::manifest::HostIdentity,
) -> Result<Verdict> {
    let collection_id = uuid::Uuid::new_v4().to_string();
    let conn = connector.get().await;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(
        &mut send,
        Message::SelftestBegin {
            collection_id: collection_id.clone(),
        },
    )
    .await?;
    match read_frame(&mut recv).await? {
        Some(Frame::Message(Message::SelftestReady { .. })) => {}
        Some(Frame::Message(Message::Error { code, message })) => {
            bail!("the collector refused the self-test collection ({code}): {message}")
        }
        other => bail!("unexpected answer to selftest_begin: {other:?}"),
    }
    let bytes = probe_bytes();
    let local_sha = cairn_protocol::sha256_hex(&bytes);
    let header = ItemHeader {
        item_id: uuid::Uuid::new_v4().to_string(),
        collection_id: collection_id.clone(),
        kind: ItemKind::ArtifactBundle,
        source: Source {
            name: "selftest-probe.bin".into(),
            media_type: Some("application/octet-stream".into()),
            details: [(
                "purpose".to_string(),
                serde_json::Value::from("readiness self-test"),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        },
        chunk_size: cairn_protocol::CHUNK_SIZE as u64,
        acquisition_start: cairn_protocol::rfc3339::now(),
        expected_len: None,
    };
    let item_id = header.item_id.clone();
    let item = crate::collect::PlannedItem::from_bytes(header.clone(), bytes);
    let host = host.clone();
    // Its own pause state: the running agent's heartbeat speaks for collections only.
    let pause = Arc::new(upload::UploadPause::default());
    let sealed = upload::send_item(connector, spool, &pause, header, move |sink| {
        item.produce(&host, &Default::default(), sink)
    })
    .await
    .context("uploading the probe item")?;
    if sealed.sha256 != local_sha {
        bail!(
            "the collector sealed SHA-256 {}, this host hashed {local_sha}",
            sealed.sha256
        );
    }
    write_message(
        &mut send,
        Message::SelftestReadBack {
            item_id: item_id.clone(),
        },
    )
    .await?;
    let reply = read_frame(&mut recv).await?;
    let _ = send.finish();
    match reply {
        Some(Frame::Message(Message::SelftestReadBackResult { ok: true, sha256: Some(sha), bytes_checked, .. }))
            if sha == local_sha =>
        {
            Ok(Verdict::pass(format!(
                "{PROBE_BYTES} bytes hashed, compressed and sent in {} chunk(s); the collector verified and sealed them, and read back {bytes_checked} bytes with the same SHA-256 {}… (collection {collection_id})",
                sealed.chunks_sent,
                &local_sha[..16]
            )))
        }
        Some(Frame::Message(Message::SelftestReadBackResult { sha256, error, .. })) => Ok(Verdict::fail(
            format!(
                "the collector read back item {item_id} as SHA-256 {} (this host hashed {local_sha}): {}",
                sha256.unwrap_or_else(|| "none".into()),
                error.unwrap_or_default()
            ),
            "the collector's store does not give back what it sealed: run `cairn verify` on recent collections and check the collector's disk",
        )),
        Some(Frame::Message(Message::Error { code, message })) => {
            Err(anyhow!("the collector refused the read-back ({code}): {message}"))
        }
        other => Err(anyhow!("unexpected answer to selftest_read_back: {other:?}")),
    }
}

/// Reports waiting for the collector, oldest first, at most this many.
const PENDING_MAX: usize = 50;
/// Where they wait, in the state directory (one JSON report per line).
pub const PENDING_FILE: &str = "readiness-pending.jsonl";

/// Whether the report's reachability check found the collector answering.
pub fn reached(report: &SelftestReport) -> bool {
    report
        .checks
        .iter()
        .any(|c| c.id == "collector.reachability" && c.status == CheckStatus::Pass)
}

/// Send `report` to the collector, after any reports that could not be sent before; what
/// cannot be sent now is kept in `STATE/readiness-pending.jsonl` for the next attempt.
/// Returns how many reports were delivered.
pub async fn report(
    opts: &SelftestOptions,
    connector: Option<&Arc<Connector>>,
    report: Option<&SelftestReport>,
) -> Result<usize> {
    let mut pending = load_pending(opts);
    if let Some(r) = report {
        pending.push(r.clone());
    }
    if pending.is_empty() {
        return Ok(0);
    }
    let owned;
    let connector = match connector {
        Some(c) => c,
        None => {
            let cfg = opts.state.load()?;
            owned = Arc::new(Connector::new(&opts.state, &cfg).await?);
            &owned
        }
    };
    let mut sent = 0;
    let result = async {
        let conn = tokio::time::timeout(Duration::from_secs(10), connector.connect_once())
            .await
            .map_err(|_| anyhow!("no QUIC handshake with {} within 10 s", connector.collector))??;
        for r in &pending {
            let (mut send, mut recv) = conn.open_bi().await?;
            write_message(&mut send, Message::Readiness(Box::new(r.clone()))).await?;
            match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv)).await?? {
                Some(Frame::Message(Message::ReadinessAck { previous })) => {
                    if previous.is_some_and(|p| p != r.status) {
                        tracing::info!(
                            "readiness changed at the collector: {} → {}",
                            previous.map(|p| p.as_str()).unwrap_or("none"),
                            r.status.as_str()
                        );
                    }
                    sent += 1;
                }
                Some(Frame::Message(Message::Error { code, message })) => {
                    bail!("the collector refused the readiness report ({code}): {message}")
                }
                other => bail!("unexpected answer to a readiness report: {other:?}"),
            }
        }
        conn.close(0u32.into(), b"readiness reported");
        Ok(())
    }
    .await;
    save_pending(opts, &pending[sent..])?;
    result.map(|()| sent)
}

fn load_pending(opts: &SelftestOptions) -> Vec<SelftestReport> {
    std::fs::read_to_string(opts.state.path(PENDING_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Keep the newest `PENDING_MAX` of `left` for the next attempt (none: remove the file).
fn save_pending(opts: &SelftestOptions, left: &[SelftestReport]) -> Result<()> {
    let path = opts.state.path(PENDING_FILE);
    let keep = &left[left.len().saturating_sub(PENDING_MAX)..];
    if keep.is_empty() {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    let text: String = keep
        .iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&path, text)
        .with_context(|| format!("cannot keep unsent readiness reports in {}", path.display()))
}

/// Keep `report` for a later delivery without trying now (the collector just did not answer).
pub fn queue(opts: &SelftestOptions, report: &SelftestReport) -> Result<()> {
    let mut pending = load_pending(opts);
    pending.push(report.clone());
    save_pending(opts, &pending)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn result(ok: bool, sha256: Option<&str>, error: Option<&str>) -> Message {
        Message::CanaryResult {
            ok,
            sha256: sha256.map(str::to_string),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn the_canary_passes_only_when_the_collector_gives_back_its_hash() {
        let want = cairn_protocol::sha256_hex(b"canary");
        let r = "age1example";
        let v = judge_canary(result(true, Some(&want), None), &want, r);
        assert_eq!(v.status, CheckStatus::Pass, "{}", v.measured);
        assert!(v.measured.contains(r));

        let v = judge_canary(result(true, Some(&"0".repeat(64)), None), &want, r);
        assert_eq!(v.status, CheckStatus::Fail);
        assert!(v.measured.contains("other bytes"), "{}", v.measured);

        let v = judge_canary(result(false, None, Some("no matching identity")), &want, r);
        assert_eq!(v.status, CheckStatus::Fail);
        assert!(
            v.measured.contains("cannot decrypt") && v.measured.contains("no matching identity")
        );
        assert!(v.remediation.contains("age identity"));

        let v = judge_canary(
            Message::error("bad_request", "unknown message canary"),
            &want,
            r,
        );
        assert_eq!(v.status, CheckStatus::Fail);
        assert!(v.remediation.contains("upgrade the collector"));
    }
}
