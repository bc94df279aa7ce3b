//! Enrollment: a new key pair on the host, a CSR, and an enrollment token, in exchange for a
//! certificate signed by the collector's CA. The key never leaves this host.

use crate::config::{write_secret, AgentConfig, StateDir};
use anyhow::{bail, Context, Result};
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};

pub struct Enrolled {
    pub agent_id: String,
}

pub async fn enroll(
    state: &StateDir,
    collector: &str,
    token: &str,
    ca_sha256: &str,
) -> Result<Enrolled> {
    std::fs::create_dir_all(&state.root)
        .with_context(|| format!("cannot create {}", state.root.display()))?;
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
            format!("cannot establish a TLS session with the collector at {collector}")
        })?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(
        &mut send,
        Message::Enroll {
            token: token.to_string(),
            csr_pem: csr,
            hostname,
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
        })) => {
            // The CA we store must be the one we pinned.
            let got = ca_fingerprint(&ca_pem).unwrap_or_default();
            let want = ca_sha256.trim().to_ascii_lowercase().replace(':', "");
            if got != want {
                bail!("the collector returned a CA with fingerprint {got}, not the pinned {want}");
            }
            write_secret(&state.path("agent.key"), key.serialize_pem().as_bytes())?;
            write_secret(&state.path("agent.pem"), cert_pem.as_bytes())?;
            std::fs::write(state.path("ca.pem"), ca_pem)?;
            state.save(&AgentConfig::new(collector.to_string(), agent_id.clone()))?;
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

fn ca_fingerprint(pem: &str) -> Option<String> {
    let certs = super::tls::pem_certs(pem).ok()?;
    certs.first().map(|c| cairn_protocol::sha256_hex(c))
}
