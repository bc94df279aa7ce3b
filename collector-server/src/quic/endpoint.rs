//! The QUIC endpoint: TLS 1.3 with client certificates from the collector's CA (or none, for
//! enrollment only), large flow-control windows, jumbo-frame MTU discovery, and reset keys that
//! survive restarts.

use crate::datadir::DataDir;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn endpoint(data: &DataDir, listen: SocketAddr) -> Result<quinn::Endpoint> {
    let (certs, key) = data.server_identity()?;
    let ca_pem = data.ca_pem()?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    // Enrollment happens before the agent has a certificate; such connections can do
    // nothing else (see `handle`).
    .allow_unauthenticated()
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![cairn_protocol::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Agents keep the connection alive every 5 s; one that stops answering for 10 s is gone,
    // and `cairn hosts` says so within seconds rather than half a minute later.
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into()?));
    transport.max_concurrent_bidi_streams(64u32.into());
    // Large windows: one item stream should fill a fast link on its own.
    transport.stream_receive_window((32u32 * 1024 * 1024).into());
    transport.receive_window((64u32 * 1024 * 1024).into());
    transport.send_window(64 * 1024 * 1024);
    // Probe for jumbo frames (AWS VPCs carry 9001-byte packets): six times fewer packets to
    // encrypt and send than at the 1500-byte default, where the path allows it.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(cairn_protocol::JUMBO_UDP_PAYLOAD);
    transport.mtu_discovery_config(Some(mtu));
    config.transport_config(Arc::new(transport));
    // A stateless-reset key that survives restarts: after a crash, agents' packets for old
    // connections are answered with a reset they recognise, so they reconnect at once instead
    // of waiting for an idle timeout.
    let secret = data.quic_reset_secret()?;
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    // Connection ids must validate after a restart too, or the packets that should draw a
    // reset are dropped as invalid.
    let cid_key =
        u64::from_le_bytes(secret[..8].try_into().unwrap_or_default()) ^ 0x6361_6972_6e2d_6369;
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let socket = std::net::UdpSocket::bind(listen)
        .with_context(|| format!("cannot listen on {listen}/udp for agents"))?;
    let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
    Ok(quinn::Endpoint::new(
        endpoint_config,
        Some(config),
        socket,
        runtime,
    )?)
}
