//! The few S3 calls the collector makes (PUT, GET, HEAD, DELETE of an object, ListObjectsV2,
//! the bucket's Object Lock configuration), signed with SigV4, over a blocking HTTP agent with
//! bounded answers and timeouts. Transient failures are tried again a few times; what is left
//! is classified so that the caller can tell "the store is away" from "the object is absent".

use super::credentials::Credentials;
use super::sigv4::{self, amz_date, canonical_query, sha256_hex, uri_encode, Request};
use std::io::Read;
use std::time::{Duration, Instant};

/// The largest object answer read: a chunk is at most a few MiB, a listing a few hundred KiB.
pub const MAX_BODY: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The store cannot be reached, is overloaded, or refuses the request (5xx, 403,
    /// connection refused, timeout): evidence cannot be stored now; later it may.
    #[error("object store {endpoint} unavailable: {detail}")]
    Unavailable { endpoint: String, detail: String },
    #[error("object {key} not found in {endpoint}")]
    NotFound { endpoint: String, key: String },
    /// Any other answer: a request the store will never accept as it is.
    #[error("object store {endpoint}: {detail}")]
    Refused { endpoint: String, detail: String },
}

/// Where the bucket is reached, and how.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// Host and, when not the scheme's default, `:port`.
    pub authority: String,
    /// `host/bucket/key` (S3-compatible servers) rather than `bucket.host/key` (AWS).
    pub path_style: bool,
}

impl Endpoint {
    /// `http://127.0.0.1:3900` or `https://s3.eu-west-1.amazonaws.com`; a path is refused.
    pub fn parse(url: &str, path_style: bool) -> Result<Endpoint, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("endpoint {url:?} is not a URL (http://host:port)"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("endpoint {url:?}: use http:// or https://"));
        }
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(format!(
                "endpoint {url:?}: give only the scheme, host and port"
            ));
        }
        let authority = authority
            .strip_suffix(if scheme == "https" { ":443" } else { ":80" })
            .unwrap_or(authority);
        Ok(Endpoint {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            path_style,
        })
    }

    fn display(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// How long one call took and whether it failed, for `/metrics`.
pub type Observe = dyn Fn(&'static str, Duration, bool) + Send + Sync;

pub struct Client {
    pub endpoint: Endpoint,
    pub bucket: String,
    pub region: String,
    creds: Credentials,
    agent: ureq::Agent,
    observe: Box<Observe>,
}

/// An answer: status, selected headers, body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

const ATTEMPTS: u32 = 3;

impl Client {
    pub fn new(
        endpoint: Endpoint,
        bucket: String,
        region: String,
        creds: Credentials,
        observe: Box<Observe>,
    ) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .max_idle_connections_per_host(16)
            .build();
        Client {
            endpoint,
            bucket,
            region,
            creds,
            agent,
            observe,
        }
    }

    pub fn credential_source(&self) -> super::credentials::Source {
        self.creds.source()
    }

    fn host_and_path(&self, key: Option<&str>) -> (String, String) {
        let key = key.unwrap_or("");
        if self.endpoint.path_style {
            let path = if key.is_empty() {
                format!("/{}", self.bucket)
            } else {
                format!("/{}/{key}", self.bucket)
            };
            (self.endpoint.authority.clone(), path)
        } else {
            (
                format!("{}.{}", self.bucket, self.endpoint.authority),
                format!("/{key}"),
            )
        }
    }

    /// One signed call, tried again on a transient failure.
    pub fn call(
        &self,
        op: &'static str,
        method: &str,
        key: Option<&str>,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: &[u8],
    ) -> Result<Answer, S3Error> {
        let mut wait = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let r = self.call_once(method, key, query, extra, body);
            (self.observe)(op, started.elapsed(), r.is_err());
            match r {
                Err(S3Error::Unavailable { .. }) if attempt < ATTEMPTS => {
                    std::thread::sleep(wait);
                    wait *= 4;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn call_once(
        &self,
        method: &str,
        key: Option<&str>,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: &[u8],
    ) -> Result<Answer, S3Error> {
        let (host, path) = self.host_and_path(key);
        let payload_sha256 = sha256_hex(body);
        let date = amz_date(time::OffsetDateTime::now_utc());
        let keys = self.creds.keys();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host.clone()),
            ("x-amz-content-sha256".into(), payload_sha256.clone()),
            ("x-amz-date".into(), date.clone()),
        ];
        if let Some(t) = &keys.session_token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        headers.extend(extra.iter().cloned());
        let auth = sigv4::authorization(
            &keys,
            &self.region,
            &date,
            &Request {
                method,
                path: &path,
                query,
                headers: &headers,
                payload_sha256: &payload_sha256,
            },
        );
        let q = canonical_query(query);
        let url = format!(
            "{}://{host}{}{}{q}",
            self.endpoint.scheme,
            uri_encode(&path, true),
            if q.is_empty() { "" } else { "?" }
        );
        let mut req = self.agent.request(method, &url).set("authorization", &auth);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        let unavailable = |detail: String| S3Error::Unavailable {
            endpoint: self.endpoint.display(),
            detail,
        };
        let result = if body.is_empty() && method != "PUT" {
            req.call()
        } else {
            req.send_bytes(body)
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let text = read_body(r, 16 << 10)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let code = xml_values(&text, "Code").into_iter().next();
                let detail = format!(
                    "{method} {path}: HTTP {status}{}",
                    code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
                );
                return Err(match status {
                    404 if method != "PUT" => S3Error::NotFound {
                        endpoint: self.endpoint.display(),
                        key: key.unwrap_or("").to_string(),
                    },
                    // 501 Not Implemented is an answer, not an outage.
                    403 | 408 | 429 | 500 | 502..=599 => unavailable(detail),
                    _ => S3Error::Refused {
                        endpoint: self.endpoint.display(),
                        detail,
                    },
                });
            }
            Err(e) => return Err(unavailable(format!("{method} {path}: {e}"))),
        };
        let status = resp.status();
        let body = read_body(resp, MAX_BODY)
            .map_err(|e| unavailable(format!("{method} {path}: reading the answer: {e}")))?;
        Ok(Answer { status, body })
    }
}

fn read_body(r: ureq::Response, max: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.into_reader().take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "the answer is larger than {max} bytes"
        )));
    }
    Ok(out)
}

/// The text of every `<tag>…</tag>` in an S3 XML answer, unescaped. S3's answers are flat
/// enough that this is all the XML the collector needs; anything odd just matches nothing.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_strictly() {
        let e = Endpoint::parse("http://127.0.0.1:3900/", true).unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.authority.as_str()),
            ("http", "127.0.0.1:3900")
        );
        assert_eq!(
            Endpoint::parse("https://s3.eu-west-1.amazonaws.com:443", false)
                .unwrap()
                .authority,
            "s3.eu-west-1.amazonaws.com"
        );
        for bad in [
            "127.0.0.1:3900",
            "ftp://x",
            "http://x/path",
            "http://u@x",
            "http://",
        ] {
            assert!(Endpoint::parse(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn xml_values_are_found_and_unescaped() {
        let x = "<R><Contents><Key>a&amp;b</Key></Contents><Contents><Key>c</Key></Contents><IsTruncated>false</IsTruncated>";
        assert_eq!(xml_values(x, "Key"), vec!["a&b", "c"]);
        assert_eq!(xml_values(x, "IsTruncated"), vec!["false"]);
        assert!(xml_values("<Key>unclosed", "Key").is_empty());
    }
}
