//! The collector's HTTP API as the CLI speaks it: base URL, bearer token, the collector's CA.
//! Every failure leaves here as a [`Failure`] with the exit code it deserves and what to do.

use crate::exit::{Exit, Failure};
use anyhow::{Context, Result};
use serde_json::Value;
use std::time::Duration;

/// What to do when there is no token or the collector refuses it.
const TOKEN_HINT: &str = "set CAIRN_TOKEN (or pass --token) to the collector's admin token (DATA/admin.token, printed by `cairn-collector init`) or to one made with `cairn-collector token api --name NAME --role analyst`";

/// A name or id as one URL path segment: a host name or item name may hold any character.
pub(crate) fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) struct Api {
    base: String,
    token: String,
    pub(crate) http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(base: &str, token: &str, ca_cert: Option<&std::path::Path>) -> Result<Api> {
        if token.trim().is_empty() {
            return Err(Failure::new(Exit::Auth, format!("no API token: {TOKEN_HINT}")).into());
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10));
        if let Some(p) = ca_cert {
            let pem = std::fs::read(p).map_err(|e| {
                Failure::new(
                    Exit::Usage,
                    format!(
                        "cannot read the CA certificate {} (--ca-cert, CAIRN_CA_CERT): {e}",
                        p.display()
                    ),
                )
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Failure::new(
                    Exit::Usage,
                    format!("--ca-cert {} is not a PEM certificate ({e}): pass ca.pem from the collector's data directory", p.display()),
                )
            })?;
            b = b.add_root_certificate(cert);
        } else if base.starts_with("https://") {
            return Err(Failure::new(
                Exit::Usage,
                "to trust the collector's HTTPS, pass its CA with --ca-cert FILE or CAIRN_CA_CERT (ca.pem in the collector's data directory)",
            )
            .into());
        }
        if !base.starts_with("https://") && !base.starts_with("http://") {
            return Err(Failure::new(
                Exit::Usage,
                format!("--api {base:?} is not a URL: give https://HOST:PORT (the collector's --api-listen)"),
            )
            .into());
        }
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            http: b.build().context("cannot set up the HTTPS client")?,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Why a request never got an answer, and what to check.
    fn unreachable(&self, e: reqwest::Error) -> Failure {
        let text = format!("{:#}", anyhow::Error::from(e));
        let hint = if self.base.starts_with("http://") && text.contains("HTTP version") {
            format!(
                "the collector's API speaks HTTPS: use --api {}",
                self.base.replacen("http://", "https://", 1)
            )
        } else if text.contains("certificate") || text.contains("UnknownIssuer") {
            "the collector's certificate is not trusted: pass its ca.pem with --ca-cert (CAIRN_CA_CERT), and use the host name or address it was issued for".into()
        } else {
            "is `cairn-collector serve` running there? Check the address and port (its --api-listen, \
             default 127.0.0.1:8443 — loopback only unless told otherwise), a firewall between \
             here and there, and --api / CAIRN_API"
                .into()
        };
        Failure::new(
            Exit::Network,
            format!(
                "cannot reach the collector API at {}: {text}; {hint}",
                self.base
            ),
        )
    }

    pub(crate) async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = match rb.bearer_auth(&self.token).send().await {
            Ok(r) => r,
            Err(e) => return Err(self.unreachable(e).into()),
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(crate::output::printable))
            .unwrap_or_else(|| crate::output::printable(body.trim()));
        let code = status.as_u16();
        let (exit, hint) = match code {
            401 => (Exit::Auth, format!("; {TOKEN_HINT}")),
            403 => (
                Exit::Auth,
                "; this token's role may not do that: use one with more rights (an admin token)"
                    .into(),
            ),
            404 => (Exit::NotFound, String::new()),
            409 => (Exit::Conflict, String::new()),
            400 => (Exit::Usage, String::new()),
            _ => (Exit::Error, String::new()),
        };
        Err(Failure::new(exit, format!("collector answered {code}: {msg}{hint}")).into())
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Value> {
        self.json(self.send(self.http.get(self.url(path))).await?)
            .await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(self.send(self.http.post(self.url(path)).json(body)).await?)
            .await
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<Value> {
        self.json(self.send(self.http.delete(self.url(path))).await?)
            .await
    }

    pub(crate) async fn delete_json(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(
            self.send(self.http.delete(self.url(path)).json(body))
                .await?,
        )
        .await
    }

    pub(crate) async fn json(&self, resp: reqwest::Response) -> Result<Value> {
        resp.json()
            .await
            .context("the collector's answer was cut off or is not JSON")
    }
}
