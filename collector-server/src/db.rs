//! SQLite metadata: hosts, tokens, collections, items, chunks and custody records.
//!
//! One connection behind a mutex: every statement is short, and SQLite serialises writers
//! anyway. WAL mode lets `cairn-collector token create` run beside a serving collector.
//! Secrets (API and enrollment tokens) are stored as SHA-256 only.

use anyhow::{Context, Result};
use cairn_protocol::custody::CustodyRecord;
use cairn_protocol::manifest::{CollectRequest, HostIdentity, ItemHeader, ItemManifest};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

mod readiness;
pub use readiness::READINESS_SCHEMA;

pub struct Db {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Request collections and read results; no imports, no tokens.
    Analyst,
    /// Start collections only (detection systems).
    Trigger,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Trigger => "trigger",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "analyst" => Some(Role::Analyst),
            "trigger" => Some(Role::Trigger),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    pub id: String,
    pub hostname: String,
    pub machine_id: Option<String>,
    pub instance_id: Option<String>,
    pub kernel: Option<String>,
    pub agent_version: Option<String>,
    pub enrolled_at: String,
    pub last_seen: Option<String>,
    pub origin: String,
    /// The agent's last reported status (sensor mode, events lost).
    pub status: Option<serde_json::Value>,
    /// The last self-test's verdict (pass, warn, fail), since when it has been that, and when
    /// the last report arrived.
    pub readiness: Option<String>,
    pub readiness_since: Option<String>,
    pub readiness_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectionRow {
    pub id: String,
    pub host_id: String,
    pub profile: String,
    pub reason: String,
    pub requested_by: String,
    pub status: String,
    pub requested_at: String,
    pub finished_at: Option<String>,
    pub errors: Vec<String>,
    pub origin: String,
    #[serde(skip)]
    pub request: Option<CollectRequest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemRow {
    pub id: String,
    pub collection_id: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub raw_len: Option<u64>,
    pub sha256: Option<String>,
    pub chunk_count: Option<u64>,
    pub chunks_received: u64,
    pub duplicate_chunks: u64,
    pub started_at: String,
    pub sealed_at: Option<String>,
    pub error: Option<String>,
    #[serde(skip)]
    pub header: Option<ItemHeader>,
    #[serde(skip)]
    pub manifest: Option<ItemManifest>,
}

#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub index: u64,
    pub sha256: String,
    pub raw_len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    #[error("enrollment token is not known to this collector")]
    Unknown,
    #[error("enrollment token expired at {0}")]
    Expired(String),
    #[error("enrollment token has been used {0} of {0} times")]
    Exhausted(u32),
}

/// `(table, column, type)` added since the table first shipped.
const MIGRATIONS: &[(&str, &str, &str)] = &[
    ("hosts", "status_json", "TEXT"),
    ("hosts", "readiness", "TEXT"),
    ("hosts", "readiness_since", "TEXT"),
    ("hosts", "readiness_at", "TEXT"),
];

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS api_tokens (
    token_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS enroll_tokens (
    token_sha256 TEXT PRIMARY KEY, label TEXT, created_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL, max_uses INTEGER NOT NULL, uses INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS hosts (
    id TEXT PRIMARY KEY, hostname TEXT NOT NULL, machine_id TEXT, instance_id TEXT, kernel TEXT,
    agent_version TEXT, identity_json TEXT, cert_sha256 TEXT UNIQUE, enrolled_at TEXT NOT NULL,
    last_seen TEXT, origin TEXT NOT NULL, status_json TEXT);
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY, host_id TEXT NOT NULL REFERENCES hosts(id), profile TEXT NOT NULL,
    reason TEXT NOT NULL, requested_by TEXT NOT NULL, request_json TEXT NOT NULL,
    status TEXT NOT NULL, requested_at TEXT NOT NULL, finished_at TEXT,
    errors_json TEXT NOT NULL DEFAULT '[]', origin TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS collections_host ON collections(host_id, status);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, collection_id TEXT NOT NULL REFERENCES collections(id), name TEXT NOT NULL,
    kind TEXT NOT NULL, header_json TEXT NOT NULL, manifest_json TEXT, status TEXT NOT NULL,
    raw_len INTEGER, sha256 TEXT, chunk_count INTEGER,
    chunks_received INTEGER NOT NULL DEFAULT 0, duplicate_chunks INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL, sealed_at TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS items_collection ON items(collection_id);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY, codec TEXT NOT NULL, stored_len INTEGER NOT NULL, raw_len INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS item_chunks (
    item_id TEXT NOT NULL REFERENCES items(id), idx INTEGER NOT NULL, sha256 TEXT NOT NULL,
    raw_len INTEGER NOT NULL, PRIMARY KEY (item_id, idx));
CREATE TABLE IF NOT EXISTS events (
    host_id TEXT NOT NULL, time_ns INTEGER NOT NULL, kind TEXT NOT NULL, pid INTEGER, ppid INTEGER,
    uid INTEGER, comm TEXT, exe TEXT, container_id TEXT, source TEXT, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_host_time ON events(host_id, time_ns);
CREATE TABLE IF NOT EXISTS timeline_hosts (n INTEGER PRIMARY KEY, host_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS timeline (
    id INTEGER PRIMARY KEY, host INTEGER NOT NULL, time_ns INTEGER NOT NULL,
    source TEXT NOT NULL, kind TEXT NOT NULL, pid INTEGER, ppid INTEGER, exe TEXT, argv TEXT, user TEXT,
    container TEXT, pod TEXT, message TEXT NOT NULL, attrs TEXT, path TEXT, item_id TEXT, dedup INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS timeline_host_time ON timeline(host, time_ns, dedup);
CREATE INDEX IF NOT EXISTS timeline_time ON timeline(time_ns);
CREATE INDEX IF NOT EXISTS timeline_kind_time ON timeline(kind, time_ns);
CREATE TABLE IF NOT EXISTS timeline_items (
    item_id TEXT PRIMARY KEY, host_id TEXT NOT NULL, parser TEXT NOT NULL, events INTEGER NOT NULL,
    unparsed INTEGER NOT NULL, error TEXT, built_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS saved_searches (
    name TEXT PRIMARY KEY, query_json TEXT NOT NULL, created_by TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS custody (
    collection_id TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
    signature TEXT NOT NULL, PRIMARY KEY (collection_id, seq));
"#;

fn sha(s: &str) -> String {
    cairn_protocol::sha256_hex(s.as_bytes())
}

fn now() -> String {
    cairn_protocol::now_rfc3339()
}

fn json_col<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

impl Db {
    pub fn create(path: &Path) -> Result<Db> {
        let db = Self::open_conn(path)?;
        db.lock()
            .execute_batch(SCHEMA)
            .context("creating the schema")?;
        db.lock()
            .execute_batch(READINESS_SCHEMA)
            .context("creating the readiness tables")?;
        db.migrate()?;
        Ok(db)
    }

    /// Columns added after a table first shipped: added to older databases on open.
    fn migrate(&self) -> Result<()> {
        let conn = self.lock();
        for (table, column, ty) in MIGRATIONS {
            let exists = conn
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
                ))?
                .exists(params![column])?;
            if !exists {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
            }
        }
        Ok(())
    }

    pub fn open(path: &Path) -> Result<Db> {
        Self::create(path)
    }

    fn open_conn(path: &Path) -> Result<Db> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL + NORMAL: a committed row survives the process being killed (the WAL is in the OS
        // page cache); chunk payloads themselves are fsynced before they are acknowledged.
        conn.execute_batch(
            "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             PRAGMA foreign_keys=ON; PRAGMA cache_size=-262144; PRAGMA wal_autocheckpoint=4096;",
        )?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// Every row of a query, mapped.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let conn = self.lock();
        let mut st = conn.prepare(sql)?;
        let rows = st.query_map(params, map)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: keep serving.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- tokens ----

    pub fn create_api_token(&self, name: &str, role: Role) -> Result<String> {
        let secret = crate::random_secret("cairn_api_", 24);
        self.lock().execute(
            "INSERT INTO api_tokens(token_sha256, name, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![sha(&secret), name, role.as_str(), now()],
        )?;
        Ok(secret)
    }

    /// `(name, role)` of a valid API token.
    pub fn check_api_token(&self, secret: &str) -> Result<Option<(String, Role)>> {
        let row: Option<(String, String)> = self
            .lock()
            .query_row(
                "SELECT name, role FROM api_tokens WHERE token_sha256 = ?1",
                params![sha(secret)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(n, r)| Role::parse(&r).map(|r| (n, r))))
    }

    /// A new enrollment token: `(secret, expires_at unix)`.
    pub fn create_enroll_token(
        &self,
        uses: u32,
        ttl_secs: i64,
        label: &str,
    ) -> Result<(String, i64)> {
        let secret = crate::random_secret("cairn_et_", 24);
        let expires = crate::unix_now() + ttl_secs;
        self.lock().execute(
            "INSERT INTO enroll_tokens(token_sha256, label, created_at, expires_at, max_uses) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sha(&secret), label, now(), expires, uses],
        )?;
        Ok((secret, expires))
    }

    /// Use an enrollment token once, atomically.
    pub fn consume_enroll_token(&self, secret: &str) -> Result<Result<(), EnrollRefusal>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let row: Option<(i64, u32, u32)> = tx
            .query_row(
                "SELECT expires_at, max_uses, uses FROM enroll_tokens WHERE token_sha256 = ?1",
                params![sha(secret)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let verdict = match row {
            None => Err(EnrollRefusal::Unknown),
            Some((exp, _, _)) if exp <= crate::unix_now() => {
                Err(EnrollRefusal::Expired(crate::datadir::rfc3339(exp)))
            }
            Some((_, max, uses)) if uses >= max => Err(EnrollRefusal::Exhausted(max)),
            Some(_) => {
                tx.execute(
                    "UPDATE enroll_tokens SET uses = uses + 1 WHERE token_sha256 = ?1",
                    params![sha(secret)],
                )?;
                Ok(())
            }
        };
        tx.commit()?;
        Ok(verdict)
    }

    // ---- hosts ----

    pub fn insert_enrolled_host(&self, id: &str, hostname: &str, cert_sha256: &str) -> Result<()> {
        self.lock().execute(
            "INSERT INTO hosts(id, hostname, cert_sha256, enrolled_at, origin) VALUES (?1, ?2, ?3, ?4, 'enrolled')",
            params![id, hostname, cert_sha256, now()],
        )?;
        Ok(())
    }

    pub fn host_id_by_cert(&self, cert_sha256: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id FROM hosts WHERE cert_sha256 = ?1",
                params![cert_sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn update_host_identity(
        &self,
        id: &str,
        host: &HostIdentity,
        agent_version: &str,
    ) -> Result<()> {
        self.lock().execute(
            "UPDATE hosts SET hostname = ?2, machine_id = ?3, instance_id = ?4, kernel = ?5, agent_version = ?6,
             identity_json = ?7, last_seen = ?8 WHERE id = ?1",
            params![
                id,
                host.hostname,
                host.machine_id,
                host.instance_id(),
                host.kernel_release,
                agent_version,
                serde_json::to_string(host)?,
                now()
            ],
        )?;
        Ok(())
    }

    pub fn set_host_status(
        &self,
        id: &str,
        status: &cairn_protocol::wire::AgentStatus,
    ) -> Result<()> {
        self.lock().execute(
            "UPDATE hosts SET status_json = ?2, last_seen = ?3 WHERE id = ?1",
            params![id, serde_json::to_string(status)?, now()],
        )?;
        Ok(())
    }

    pub fn touch_host(&self, id: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE hosts SET last_seen = ?2 WHERE id = ?1",
            params![id, now()],
        )?;
        Ok(())
    }

    /// The host an offline collection came from, created on first import.
    pub fn upsert_import_host(&self, host: &HostIdentity) -> Result<String> {
        // An offline collection from an enrolled host belongs to that host.
        if let Some(mid) = &host.machine_id {
            let existing: Option<String> = self
                .lock()
                .query_row(
                    "SELECT id FROM hosts WHERE machine_id = ?1 ORDER BY origin = 'enrolled' DESC, enrolled_at LIMIT 1",
                    params![mid],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
        }
        let key = host
            .machine_id
            .clone()
            .unwrap_or_else(|| host.hostname.clone());
        let id = format!(
            "offline-{}",
            &sha(&format!("{key}/{}", host.hostname))[..16]
        );
        self.lock().execute(
            "INSERT INTO hosts(id, hostname, machine_id, instance_id, kernel, identity_json, enrolled_at, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'import') ON CONFLICT(id) DO NOTHING",
            params![
                id,
                host.hostname,
                host.machine_id,
                host.instance_id(),
                host.kernel_release,
                serde_json::to_string(host)?,
                now()
            ],
        )?;
        Ok(id)
    }

    fn host_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HostRow> {
        Ok(HostRow {
            id: r.get(0)?,
            hostname: r.get(1)?,
            machine_id: r.get(2)?,
            instance_id: r.get(3)?,
            kernel: r.get(4)?,
            agent_version: r.get(5)?,
            enrolled_at: r.get(6)?,
            last_seen: r.get(7)?,
            origin: r.get(8)?,
            status: json_col(r.get(9)?),
            readiness: r.get(10)?,
            readiness_since: r.get(11)?,
            readiness_at: r.get(12)?,
        })
    }

    const HOST_COLS: &'static str =
        "id, hostname, machine_id, instance_id, kernel, agent_version, enrolled_at, last_seen, origin, status_json, readiness, readiness_since, readiness_at";

    pub fn list_hosts(&self) -> Result<Vec<HostRow>> {
        self.rows(
            &format!(
                "SELECT {} FROM hosts ORDER BY hostname, id",
                Self::HOST_COLS
            ),
            [],
            Self::host_from_row,
        )
    }

    /// Hosts matching an id, hostname, instance id or machine id.
    pub fn find_hosts(&self, query: &str) -> Result<Vec<HostRow>> {
        self.rows(
            &format!(
                "SELECT {} FROM hosts WHERE id = ?1 OR hostname = ?1 OR instance_id = ?1 OR machine_id = ?1 ORDER BY last_seen DESC",
                Self::HOST_COLS
            ),
            params![query],
            Self::host_from_row,
        )
    }

    pub fn get_host(&self, id: &str) -> Result<Option<HostRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {} FROM hosts WHERE id = ?1", Self::HOST_COLS),
                params![id],
                Self::host_from_row,
            )
            .optional()?)
    }

    // ---- collections ----

    pub fn insert_collection(
        &self,
        host_id: &str,
        req: &CollectRequest,
        status: &str,
        origin: &str,
    ) -> Result<()> {
        self.lock().execute(
            "INSERT INTO collections(id, host_id, profile, reason, requested_by, request_json, status, requested_at, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                req.collection_id,
                host_id,
                req.profile,
                req.reason,
                req.requested_by,
                serde_json::to_string(req)?,
                status,
                now(),
                origin
            ],
        )?;
        Ok(())
    }

    pub fn set_collection_status(
        &self,
        id: &str,
        status: &str,
        errors: Option<&[String]>,
    ) -> Result<()> {
        let finished = matches!(status, "sealed" | "partial" | "failed").then(now);
        let conn = self.lock();
        conn.execute(
            "UPDATE collections SET status = ?2, finished_at = COALESCE(?3, finished_at) WHERE id = ?1",
            params![id, status, finished],
        )?;
        if let Some(e) = errors {
            conn.execute(
                "UPDATE collections SET errors_json = ?2 WHERE id = ?1",
                params![id, serde_json::to_string(e)?],
            )?;
        }
        Ok(())
    }

    pub fn get_collection(&self, id: &str) -> Result<Option<CollectionRow>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, host_id, profile, reason, requested_by, status, requested_at, finished_at, errors_json, origin, request_json
                 FROM collections WHERE id = ?1",
                params![id],
                |r| {
                    Ok(CollectionRow {
                        id: r.get(0)?,
                        host_id: r.get(1)?,
                        profile: r.get(2)?,
                        reason: r.get(3)?,
                        requested_by: r.get(4)?,
                        status: r.get(5)?,
                        requested_at: r.get(6)?,
                        finished_at: r.get(7)?,
                        errors: json_col(r.get(8)?).unwrap_or_default(),
                        origin: r.get(9)?,
                        request: json_col(r.get(10)?),
                    })
                },
            )
            .optional()?)
    }

    /// Requests not yet accepted by the host's agent, oldest first.
    pub fn pending_requests(&self, host_id: &str) -> Result<Vec<CollectRequest>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT request_json FROM collections WHERE host_id = ?1 AND status = 'requested' ORDER BY requested_at",
        )?;
        let rows = st.query_map(params![host_id], |r| r.get::<_, String>(0))?;
        Ok(rows
            .filter_map(|r| r.ok())
            .filter_map(|s| serde_json::from_str(&s).ok())
            .collect())
    }

    pub fn list_collections(
        &self,
        host_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CollectionRow>> {
        let ids: Vec<String> = {
            let conn = self.lock();
            let mut st = conn.prepare(
                "SELECT id FROM collections WHERE (?1 IS NULL OR host_id = ?1) AND origin != 'selftest' ORDER BY requested_at DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![host_id, limit], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = self.get_collection(&id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    // ---- items ----

    /// Register an item when its first stream opens; returns false when it already existed.
    pub fn insert_item(&self, h: &ItemHeader) -> Result<bool> {
        let kind = serde_json::to_value(h.kind)?
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let n = self.lock().execute(
            "INSERT INTO items(id, collection_id, name, kind, header_json, status, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'receiving', ?6) ON CONFLICT(id) DO NOTHING",
            params![
                h.item_id,
                h.collection_id,
                h.source.name,
                kind,
                serde_json::to_string(h)?,
                now()
            ],
        )?;
        Ok(n == 1)
    }

    fn item_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
        Ok(ItemRow {
            id: r.get(0)?,
            collection_id: r.get(1)?,
            name: r.get(2)?,
            kind: r.get(3)?,
            status: r.get(4)?,
            raw_len: r.get(5)?,
            sha256: r.get(6)?,
            chunk_count: r.get(7)?,
            chunks_received: r.get(8)?,
            duplicate_chunks: r.get(9)?,
            started_at: r.get(10)?,
            sealed_at: r.get(11)?,
            error: r.get(12)?,
            header: json_col(r.get(13)?),
            manifest: json_col(r.get(14)?),
        })
    }

    const ITEM_COLS: &'static str =
        "id, collection_id, name, kind, status, raw_len, sha256, chunk_count, chunks_received,
        duplicate_chunks, started_at, sealed_at, error, header_json, manifest_json";

    pub fn get_item(&self, id: &str) -> Result<Option<ItemRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {} FROM items WHERE id = ?1", Self::ITEM_COLS),
                params![id],
                Self::item_from_row,
            )
            .optional()?)
    }

    pub fn items_of_collection(&self, collection_id: &str) -> Result<Vec<ItemRow>> {
        self.rows(
            &format!(
                "SELECT {} FROM items WHERE collection_id = ?1 ORDER BY started_at, name",
                Self::ITEM_COLS
            ),
            params![collection_id],
            Self::item_from_row,
        )
    }

    pub fn item_chunks(&self, item_id: &str) -> Result<Vec<ChunkRow>> {
        self.rows(
            "SELECT idx, sha256, raw_len FROM item_chunks WHERE item_id = ?1 ORDER BY idx",
            params![item_id],
            |r| {
                Ok(ChunkRow {
                    index: r.get(0)?,
                    sha256: r.get(1)?,
                    raw_len: r.get(2)?,
                })
            },
        )
    }

    pub fn blob_codec(&self, sha256: &str) -> Result<Option<(String, u64)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT codec, stored_len FROM blobs WHERE sha256 = ?1",
                params![sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Record a verified, persisted chunk. Returns false when the item already held that index
    /// (counted as a duplicate: the agent sent a chunk the collector had acknowledged).
    pub fn record_chunk(
        &self,
        item_id: &str,
        index: u64,
        sha256: &str,
        raw_len: u64,
        codec: &str,
        stored_len: u64,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO blobs(sha256, codec, stored_len, raw_len) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(sha256) DO NOTHING",
            params![sha256, codec, stored_len, raw_len],
        )?;
        let n = tx.execute(
            "INSERT INTO item_chunks(item_id, idx, sha256, raw_len) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![item_id, index, sha256, raw_len],
        )?;
        if n == 1 {
            tx.execute(
                "UPDATE items SET chunks_received = chunks_received + 1 WHERE id = ?1",
                params![item_id],
            )?;
        } else {
            tx.execute(
                "UPDATE items SET duplicate_chunks = duplicate_chunks + 1 WHERE id = ?1",
                params![item_id],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    pub fn seal_item(&self, m: &ItemManifest) -> Result<()> {
        self.lock().execute(
            "UPDATE items SET status = 'sealed', manifest_json = ?2, raw_len = ?3, sha256 = ?4, chunk_count = ?5,
             sealed_at = ?6, error = ?7 WHERE id = ?1",
            params![
                m.header.item_id,
                serde_json::to_string(m)?,
                m.raw_len,
                m.sha256,
                m.chunk_count,
                now(),
                m.error
            ],
        )?;
        Ok(())
    }

    pub fn reject_item(
        &self,
        id: &str,
        error: &str,
        manifest: Option<&ItemManifest>,
    ) -> Result<()> {
        let mj = manifest.map(serde_json::to_string).transpose()?;
        self.lock().execute(
            "UPDATE items SET status = 'rejected', error = ?2, manifest_json = COALESCE(?3, manifest_json) WHERE id = ?1",
            params![id, error, mj],
        )?;
        Ok(())
    }

    // ---- events ----

    /// Store a batch of live events given as JSON lines; returns how many lines were stored.
    /// An event without a readable `time` is kept with the time it arrived; a line that is not
    /// JSON is kept as text under kind `unparsed` rather than failing the batch. The same
    /// transaction writes the events' timeline rows (see `timeline::ebpf`).
    pub fn insert_events(&self, host_id: &str, jsonl: &str) -> Result<usize> {
        let mut stored = 0;
        let mut timeline = Vec::new();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO events(host_id, time_ns, kind, pid, ppid, uid, comm, exe, container_id, source, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for raw in jsonl.lines().filter(|l| !l.trim().is_empty()) {
                // Stored as sent; parsed only for the indexed fields.
                let e: serde_json::Value = serde_json::from_str(raw)
                    .unwrap_or_else(|_| serde_json::json!({"kind": "unparsed"}));
                stored += 1;
                let arrived = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
                let time_ns = e["time"]
                    .as_str()
                    .and_then(crate::timeline::parse_rfc3339_ns)
                    .unwrap_or(arrived);
                let p = &e["process"];
                st.execute(params![
                    host_id,
                    time_ns,
                    e["kind"].as_str().unwrap_or("unknown"),
                    p["pid"].as_u64(),
                    p["ppid"].as_u64(),
                    p["uid"].as_u64(),
                    p["comm"].as_str(),
                    p["exe"].as_str(),
                    p["container_id"].as_str(),
                    e["source"].as_str(),
                    raw,
                ])?;
                match crate::timeline::ebpf::from_line(raw) {
                    Some(ev) => timeline.push(ev),
                    None => {
                        let mut p = crate::timeline::Parsed::default();
                        p.unparsed(arrived, "ebpf", raw, "not a sensor event with a time");
                        timeline.extend(p.events.into_iter().map(|mut ev| {
                            ev.dedup = crate::timeline::dedup_key(&[b"ebpf", raw.as_bytes()]);
                            ev
                        }));
                    }
                }
            }
        }
        crate::timeline::store::insert_with(&tx, host_id, None, &timeline)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Events of a host in `[from_ns, to_ns]`, oldest first, optionally of one kind.
    pub fn query_events(
        &self,
        host_id: &str,
        from_ns: i64,
        to_ns: i64,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<serde_json::Value>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT json FROM events WHERE host_id = ?1 AND time_ns >= ?2 AND time_ns <= ?3 AND (?4 IS NULL OR kind = ?4)
             ORDER BY time_ns, rowid LIMIT ?5",
        )?;
        let rows = st.query_map(params![host_id, from_ns, to_ns, kind, limit], |r| {
            r.get::<_, String>(0)
        })?;
        Ok(rows
            .filter_map(|r| r.ok())
            .filter_map(|s| serde_json::from_str(&s).ok())
            .collect())
    }

    // ---- custody ----

    pub fn custody_tail(&self, collection_id: &str) -> Result<Option<(u64, String)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT seq, hash FROM custody WHERE collection_id = ?1 ORDER BY seq DESC LIMIT 1",
                params![collection_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Append a record; fails if another writer took the same sequence number.
    pub fn insert_custody(&self, r: &CustodyRecord) -> Result<()> {
        self.lock().execute(
            "INSERT INTO custody(collection_id, seq, time, actor, action, details, prev_hash, hash, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                r.collection_id,
                r.seq,
                r.time,
                r.actor,
                r.action,
                serde_json::to_string(&r.details)?,
                r.prev_hash,
                r.hash,
                r.signature
            ],
        )?;
        Ok(())
    }

    pub fn custody_records(&self, collection_id: &str) -> Result<Vec<CustodyRecord>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT collection_id, seq, time, actor, action, details, prev_hash, hash, signature
             FROM custody WHERE collection_id = ?1 ORDER BY seq",
        )?;
        let rows = st.query_map(params![collection_id], |r| {
            let details: String = r.get(5)?;
            Ok(CustodyRecord {
                collection_id: r.get(0)?,
                seq: r.get(1)?,
                time: r.get(2)?,
                actor: r.get(3)?,
                action: r.get(4)?,
                // An unparsable details column is kept as a string: verification then fails
                // on the hash, naming the record, instead of this query failing.
                details: serde_json::from_str(&details)
                    .unwrap_or(serde_json::Value::String(details)),
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
                signature: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
