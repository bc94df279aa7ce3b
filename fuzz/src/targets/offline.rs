//! Offline collection directories, as `cairn import DIR` reads them and the collector replays
//! them: `collection.json`, `items/ID.manifest.json`, `items/ID.cairn`. Each input is a whole
//! directory packed as `MAGIC name\n content` sections ([`pack`], [`unpack`]), imported into a
//! fresh collector data directory (on tmpfs) through the real `Collections` and
//! `api::import::import_stream`; a collection that imported must then verify intact.

use super::{mix, shape_of, Target, MIB};
use cairn_collector::api::import::import_stream;
use cairn_collector::datadir::DataDir;
use cairn_collector::state::State;
use cairn_protocol::manifest::{CollectionRecord, ItemManifest};
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Starts each file of a packed directory; unlikely inside JSON or frames.
pub const MAGIC: &[u8] = b"\n\x00cairn-fuzz-file ";

/// A directory's files (name relative to the directory → bytes) as one input.
pub fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(data);
    }
    out
}

/// The files of a packed directory; bytes before the first section are ignored.
pub fn unpack(data: &[u8]) -> BTreeMap<String, &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(p) = find(&data[i..], MAGIC) {
        starts.push(i + p);
        i += p + MAGIC.len();
    }
    let mut files = BTreeMap::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(data.len());
        let section = &data[s + MAGIC.len()..end];
        let nl = section
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(section.len());
        let name = String::from_utf8_lossy(&section[..nl]).into_owned();
        files.insert(name, section.get(nl + 1..).unwrap_or_default());
    }
    files
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A data directory made once per process (keys, CA, an empty database), copied for each
/// input: `init` costs key generation, a copy costs a few files on tmpfs.
fn template() -> Option<&'static Path> {
    static T: OnceLock<Option<PathBuf>> = OnceLock::new();
    T.get_or_init(|| {
        let dir = scratch_root().join("template");
        let _ = std::fs::remove_dir_all(&dir);
        DataDir::new(&dir)
            .init(&[], &Default::default())
            .ok()
            .map(|_| dir)
    })
    .as_deref()
}

/// Under /dev/shm when there is one: the collector fsyncs what it stores.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("cairn-fuzz-{}", std::process::id()))
}

fn private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
}

/// Copy a data directory, private as the collector requires (whatever this process's umask).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    private_dir(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// A fresh collector for one input, removed when dropped.
struct Fresh {
    dir: PathBuf,
    state: Arc<State>,
}

impl Fresh {
    fn new() -> Option<Fresh> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = scratch_root().join(format!("run-{}", N.fetch_add(1, Ordering::Relaxed)));
        copy_dir(template()?, &dir).ok()?;
        let state = cairn_collector::server::load_state(
            &DataDir::new(&dir),
            &Default::default(),
            false,
            false,
        )
        .ok()?;
        Some(Fresh { dir, state })
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Remove this process's scratch directories.
pub fn clean_up() {
    let _ = std::fs::remove_dir_all(scratch_root());
}

const ACTOR: &str = "token:fuzz";

fn import(data: &[u8]) -> u64 {
    let files = unpack(data);
    let Some(rec_bytes) = files.get("collection.json") else {
        return crate::engine::shape("no collection.json");
    };
    // What `cairn import` reads, then what the collector reads of the same bytes.
    let cli: Result<CollectionRecord, _> = std::str::from_utf8(rec_bytes)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(t).map_err(|e| e.to_string()));
    let Ok(rec) = cli else {
        return shape_of(&cli, |_| String::new());
    };
    let Some(fresh) = Fresh::new() else {
        return crate::engine::shape("no scratch collector");
    };
    let collections = &fresh.state.collections;
    let started = collections.import(&rec, ACTOR);
    let mut shape = shape_of(&started, |(_, resumed)| format!("{resumed}"));
    let Ok((host_id, _)) = started else {
        return shape;
    };
    let cid = rec.request.collection_id.clone();
    let mut errors = rec.errors.clone();
    for item in rec.items.iter().take(16) {
        let side: Option<ItemManifest> = files
            .get(&format!("items/{item}.manifest.json"))
            .and_then(|b| serde_json::from_slice(b).ok());
        let Some(side) = side else {
            errors.push(format!("item {item}: no manifest"));
            continue;
        };
        if side.header.item_id != *item || side.header.collection_id != cid {
            errors.push(format!("item {item}: another item's manifest"));
            continue;
        }
        let Some(stream) = files.get(&format!("items/{item}.cairn")) else {
            errors.push(format!("item {item}: no stream"));
            continue;
        };
        let r = collections
            .importing(&cid)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                import_stream(collections, &cid, item, ACTOR, *stream).map_err(|e| e.to_string())
            });
        shape = mix(shape, shape_of(&r, |v| format!("{}", v["already_sealed"])));
        match r {
            Ok(v) if v["sha256"].as_str() == Some(side.sha256.as_str()) => {}
            Ok(_) => errors.push(format!("item {item}: seals differently")),
            Err(e) => errors.push(format!("item {item}: {e}")),
        }
    }
    let finished = collections.finish(&host_id, &cid, &rec.items, &errors);
    shape = mix(shape, shape_of(&finished, |_| String::new()));
    if finished.is_ok() {
        // Whatever was imported, sealed or not, its custody must check out.
        let report = collections.verify(&cid, ACTOR);
        assert!(
            matches!(&report, Ok(r) if r.ok),
            "collection {cid} imported but does not verify: {report:?}"
        );
        let status = collections.get(&cid).map(|c| c.status.as_str().to_string());
        shape = mix(shape, shape_of(&status, String::clone));
    }
    shape
}

const DICT: &[&[u8]] = &[
    MAGIC,
    b"collection.json\n",
    b"\"items\"",
    b"\"request\"",
    b"\"collection_id\"",
    b"\"status\"",
    b"\"sealed\"",
    b"\"errors\"",
    b"\"item_begin\"",
    b"\"item_end\"",
    b"\"item_id\"",
    b"\"chunk_count\"",
    b"\"raw_len\"",
    b"\"chunk_size\"",
    b"\"sha256\"",
    b"\"mtime\"",
    b"\"2262-04-11T23:47:16.854775807Z\"",
    b"\"path\"",
    b"\"/var/log/auth.log\"",
    b"\"/home/alice/.bash_history\"",
    b"\"kind\"",
    b"\"file\"",
    b"\"event_journal\"",
    b"\"volatile_artifact\"",
    b"\"processes.json\"",
];

pub fn targets() -> Vec<Target> {
    vec![Target {
        name: "offline_import",
        about: "an offline collection directory through cairn import's reads and the collector's import (Collections::import, api::import::import_stream, finish), then custody verify",
        max_len: 128 * 1024,
        timeout: Duration::from_secs(20),
        alloc_floor: 64 * MIB,
        alloc_per_byte: 512,
        dict: DICT,
        run: import,
    }]
}
