//! A blocking HTTPS client for the collector's API.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// A minimal blocking client for the collector's HTTPS API (keep-alive, so polling is cheap),
/// trusting only the collector's CA.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl Api {
    pub fn new(base: &str, token: &str, ca_pem: &Path) -> Result<Api> {
        let pem = fs::read(ca_pem).with_context(|| format!("cannot read {}", ca_pem.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.context("bad certificate in the collector's ca.pem")?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(config))
            .timeout(Duration::from_secs(60))
            .build();
        Ok(Api {
            agent,
            base: base.trim_end_matches('/').into(),
            auth: format!("Bearer {token}"),
        })
    }

    fn handle(path: &str, r: Result<ureq::Response, ureq::Error>) -> Result<Value> {
        match r {
            Ok(resp) => Ok(resp.into_json()?),
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                bail!("{path}: HTTP {code}: {body}")
            }
            Err(e) => Err(anyhow!("{path}: {e}")),
        }
    }

    /// `GET PATH` (e.g. `/api/v1/hosts`), the JSON answer; an error names the status and body.
    pub fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .call();
        Self::handle(path, r)
    }

    /// `POST PATH` with a JSON body, the JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .send_json(body.clone());
        Self::handle(path, r)
    }

    /// `DELETE PATH` with a JSON body, the JSON answer.
    pub fn delete(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self
            .agent
            .delete(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .send_json(body.clone());
        Self::handle(path, r)
    }
}
