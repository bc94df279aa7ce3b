//! The collector's certificate authority.
//!
//! One CA per collector: it signs the collector's own TLS certificate and every agent's client
//! certificate. Agents pin the CA by its SHA-256 fingerprint at enrollment, so no public PKI and
//! no DNS name is involved; the server certificate always carries
//! [`cairn_protocol::COLLECTOR_SERVER_NAME`] plus whatever names the operator adds.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("certificate operation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate signing request is not valid PEM PKCS#10: {0}")]
    BadCsr(rcgen::Error),
    #[error("bad name {0:?} for the server certificate")]
    BadName(String),
}

pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A PEM certificate and its PEM private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86400);
const SERVER_VALIDITY: Duration = Duration::from_secs(2 * 365 * 86400);
/// Agent certificates live a year; re-enrollment renews them.
pub const AGENT_VALIDITY: Duration = Duration::from_secs(365 * 86400);

fn validity(params: &mut CertificateParams, d: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // Tolerate clock skew between hosts and the collector.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + d;
}

impl Authority {
    pub fn create(collector_name: &str) -> Result<Authority, AuthorityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("cairn collector CA ({collector_name})"),
        );
        dn.push(DnType::OrganizationName, "cairn");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert, key })
    }

    /// Load from the PEM files written by [`Authority::create`].
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority, AuthorityError> {
        let key = KeyPair::from_pem(key_pem)?;
        // rcgen signs with an issuer rebuilt from the CA's parameters and key; subject and key
        // are the same, so what it signs verifies against the original CA certificate.
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn issue_server(&self, names: &[String]) -> Result<Issued, AuthorityError> {
        let key = KeyPair::generate()?;
        let mut all = vec![cairn_protocol::COLLECTOR_SERVER_NAME.to_string()];
        all.extend(names.iter().cloned());
        let mut params = CertificateParams::default();
        for n in all {
            let san = match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|_| AuthorityError::BadName(n.clone()))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, cairn_protocol::COLLECTOR_SERVER_NAME);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, SERVER_VALIDITY);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Sign an agent's CSR. Only the CSR's public key is used: the subject is the agent id the
    /// collector assigns, so an agent cannot choose who it is.
    pub fn sign_agent(&self, csr_pem: &str, agent_id: &str) -> Result<String, AuthorityError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(AuthorityError::BadCsr)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, agent_id);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "cairn agent");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, AGENT_VALIDITY);
        csr.params = params;
        Ok(csr.signed_by(&self.cert, &self.key)?.pem())
    }
}

/// SHA-256 of the DER of the first certificate in a PEM text, lower-case hex.
pub fn pem_fingerprint(pem: &str) -> Option<String> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
    Some(cairn_protocol::sha256_hex(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_subject_comes_from_the_collector() {
        let ca = Authority::create("test").unwrap();
        let reloaded = Authority::load(&ca.cert_pem(), &ca.key_pem()).unwrap();
        let agent_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "admin");
        let csr = p.serialize_request(&agent_key).unwrap().pem().unwrap();
        let cert = reloaded.sign_agent(&csr, "agent-123").unwrap();
        let parsed = CertificateParams::from_ca_cert_pem(&cert).unwrap();
        let cn = parsed.distinguished_name.get(&DnType::CommonName).unwrap();
        assert!(format!("{cn:?}").contains("agent-123"));
        assert!(parsed.subject_alt_names.is_empty());
        assert!(Authority::load(&ca.cert_pem(), &ca.key_pem())
            .unwrap()
            .sign_agent("junk", "x")
            .is_err());
        assert_eq!(pem_fingerprint(&ca.cert_pem()).unwrap().len(), 64);
    }
}
