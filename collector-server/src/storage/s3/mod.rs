//! Evidence in S3-compatible object storage (`serve --blobs s3://bucket/prefix`): chunk
//! payloads under content-addressed keys `PREFIX/chunks/ab/<sha256>`, and the custody chain
//! heads under `PREFIX/custody-heads/<chain>/<inverted seq>.json` — beside the evidence, outside
//! the database, written once each, so several collectors sharing the bucket publish into one
//! place and the newest head is the first key a listing returns.
//!
//! A put returns only once the store answered 200 to a request whose body is signed by its
//! SHA-256, so a chunk is never acknowledged to the agent before it is stored. Where the bucket
//! has S3 Object Lock and a retention is configured, every chunk and head is written with it
//! (write once, read many); a retention asked of a bucket without Object Lock is refused at
//! start, not ignored.

pub mod client;
pub mod credentials;
pub mod federated;
pub mod sigv4;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod stand_in;

use super::blobs::{check_key, BlobError, BlobStore};
use super::heads::HeadStore;
use super::{Result as StoreResult, StorageError};
use base64::Engine;
use cairn_protocol::custody::ChainHead;
use client::{xml_values, Client, Endpoint, Observe, S3Error};
use credentials::{Credentials, Env};

/// Object Lock mode: GOVERNANCE can be lifted by a privileged principal, COMPLIANCE by no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    pub fn parse(s: &str) -> Option<LockMode> {
        match s.to_ascii_lowercase().as_str() {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
    fn header(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// The retention each object is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    pub mode: LockMode,
    pub days: u32,
}

/// What the bucket said about Object Lock at start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockStatus {
    Enabled,
    NotEnabled,
    /// The server does not implement the call (Garage, for one).
    Unsupported(String),
}

/// `s3://bucket/prefix[?endpoint=URL&region=R&path_style=true|false]`; the query overrides
/// what the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'));
        if !bucket_ok {
            return Err(format!(
                "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
            return Err(format!("prefix {prefix:?} has an empty, '.' or '..' part"));
        }
        let mut loc = Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: None,
            region: None,
            path_style: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "endpoint" => loc.endpoint = Some(v.to_string()),
                "region" => loc.region = Some(v.to_string()),
                "path_style" => {
                    loc.path_style = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("path_style={v:?}: use true or false")),
                    })
                }
                _ => {
                    return Err(format!(
                        "unknown option {k:?} in {url:?} (endpoint, region, path_style)"
                    ))
                }
            }
        }
        Ok(loc)
    }
}

/// One page of a listing: keys, the common prefixes below, the next page's token.
type Listing = (Vec<String>, Vec<String>, Option<String>);

/// One bucket and prefix: the blob store and the head store of the collectors that share it.
pub struct S3 {
    client: Client,
    prefix: String,
    retention: Option<Retention>,
    lock: LockStatus,
    display: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("--blobs: {0}")]
    Config(String),
    #[error("--blobs {url}: {source}")]
    Store { url: String, source: S3Error },
    #[error("--blobs {url}: {detail}")]
    Lock { url: String, detail: String },
}

impl S3 {
    /// Connect to the bucket, check that it answers, and what it says about Object Lock.
    pub fn open(
        url: &str,
        retention: Option<Retention>,
        env: &Env,
        observe: Box<Observe>,
    ) -> Result<S3, OpenError> {
        let loc = Location::parse(url).map_err(OpenError::Config)?;
        let profile = credentials::load_profile(env);
        let creds =
            Credentials::resolve(env, &profile).map_err(|e| OpenError::Config(e.to_string()))?;
        let region = loc
            .region
            .clone()
            .or_else(|| credentials::region(env, &profile))
            .or_else(|| {
                credentials::Imds::from_env(env)
                    .filter(|_| creds.source() == credentials::Source::InstanceRole)
                    .and_then(|i| i.region().ok())
            })
            .unwrap_or_else(|| "us-east-1".into());
        let (endpoint, default_path_style) = match loc
            .endpoint
            .clone()
            .or_else(|| credentials::endpoint(env, &profile))
        {
            Some(e) => (e, true),
            None => (format!("https://s3.{region}.amazonaws.com"), false),
        };
        let endpoint = Endpoint::parse(&endpoint, loc.path_style.unwrap_or(default_path_style))
            .map_err(OpenError::Config)?;
        let display = format!("s3://{}/{}", loc.bucket, loc.prefix);
        let client = Client::new(endpoint, loc.bucket.clone(), region, creds, observe);
        let store = |source| OpenError::Store {
            url: display.clone(),
            source,
        };
        // The bucket must answer a listing with these keys before anything is served.
        client
            .call(
                "list",
                "GET",
                None,
                &[
                    ("list-type".into(), "2".into()),
                    ("max-keys".into(), "1".into()),
                    ("prefix".into(), loc.prefix.clone()),
                ],
                &[],
                b"",
            )
            .map_err(store)?;
        let lock = match client.call(
            "object_lock",
            "GET",
            None,
            &[("object-lock".into(), String::new())],
            &[],
            b"",
        ) {
            Ok(a) => {
                let text = String::from_utf8_lossy(&a.body);
                if xml_values(&text, "ObjectLockEnabled")
                    .iter()
                    .any(|v| v == "Enabled")
                {
                    LockStatus::Enabled
                } else {
                    LockStatus::NotEnabled
                }
            }
            Err(S3Error::NotFound { .. }) => LockStatus::NotEnabled,
            Err(S3Error::Refused { detail, .. }) => LockStatus::Unsupported(detail),
            Err(e) => return Err(store(e)),
        };
        if let Some(r) = retention {
            if lock != LockStatus::Enabled {
                return Err(OpenError::Lock {
                    url: display,
                    detail: format!(
                        "a {} retention of {} days was asked, but the bucket has no S3 Object Lock ({lock:?}): create the bucket with Object Lock enabled, or drop --object-lock-days",
                        r.mode.header(),
                        r.days
                    ),
                });
            }
        }
        Ok(S3 {
            client,
            prefix: loc.prefix,
            retention,
            lock,
            display,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{} at {}://{} (region {}, keys from {:?})",
            self.display,
            self.client.endpoint.scheme,
            self.client.endpoint.authority,
            self.client.region,
            self.client.credential_source()
        )
    }

    pub fn lock_status(&self) -> &LockStatus {
        &self.lock
    }

    fn chunk_key(&self, sha256: &str) -> Result<String, BlobError> {
        check_key(sha256)?;
        Ok(format!("{}chunks/{}/{sha256}", self.prefix, &sha256[..2]))
    }

    fn heads_prefix(&self, chain: &str) -> String {
        format!(
            "{}custody-heads/{}/",
            self.prefix,
            sigv4::uri_encode(chain, false)
        )
    }

    /// Headers every object is written with: the retention, and the body's checksum that
    /// Object Lock requires.
    fn write_headers(&self, body: &[u8]) -> Vec<(String, String)> {
        let Some(r) = self.retention else {
            return Vec::new();
        };
        let until = time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(r.days));
        let until = cairn_protocol::rfc3339::format(until);
        let sha = <sha2::Sha256 as sha2::Digest>::digest(body);
        vec![
            ("x-amz-object-lock-mode".into(), r.mode.header().into()),
            ("x-amz-object-lock-retain-until-date".into(), until),
            ("x-amz-sdk-checksum-algorithm".into(), "SHA256".into()),
            (
                "x-amz-checksum-sha256".into(),
                base64::engine::general_purpose::STANDARD.encode(sha),
            ),
        ]
    }

    fn put_object(&self, op: &'static str, key: &str, body: &[u8]) -> Result<(), S3Error> {
        self.client
            .call(op, "PUT", Some(key), &[], &self.write_headers(body), body)
            .map(|_| ())
    }

    /// Keys under a prefix (one page) and the common prefixes below it, with the next page's
    /// token.
    fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        max_keys: u32,
        token: Option<&str>,
    ) -> Result<Listing, S3Error> {
        let mut q = vec![
            ("list-type".to_string(), "2".to_string()),
            ("prefix".to_string(), prefix.to_string()),
            ("max-keys".to_string(), max_keys.to_string()),
        ];
        if delimiter {
            q.push(("delimiter".into(), "/".into()));
        }
        if let Some(t) = token {
            q.push(("continuation-token".into(), t.to_string()));
        }
        let a = self.client.call("list", "GET", None, &q, &[], b"")?;
        let text = String::from_utf8_lossy(&a.body);
        let keys = xml_values(&text, "Key");
        // `<Prefix>` is also the echo of the request's own prefix: only those below count.
        let prefixes = xml_values(&text, "Prefix")
            .into_iter()
            .filter(|p| p.len() > prefix.len() && p.starts_with(prefix))
            .collect();
        let truncated = xml_values(&text, "IsTruncated").iter().any(|v| v == "true");
        let next = xml_values(&text, "NextContinuationToken")
            .into_iter()
            .next();
        Ok((keys, prefixes, next.filter(|_| truncated)))
    }
}

impl From<S3Error> for BlobError {
    fn from(e: S3Error) -> BlobError {
        match e {
            S3Error::NotFound { endpoint, key } => BlobError::Missing {
                sha256: key.rsplit('/').next().unwrap_or("").to_string(),
                location: endpoint,
            },
            S3Error::Unavailable { endpoint, detail } => BlobError::Unavailable {
                location: endpoint,
                detail,
            },
            e @ S3Error::Refused { .. } => BlobError::Io {
                location: "object store".into(),
                source: std::io::Error::other(e.to_string()),
            },
        }
    }
}

fn head_err(e: S3Error) -> StorageError {
    StorageError::Backend {
        what: "custody heads in the object store",
        source: Box::new(e),
    }
}

impl BlobStore for S3 {
    /// About 20 ms a PUT on loopback Garage against 4 MiB chunks that arrive every few ms:
    /// eight requests in flight keep the upload from waiting on the store (BENCHMARKS.md #16).
    fn writes_in_parallel(&self) -> usize {
        8
    }

    fn put(&self, sha256: &str, payload: &[u8]) -> Result<(), BlobError> {
        let key = self.chunk_key(sha256)?;
        Ok(self.put_object("put", &key, payload)?)
    }

    fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError> {
        let key = self.chunk_key(sha256)?;
        Ok(self
            .client
            .call("get", "GET", Some(&key), &[], &[], b"")?
            .body)
    }

    fn exists(&self, sha256: &str) -> Result<bool, BlobError> {
        let key = self.chunk_key(sha256)?;
        match self.client.call("head", "HEAD", Some(&key), &[], &[], b"") {
            Ok(_) => Ok(true),
            Err(S3Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&self, sha256: &str) -> Result<(), BlobError> {
        let key = self.chunk_key(sha256)?;
        match self
            .client
            .call("delete", "DELETE", Some(&key), &[], &[], b"")
        {
            Ok(_) | Err(S3Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Inverted so that ascending key order is newest first.
fn head_key_seq(seq: u64) -> String {
    format!("{:020}", u64::MAX - seq)
}

impl HeadStore for S3 {
    fn publish(&self, head: &ChainHead) -> StoreResult<()> {
        let body = serde_json::to_vec(head).map_err(|e| StorageError::Corrupt {
            what: "chain head",
            detail: e.to_string(),
        })?;
        let key = format!(
            "{}{}.json",
            self.heads_prefix(&head.collection_id),
            head_key_seq(head.seq)
        );
        self.put_object("put_head", &key, &body).map_err(head_err)
    }

    fn latest(&self, chain: &str) -> StoreResult<Option<ChainHead>> {
        let (keys, _, _) = self
            .list(&self.heads_prefix(chain), false, 1, None)
            .map_err(head_err)?;
        let Some(key) = keys.into_iter().next() else {
            return Ok(None);
        };
        let a = self
            .client
            .call("get_head", "GET", Some(&key), &[], &[], b"")
            .map_err(head_err)?;
        let head: ChainHead =
            serde_json::from_slice(&a.body).map_err(|e| StorageError::Corrupt {
                what: "custody head in the object store",
                detail: format!("{key}: {e}"),
            })?;
        if head.collection_id != chain
            || !key.ends_with(&format!("{}.json", head_key_seq(head.seq)))
        {
            return Err(StorageError::Corrupt {
                what: "custody head in the object store",
                detail: format!(
                    "{key} holds the head of {:?} seq {}, not what its name says",
                    head.collection_id, head.seq
                ),
            });
        }
        Ok(Some(head))
    }

    fn chains(&self) -> StoreResult<usize> {
        let prefix = format!("{}custody-heads/", self.prefix);
        let (mut n, mut token) = (0usize, None::<String>);
        loop {
            let (_, prefixes, next) = self
                .list(&prefix, true, 1000, token.as_deref())
                .map_err(head_err)?;
            n += prefixes.len();
            match next {
                Some(t) => token = Some(t),
                None => return Ok(n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_refuse() {
        let l = Location::parse(
            "s3://evidence-bucket/cairn/prod/?endpoint=http://127.0.0.1:3900&region=garage",
        )
        .unwrap();
        assert_eq!(l.bucket, "evidence-bucket");
        assert_eq!(l.prefix, "cairn/prod/");
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(l.region.as_deref(), Some("garage"));
        assert_eq!(Location::parse("s3://bkt").unwrap().prefix, "");
        for bad in [
            "s3://",
            "http://bkt/x",
            "s3://BK/x",
            "s3://b/x",
            "s3://bkt/a/../b",
            "s3://bkt/a//b",
            "s3://bkt/x?bogus=1",
            "s3://bkt/x?path_style=maybe",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    /// An S3 stand-in that lists an empty bucket, says what `?object-lock` says, and takes
    /// every PUT.
    fn lock_store(
        lock_answer: &'static str,
    ) -> (
        String,
        std::sync::Arc<std::sync::Mutex<Vec<stand_in::Seen>>>,
    ) {
        stand_in::serve(Box::new(move |r| {
            if r.method == "GET" && r.target.contains("object-lock") {
                (200, lock_answer.to_string())
            } else if r.method == "GET" {
                (
                    200,
                    "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>".into(),
                )
            } else {
                (200, String::new())
            }
        }))
    }

    fn keys_env(url: String) -> impl Fn(&str) -> Option<String> + Send + Sync {
        move |k| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            "AWS_REGION" => Some("eu-west-1".into()),
            "AWS_ENDPOINT_URL" => Some(url.clone()),
            "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
            "HOME" => Some("/nonexistent".into()),
            _ => None,
        }
    }

    #[test]
    fn with_object_lock_every_chunk_is_written_with_its_retention() {
        use crate::storage::BlobStore;
        let (url, seen) = lock_store(
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>",
        );
        let retention = Retention {
            mode: LockMode::Compliance,
            days: 30,
        };
        let s3 = S3::open(
            "s3://evidence-bucket/cairn/",
            Some(retention),
            &keys_env(url),
            Box::new(|_, _, _| {}),
        )
        .unwrap();
        assert_eq!(s3.lock_status(), &LockStatus::Enabled);
        let payload = b"a zstd chunk, as the agent sent it";
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(payload));
        s3.put(&sha, payload).unwrap();
        let seen = seen.lock().unwrap().clone();
        let put = seen.iter().find(|r| r.method == "PUT").unwrap();
        assert!(
            put.target.contains(&sha),
            "content-addressed key: {}",
            put.target
        );
        assert_eq!(put.body, payload);
        assert_eq!(put.header("x-amz-object-lock-mode"), Some("COMPLIANCE"));
        let until = put.header("x-amz-object-lock-retain-until-date").unwrap();
        let until = cairn_protocol::rfc3339::parse_ns(until).unwrap();
        let want = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
            .unix_timestamp_nanos() as i64;
        assert!(
            (until - want).abs() < 120_000_000_000,
            "retain until {until} vs {want}"
        );
        // Object Lock needs an integrity checksum on every write.
        assert_eq!(
            put.header("x-amz-checksum-sha256"),
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode(<sha2::Sha256 as sha2::Digest>::digest(payload))
                    .as_str()
            )
        );
        assert!(put
            .header("authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 "));
    }

    #[test]
    fn a_retention_asked_of_a_bucket_without_object_lock_is_refused() {
        let (url, seen) = lock_store("<ObjectLockConfiguration></ObjectLockConfiguration>");
        let e = S3::open(
            "s3://evidence-bucket/cairn/",
            Some(Retention {
                mode: LockMode::Governance,
                days: 7,
            }),
            &keys_env(url),
            Box::new(|_, _, _| {}),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no S3 Object Lock"), "{e}");
        assert!(
            seen.lock().unwrap().iter().all(|r| r.method != "PUT"),
            "nothing written"
        );
    }

    #[test]
    fn newest_head_sorts_first() {
        assert!(head_key_seq(10) < head_key_seq(9));
        assert!(head_key_seq(u64::MAX) < head_key_seq(0));
        assert_eq!(head_key_seq(0).len(), 20);
    }
}
