//! A person at the web console without a browser: HTTPS with the collector's CA, a session
//! cookie, no redirects followed (so a test sees each 303), forms posted as a browser posts
//! them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// One answer: status, body, and where a redirect points.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

pub struct ConsoleClient {
    agent: ureq::Agent,
    base: String,
    /// `cairn_session=…` once signed in.
    pub cookie: Option<String>,
    /// The CSRF token of the session, read from a page.
    pub csrf: Option<String>,
}

impl ConsoleClient {
    pub fn new(base: &str, ca_pem: &Path) -> Result<ConsoleClient> {
        let pem = std::fs::read(ca_pem).with_context(|| format!("reading {}", ca_pem.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(ConsoleClient {
            // A connection per request: after refusing a POST without reading its body, the
            // server closes the connection, and a pooled one reused at that moment ends in EOF
            // (a browser retries such a request; this client would fail the test instead).
            agent: ureq::AgentBuilder::new()
                .tls_config(Arc::new(config))
                .max_idle_connections(0)
                .redirects(0)
                .timeout(Duration::from_secs(60))
                .build(),
            base: base.trim_end_matches('/').to_string(),
            cookie: None,
            csrf: None,
        })
    }

    fn answer(r: Result<ureq::Response, ureq::Error>) -> Result<(Page, Option<String>)> {
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(anyhow!("console request: {e}")),
        };
        let status = resp.status();
        let location = resp.header("location").map(str::to_string);
        let cookie = resp
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .map(str::to_string);
        let body = resp.into_string().unwrap_or_default();
        Ok((
            Page {
                status,
                body,
                location,
            },
            cookie,
        ))
    }

    fn keep(&mut self, cookie: Option<String>) {
        if let Some(c) = cookie {
            // An emptied cookie is a sign-out.
            let emptied = c.split_once('=').is_none_or(|(_, v)| v.is_empty());
            self.cookie = (!emptied).then_some(c);
        }
    }

    pub fn get(&mut self, path: &str) -> Result<Page> {
        let mut req = self.agent.get(&format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        let (page, cookie) = Self::answer(req.call())?;
        self.keep(cookie);
        if let Some(t) = csrf_of(&page.body) {
            self.csrf = Some(t);
        }
        Ok(page)
    }

    /// POST a form (`application/x-www-form-urlencoded`), the fields as given (add `csrf`
    /// yourself, or leave it out to test that it is required).
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Result<Page> {
        let mut req = self.agent.post(&format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        let (page, cookie) = Self::answer(req.send_form(fields))?;
        self.keep(cookie);
        Ok(page)
    }

    /// POST a form with this session's CSRF token added.
    pub fn post_csrf(&mut self, path: &str, fields: &[(&str, &str)]) -> Result<Page> {
        let csrf = self
            .csrf
            .clone()
            .ok_or_else(|| anyhow!("no CSRF token yet: get a page first"))?;
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all)
    }

    /// Sign in with an API token; the answer of the sign-in form.
    pub fn sign_in(&mut self, token: &str) -> Result<Page> {
        let page = self.post("/login", &[("token", token), ("next", "/")])?;
        if self.cookie.is_some() {
            self.get("/")?;
        }
        Ok(page)
    }
}

/// The CSRF token a console page carries in its `<meta name="csrf">`.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" content=\"")? + "name=\"csrf\" content=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_string())
}
