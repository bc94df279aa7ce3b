//! Volatile state: what is lost when the host is stopped or the attacker cleans up.
//!
//! A collection reads this first, before memory and disks, because it changes by the second:
//! processes, sockets, kernel modules, mounts, logged-in users. Each topic becomes one
//! self-describing JSON [`Artifact`] with the time it was read and every error met; a failure
//! to read one thing never stops the others.
//!
//! Everything here is read-only: files under `/proc` and `/sys` and a few under `/etc` and
//! `/run`. Nothing is written, no process is stopped, `/proc/PID/mem` is never read.

mod host;
mod kernel;
mod mounts;
mod network;
mod processes;
mod users;

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::capture::Artifact;
use crate::identity::MetadataConfig;

pub use processes::SocketOwner;
pub use users::{parse_utmp, UtmpParse, UtmpRecord};

/// Where and how much to read.
#[derive(Debug, Clone)]
pub struct VolatileOptions {
    /// procfs mount: `/proc`, or the host's procfs when the agent runs in a container.
    pub proc_root: PathBuf,
    /// sysfs mount: `/sys`.
    pub sys_root: PathBuf,
    /// The host's root file system, for `/etc` and `/run`: `/`, or `/host` in a container.
    pub host_root: PathBuf,
    /// Hash every distinct executable (SHA-256, read through `/proc/PID/exe`).
    pub hash_executables: bool,
    /// Cap on the environment kept per process; longer ones are cut and flagged.
    pub max_environ_bytes: usize,
    /// Whether and where to ask the cloud metadata service who this host is.
    pub metadata: MetadataConfig,
    /// What is isolated or frozen on the host now, for `network.json` (`isolation`): given by
    /// the running agent, which keeps that state.
    pub isolation: Option<IsolationState>,
}

/// Says what containment is in force, as JSON (a closure: the state lives above capture).
#[derive(Clone)]
pub struct IsolationState(pub std::sync::Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for IsolationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IsolationState")
    }
}

impl Default for VolatileOptions {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            host_root: PathBuf::from("/"),
            hash_executables: true,
            max_environ_bytes: 32 * 1024,
            metadata: MetadataConfig::default(),
            isolation: None,
        }
    }
}

/// Read every volatile topic and return one JSON artifact per topic:
/// `host.json`, `processes.json`, `network.json`, `kernel.json`, `mounts.json`, `users.json`.
///
/// Never fails as a whole: what could not be read is listed in each document's `errors`.
pub fn collect(opts: &VolatileOptions) -> Vec<Artifact> {
    let docs = Documents::new(opts.clone());
    DOCUMENTS.iter().filter_map(|n| docs.produce(n)).collect()
}

/// The volatile documents, in the order a collection sends them.
pub const DOCUMENTS: [&str; 6] = [
    "host.json",
    "processes.json",
    "network.json",
    "kernel.json",
    "mounts.json",
    "users.json",
];

/// The volatile documents, each read when its item is produced: the first (host.json, a few
/// milliseconds) is on its way to the collector while the rest are read. Processes and
/// network share one pass (the processes' fd tables tell who owns each socket).
pub struct Documents {
    opts: VolatileOptions,
    /// network.json, read with processes.json and waiting for its turn.
    network: std::sync::Mutex<Option<Artifact>>,
}

impl Documents {
    pub fn new(opts: VolatileOptions) -> Documents {
        Documents {
            opts,
            network: std::sync::Mutex::new(None),
        }
    }

    /// One document of [`DOCUMENTS`] (`None` for another name).
    pub fn produce(&self, name: &str) -> Option<Artifact> {
        let opts = &self.opts;
        let mut network = self.network.lock().unwrap_or_else(|p| p.into_inner());
        Some(match name {
            "host.json" => host::collect(opts),
            "processes.json" => {
                let procs = processes::collect(opts);
                *network = Some(network::collect(
                    opts,
                    &procs.socket_owners,
                    &procs.net_namespaces,
                ));
                procs.artifact
            }
            "network.json" => match network.take() {
                Some(n) => n,
                None => {
                    let procs = processes::collect(opts);
                    network::collect(opts, &procs.socket_owners, &procs.net_namespaces)
                }
            },
            "kernel.json" => kernel::collect(opts),
            "mounts.json" => mounts::collect(opts),
            "users.json" => users::collect(opts),
            _ => return None,
        })
    }
}

/// One thing that could not be read, as it appears in a document's `errors` array.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorEntry {
    what: String,
    error: String,
}

/// Errors met while building one document.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ErrorEntry>);

impl Errors {
    pub(crate) fn push(&mut self, what: impl Into<String>, error: impl ToString) {
        self.0.push(ErrorEntry {
            what: what.into(),
            error: error.to_string(),
        });
    }
}

/// True when an error means the file is not there (a process exited, a feature is absent).
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// A small text file, trailing newline removed.
pub(crate) fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim_end().to_string())
}

/// The first `n` whitespace-separated fields of a line and the rest after them (leading
/// blanks removed): for `/proc` tables whose last column is a path that may hold spaces.
pub(crate) fn split_fields(line: &str, n: usize) -> (Vec<&str>, &str) {
    let mut fields = Vec::with_capacity(n);
    let mut rest = line;
    while fields.len() < n {
        let t = rest.trim_start();
        if t.is_empty() {
            break;
        }
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        fields.push(&t[..end]);
        rest = &t[end..];
    }
    (fields, rest.trim_start())
}

/// `root` joined with an absolute path such as `/etc/timezone`.
pub(crate) fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Build the artifact from a document body: adds `collected_at` and `errors`.
pub(crate) fn artifact(
    name: &str,
    collected_at: String,
    mut body: Map<String, Value>,
    errors: Errors,
    pretty: bool,
) -> Artifact {
    let texts: Vec<String> = errors
        .0
        .iter()
        .map(|e| format!("{name}: {}: {}", e.what, e.error))
        .collect();
    body.insert("collected_at".into(), Value::String(collected_at));
    body.insert(
        "errors".into(),
        serde_json::to_value(&errors.0).unwrap_or(Value::Array(Vec::new())),
    );
    let doc = Value::Object(body);
    let mut errs = texts;
    let bytes = if pretty {
        serde_json::to_vec_pretty(&doc)
    } else {
        serde_json::to_vec(&doc)
    }
    .unwrap_or_else(|e| {
        errs.push(format!("{name}: could not serialise the document: {e}"));
        b"{}".to_vec()
    });
    Artifact {
        name: name.to_string(),
        media_type: "application/json".to_string(),
        bytes,
        errors: errs,
    }
}

/// Insert a serialisable value into a document body; a value that cannot be turned into JSON
/// (never expected) becomes `null` and an error.
pub(crate) fn put<T: Serialize>(
    body: &mut Map<String, Value>,
    errors: &mut Errors,
    key: &str,
    value: T,
) {
    match serde_json::to_value(value) {
        Ok(v) => {
            body.insert(key.to_string(), v);
        }
        Err(e) => {
            errors.push(format!("serialise {key}"), e);
            body.insert(key.to_string(), Value::Null);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Every artifact parses as JSON with `collected_at` and `errors`.
    #[test]
    fn collect_returns_every_topic_as_json() {
        let arts = collect(&VolatileOptions::default());
        let names: Vec<&str> = arts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "host.json",
                "processes.json",
                "network.json",
                "kernel.json",
                "mounts.json",
                "users.json"
            ]
        );
        for a in &arts {
            assert_eq!(a.media_type, "application/json");
            let v: Value = serde_json::from_slice(&a.bytes).unwrap();
            assert!(
                v["collected_at"].as_str().unwrap().ends_with('Z'),
                "{}",
                a.name
            );
            assert!(v["errors"].is_array(), "{}", a.name);
        }
    }
}
