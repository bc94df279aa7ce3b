//! TLS for the agent: rustls with the ring provider, TLS 1.3, ALPN `cairn/1`.

use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn quic_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .context("TLS configuration unusable for QUIC")?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(std::time::Duration::from_secs(20).try_into()?));
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    transport.stream_receive_window((8u32 * 1024 * 1024).into());
    transport.send_window(64 * 1024 * 1024);
    // Probe for jumbo frames (AWS VPCs carry 9001-byte packets): six times fewer packets to
    // encrypt and send than at the 1500-byte default, where the path allows it.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(cairn_protocol::JUMBO_UDP_PAYLOAD);
    transport.mtu_discovery_config(Some(mtu));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Accepts the collector only if its chain contains the CA whose SHA-256 the operator gave,
/// and the server certificate verifies against that CA. Used once, to enroll.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| cairn_protocol::sha256_hex(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the collector's CA does not match --ca-sha256 {} (it sent {} certificate(s), none with that fingerprint)",
                    self.fingerprint,
                    intermediates.len() + 1
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client configuration for enrollment: no client certificate, CA pinned by fingerprint.
pub fn enrollment_config(ca_sha256: &str) -> Result<quinn::ClientConfig> {
    let fingerprint = ca_sha256.trim().to_ascii_lowercase().replace(':', "");
    if fingerprint.len() != 64 || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
        anyhow::bail!("--ca-sha256 must be the 64 hex digits `cairn-collector init` printed, got {ca_sha256:?}");
    }
    let p = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint,
            provider: p,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![cairn_protocol::ALPN.to_vec()];
    quic_config(tls)
}

/// Client configuration after enrollment: the pinned CA as the only root, our certificate.
pub fn mutual_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca_pem)? {
        roots.add(c)?;
    }
    let chain = pem_certs(cert_pem)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())?
        .context("agent.key holds no private key")?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("agent certificate and key do not match")?;
    tls.alpn_protocols = vec![cairn_protocol::ALPN.to_vec()];
    quic_config(tls)
}

/// DER of every certificate in a PEM text.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        anyhow::bail!("no PEM certificate found");
    }
    Ok(certs)
}
