//! The collector's HTTP API as the CLI speaks it: base URL, bearer token, the collector's CA.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::time::Duration;

pub(crate) struct Api {
    base: String,
    token: String,
    pub(crate) http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(cli: &crate::Cli) -> Result<Api> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10));
        if let Some(p) = &cli.ca_cert {
            let pem = std::fs::read(p)
                .with_context(|| format!("cannot read CA certificate {}", p.display()))?;
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .context("--ca-cert is not a PEM certificate")?,
            );
        } else if cli.api.starts_with("https://") {
            bail!("to trust the collector's HTTPS, pass its CA with --ca-cert FILE or CAIRN_CA_CERT (ca.pem in the collector's data directory)");
        }
        Ok(Api {
            base: cli.api.trim_end_matches('/').to_string(),
            token: cli.token.clone(),
            http: b.build()?,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the collector API at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(body);
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
            " (set CAIRN_TOKEN or --token)"
        } else {
            ""
        };
        bail!("collector answered {status}: {msg}{hint}")
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .send(self.http.get(self.url(path)))
            .await?
            .json()
            .await?)
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self
            .send(self.http.post(self.url(path)).json(body))
            .await?
            .json()
            .await?)
    }
}
