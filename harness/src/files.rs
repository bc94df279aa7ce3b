//! Files: hashes, random contents, working directories.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};

use crate::run;

/// SHA-256 of a file, hex (the protocol crate's reader hash, as the agent computes it).
pub fn sha256_file(path: &Path) -> Result<String> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    cairn_protocol::sha256_reader(f).with_context(|| format!("cannot read {}", path.display()))
}

pub fn sha256_bytes(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// SHA-256 of a file as the real coreutils `sha256sum` binary reports it.
pub fn sha256sum_cli(path: &Path) -> Result<String> {
    let mut cmd = Command::new("sha256sum");
    cmd.arg(path);
    let out = run(cmd, Duration::from_secs(300))?.ok()?;
    out.stdout
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("sha256sum printed nothing for {}", path.display()))
}

/// Writes `len` bytes of fast pseudo-random (incompressible) data to `path`; returns its SHA-256.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> Result<String> {
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut h = Sha256::new();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = usize::try_from(left.min(buf.len() as u64))?;
        f.write_all(&buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(hex::encode(h.finalize()))
}

/// A fresh temporary working directory for one test (kept if `CAIRN_E2E_KEEP` is set).
pub fn workdir(test: &str) -> Result<tempfile::TempDir> {
    let prefix = format!("cairn-e2e-{test}-");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    b.disable_cleanup(std::env::var_os("CAIRN_E2E_KEEP").is_some());
    let dir = b.tempdir()?;
    Ok(dir)
}

/// The cgroup v2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host).
pub fn cgroup2_root() -> Result<std::path::PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .find(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, r)| r.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4).map(std::path::PathBuf::from))
        .ok_or_else(|| anyhow!("no cgroup2 mount in /proc/self/mountinfo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_file_hash_matches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        let want = write_random_file(&p, (1 << 20) + 13, 7).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), want);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), (1 << 20) + 13);
        assert_eq!(sha256_bytes(&std::fs::read(&p).unwrap()), want);
        assert_ne!(write_random_file(&p, 64, 8).unwrap(), want);
    }
}
