//! Enrollment: a new key pair on the host, a CSR, and an enrollment token, in exchange for a
//! certificate signed by the collector's CA. The key never leaves this host.

use crate::config::{AgentConfig, StateDir};
use anyhow::{bail, Context, Result};
use cairn_protocol::manifest::HostIdentity;
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};

pub struct Enrolled {
    pub agent_id: String,
}

/// Who enrolls: the collector gives a machine it knows (same machine id and instance id) its
/// host id back, unless a new identity is asked for.
#[derive(Debug, Clone, Default)]
pub struct EnrollAs {
    pub host: Option<HostIdentity>,
    pub new_identity: bool,
}

pub async fn enroll(
    state: &StateDir,
    collector: &str,
    token: &str,
    ca_sha256: &str,
    who: EnrollAs,
) -> Result<Enrolled> {
    cairn_private_fs::create_private_dir(&state.root)?;
    let key = rcgen::KeyPair::generate()?;
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname.clone());
    let csr = params.serialize_request(&key)?.pem()?;

    let endpoint = super::connection::client_endpoint(collector).await?;
    let (endpoint, addr) = endpoint;
    let conn = endpoint
        .connect_with(
            super::tls::enrollment_config(ca_sha256)?,
            addr,
            cairn_protocol::COLLECTOR_SERVER_NAME,
        )?
        .await
        .with_context(|| {
            format!(
                "cannot establish a TLS session with the collector at {collector} ({addr}): is \
                 `cairn-collector serve` running there, and does UDP port {} reach it from this \
                 host (agents speak QUIC, over UDP: check security groups, network ACLs and \
                 firewalls for UDP, not TCP)?",
                addr.port()
            )
        })?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(
        &mut send,
        Message::Enroll {
            token: token.to_string(),
            csr_pem: csr,
            hostname,
            host: who.host.map(Box::new),
            new_identity: who.new_identity,
        },
    )
    .await?;
    send.finish()?;
    let reply = tokio::time::timeout(std::time::Duration::from_secs(30), read_frame(&mut recv))
        .await
        .context("the collector did not answer the enrollment within 30 s")??;
    conn.close(0u32.into(), b"enrolled");
    match reply {
        Some(Frame::Message(Message::Enrolled {
            agent_id,
            cert_pem,
            ca_pem,
            evidence_recipient,
        })) => {
            // The CA we store must be the one we pinned.
            let got = ca_fingerprint(&ca_pem).unwrap_or_default();
            let want = ca_sha256.trim().to_ascii_lowercase().replace(':', "");
            if got != want {
                bail!("the collector returned a CA with fingerprint {got}, not the pinned {want}");
            }
            store_credentials(state, &key.serialize_pem(), &cert_pem, &ca_pem)?;
            state.save(&AgentConfig::new(collector.to_string(), agent_id.clone()))?;
            if let Err(e) = state.save_evidence_recipient(evidence_recipient.as_deref()) {
                tracing::warn!("{e:#}; offline collections cannot be encrypted with --encrypt");
            }
            std::fs::create_dir_all(state.spool())?;
            endpoint.wait_idle().await;
            Ok(Enrolled { agent_id })
        }
        Some(Frame::Message(Message::Error { code, message })) => {
            bail!("enrollment refused by the collector ({code}): {message}")
        }
        other => bail!("unexpected answer to enrollment: {other:?}"),
    }
}

/// Keep the new key and certificates. Each file is replaced whole or not at all (a crash
/// during a re-enrolment leaves the old key, never an empty one), the key and certificate
/// readable by their owner only.
fn store_credentials(state: &StateDir, key_pem: &str, cert_pem: &str, ca_pem: &str) -> Result<()> {
    cairn_private_fs::write_secret(&state.path("agent.key"), key_pem.as_bytes())?;
    cairn_private_fs::write_secret(&state.path("agent.pem"), cert_pem.as_bytes())?;
    std::fs::write(state.path("ca.pem"), ca_pem)
        .with_context(|| format!("cannot write {}", state.path("ca.pem").display()))?;
    Ok(())
}

fn ca_fingerprint(pem: &str) -> Option<String> {
    let certs = super::tls::pem_certs(pem).ok()?;
    certs.first().map(|c| cairn_protocol::sha256_hex(c))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn re_enrolment_replaces_the_key_whole_and_a_failed_write_keeps_the_old_one() {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::new(d.path().join("state"));
        cairn_private_fs::create_private_dir(&state.root).unwrap();
        assert_eq!(
            std::fs::metadata(&state.root).unwrap().mode() & 0o777,
            0o700
        );
        store_credentials(&state, "KEY ONE", "CERT ONE", "CA").unwrap();
        // Re-enrolment: the new key replaces the old one, whole and private.
        store_credentials(&state, "KEY TWO, longer than the first", "CERT TWO", "CA").unwrap();
        let key = state.path("agent.key");
        assert_eq!(
            std::fs::read_to_string(&key).unwrap(),
            "KEY TWO, longer than the first"
        );
        assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(state.path("agent.pem")).unwrap(),
            "CERT TWO"
        );
        // A write that fails (here its temporary file cannot be created, even as root: a
        // directory stands at its name) leaves the old key as it was, not truncated.
        let tmp = state.path(&format!(".agent.key.tmp{}", std::process::id()));
        std::fs::create_dir(&tmp).unwrap();
        let e = store_credentials(&state, "KEY THREE", "CERT THREE", "CA").unwrap_err();
        assert!(format!("{e:#}").contains("agent.key"), "{e:#}");
        assert_eq!(
            std::fs::read_to_string(&key).unwrap(),
            "KEY TWO, longer than the first"
        );
        assert_eq!(
            std::fs::read_to_string(state.path("agent.pem")).unwrap(),
            "CERT TWO"
        );
    }
}
