//! What an attacker with access to a collector's storage does, on whichever back ends the
//! collector runs: SQL on its database (SQLite through Python's sqlite3, or PostgreSQL through
//! psql), bytes of a stored chunk changed (a file, or an object rewritten with curl's SigV4),
//! the custody heads removed. The custody tests use these to prove that verification catches
//! it on every back end.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::{run, Collector};

impl Collector {
    fn env_var(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Runs `;`-separated SQL statements against the collector's database, as someone with
    /// access to it would (the collector may be running); the rows, `|`-separated.
    pub fn sql(&self, statements: &str) -> Result<String> {
        let out = match self.env_var("CAIRN_DATABASE") {
            Some(url) => {
                let mut cmd = Command::new("psql");
                cmd.arg(url)
                    .args([
                        "-X",
                        "-q",
                        "-A",
                        "-t",
                        "-F",
                        "|",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-c",
                    ])
                    .arg(statements);
                run(cmd, Duration::from_secs(60))?.ok()?
            }
            None => {
                let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nfor s in sys.argv[2].split(';'):\n  s=s.strip()\n  if s:\n    for r in c.execute(s): print('|'.join(str(x) for x in r))\nc.commit()\n";
                let mut cmd = Command::new("python3");
                cmd.arg("-c")
                    .arg(script)
                    .arg(self.data.join("cairn.db"))
                    .arg(statements);
                run(cmd, Duration::from_secs(60))?.ok()?
            }
        };
        Ok(out.stdout)
    }

    /// `(bucket, prefix)` of an object-store collector.
    fn s3_location(&self) -> Option<(String, String)> {
        let url = self.env_var("CAIRN_BLOBS")?;
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Some((bucket.to_string(), prefix))
    }

    /// One SigV4 request to the collector's object store with curl; (status, body).
    fn s3_curl(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>)> {
        let need = |k: &str| {
            self.env_var(k)
                .ok_or_else(|| anyhow!("the collector has no {k}"))
        };
        let endpoint = need("AWS_ENDPOINT_URL")?;
        let region = need("AWS_REGION")?;
        let user = format!(
            "{}:{}",
            need("AWS_ACCESS_KEY_ID")?,
            need("AWS_SECRET_ACCESS_KEY")?
        );
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("body");
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-X", method, "--aws-sigv4"])
            .arg(format!("aws:amz:{region}:s3"))
            .arg("--user")
            .arg(user)
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-o"])
            .arg(&out)
            .args(["-w", "%{http_code}"]);
        if let Some(b) = body {
            let input = tmp.path().join("input");
            std::fs::write(&input, b)?;
            cmd.arg("--data-binary")
                .arg(format!("@{}", input.display()));
        }
        cmd.arg(format!("{endpoint}{path_and_query}"));
        let o = run(cmd, Duration::from_secs(60))?.ok()?;
        let status: u16 = o.stdout.trim().parse().context("curl's status code")?;
        Ok((status, std::fs::read(&out).unwrap_or_default()))
    }

    fn chunk_path(&self, sha: &str) -> PathBuf {
        self.data.join("chunks").join(&sha[..2]).join(sha)
    }

    /// The stored bytes of a chunk, as the blob store holds them.
    pub fn read_stored_chunk(&self, sha: &str) -> Result<Vec<u8>> {
        match self.s3_location() {
            Some((bucket, prefix)) => {
                let (status, body) = self.s3_curl(
                    "GET",
                    &format!("/{bucket}/{prefix}chunks/{}/{sha}", &sha[..2]),
                    None,
                )?;
                if status != 200 {
                    bail!("GET chunk {sha}: HTTP {status}");
                }
                Ok(body)
            }
            None => std::fs::read(self.chunk_path(sha))
                .with_context(|| format!("reading {}", self.chunk_path(sha).display())),
        }
    }

    /// Replace a stored chunk's bytes behind the collector's back.
    pub fn write_stored_chunk(&self, sha: &str, bytes: &[u8]) -> Result<()> {
        match self.s3_location() {
            Some((bucket, prefix)) => {
                let (status, _) = self.s3_curl(
                    "PUT",
                    &format!("/{bucket}/{prefix}chunks/{}/{sha}", &sha[..2]),
                    Some(bytes),
                )?;
                if status != 200 {
                    bail!("PUT chunk {sha}: HTTP {status}");
                }
                Ok(())
            }
            None => Ok(std::fs::write(self.chunk_path(sha), bytes)?),
        }
    }

    /// Remove every published custody head (the head log, or the heads in the bucket), as
    /// root or the bucket's owner could. The collector should be stopped.
    pub fn remove_heads(&self) -> Result<()> {
        match self.s3_location() {
            Some((bucket, prefix)) => {
                // SigV4 signs the query as encoded: the prefix's slashes go as %2F.
                let q = format!(
                    "/{bucket}?list-type=2&prefix={}",
                    format!("{prefix}custody-heads/").replace('/', "%2F")
                );
                let (status, body) = self.s3_curl("GET", &q, None)?;
                if status != 200 {
                    bail!("listing the heads: HTTP {status}");
                }
                let text = String::from_utf8_lossy(&body).into_owned();
                let keys: Vec<&str> = text
                    .split("<Key>")
                    .skip(1)
                    .filter_map(|s| s.split("</Key>").next())
                    .collect();
                if keys.is_empty() {
                    bail!("no custody heads in the bucket to remove");
                }
                for k in keys {
                    let (status, _) = self.s3_curl("DELETE", &format!("/{bucket}/{k}"), None)?;
                    if status != 204 && status != 200 {
                        bail!("DELETE {k}: HTTP {status}");
                    }
                }
                Ok(())
            }
            None => {
                let heads = self.data.join("custody-heads.jsonl");
                let mut chattr = Command::new("chattr");
                chattr.arg("-a").arg(&heads);
                let _ = run(chattr, Duration::from_secs(10));
                Ok(std::fs::remove_file(&heads)?)
            }
        }
    }
}
