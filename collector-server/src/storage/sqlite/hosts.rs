use super::{enum_col, now, sha, Sqlite};
use crate::storage::hosts::{HostOrigin, HostRow, HostStore};
use crate::storage::{from_json, to_json, Result};
use cairn_protocol::manifest::HostIdentity;
use cairn_protocol::wire::AgentStatus;
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS hosts (
    id TEXT PRIMARY KEY, hostname TEXT NOT NULL, machine_id TEXT, instance_id TEXT, kernel TEXT,
    agent_version TEXT, identity_json TEXT, cert_sha256 TEXT UNIQUE, enrolled_at TEXT NOT NULL,
    last_seen TEXT, origin TEXT NOT NULL, status_json TEXT);
"#;

const HOST_COLS: &str =
    "id, hostname, machine_id, instance_id, kernel, agent_version, enrolled_at, last_seen, origin, status_json, readiness, readiness_since, readiness_at, retired_at, retired_reason, identity_json";

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
        origin: enum_col(r, 8, HostOrigin::parse)?,
        status: from_json(r.get(9)?),
        readiness: r.get(10)?,
        readiness_since: r.get(11)?,
        readiness_at: r.get(12)?,
        retired_at: r.get(13)?,
        retired_reason: r.get(14)?,
        identity: from_json(r.get(15)?),
    })
}

impl HostStore for Sqlite {
    fn insert_enrolled_host(&self, id: &str, hostname: &str, cert_sha256: &str) -> Result<()> {
        self.lock().execute(
            "INSERT INTO hosts(id, hostname, cert_sha256, enrolled_at, origin) VALUES (?1, ?2, ?3, ?4, 'enrolled')",
            params![id, hostname, cert_sha256, now()],
        )?;
        Ok(())
    }

    fn host_id_by_cert(&self, cert_sha256: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id FROM hosts WHERE cert_sha256 = ?1",
                params![cert_sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn enrolled_host_of_machine(
        &self,
        machine_id: &str,
        instance_id: Option<&str>,
    ) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id FROM hosts WHERE machine_id = ?1 AND origin = 'enrolled' AND retired_at IS NULL
                 AND (instance_id IS NULL OR ?2 IS NULL OR instance_id = ?2)
                 ORDER BY instance_id IS ?2 DESC, last_seen IS NULL, last_seen DESC, enrolled_at DESC LIMIT 1",
                params![machine_id, instance_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn reenroll_host(&self, id: &str, hostname: &str, cert_sha256: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE hosts SET hostname = ?2, cert_sha256 = ?3 WHERE id = ?1",
            params![id, hostname, cert_sha256],
        )?;
        Ok(())
    }

    fn set_enrolled_identity(&self, id: &str, host: &HostIdentity) -> Result<()> {
        self.lock().execute(
            "UPDATE hosts SET machine_id = ?2, instance_id = COALESCE(?3, instance_id) WHERE id = ?1",
            params![id, host.machine_id, host.instance_id()],
        )?;
        Ok(())
    }

    fn update_host_identity(
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
                to_json("host identity", host)?,
                now()
            ],
        )?;
        Ok(())
    }

    fn set_host_status(&self, id: &str, status: &AgentStatus) -> Result<()> {
        self.lock().execute(
            "UPDATE hosts SET status_json = ?2, last_seen = ?3 WHERE id = ?1",
            params![id, to_json("agent status", status)?, now()],
        )?;
        Ok(())
    }

    fn touch_host(&self, id: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE hosts SET last_seen = ?2 WHERE id = ?1",
            params![id, now()],
        )?;
        Ok(())
    }

    fn upsert_import_host(&self, host: &HostIdentity) -> Result<String> {
        // An offline collection from a known host belongs to that host: the same machine id
        // (enrolled hosts first), else the one host of that name whose machine id cannot
        // tell them apart (one side does not know it).
        let conn = self.lock();
        if let Some(mid) = &host.machine_id {
            let existing: Option<String> = conn
                .query_row(
                    "SELECT id FROM hosts WHERE machine_id = ?1 AND retired_at IS NULL
                     ORDER BY origin = 'enrolled' DESC, enrolled_at LIMIT 1",
                    params![mid],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
        }
        let mut by_name = conn.prepare(
            "SELECT id FROM hosts WHERE hostname = ?1 AND retired_at IS NULL
             AND (machine_id IS NULL OR ?2 IS NULL) LIMIT 2",
        )?;
        let named = by_name
            .query_map(params![host.hostname, host.machine_id], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        drop(by_name);
        if let [one] = named.as_slice() {
            return Ok(one.clone());
        }
        drop(conn);
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
                to_json("host identity", host)?,
                now()
            ],
        )?;
        Ok(id)
    }

    fn list_hosts(&self) -> Result<Vec<HostRow>> {
        self.rows(
            &format!("SELECT {HOST_COLS} FROM hosts ORDER BY hostname, id"),
            [],
            host_from_row,
        )
    }

    fn find_hosts(&self, query: &str) -> Result<Vec<HostRow>> {
        self.rows(
            &format!(
                "SELECT {HOST_COLS} FROM hosts WHERE (id = ?1 OR hostname = ?1 OR instance_id = ?1 OR machine_id = ?1)
                 AND (retired_at IS NULL OR id = ?1) ORDER BY last_seen DESC"
            ),
            params![query],
            host_from_row,
        )
    }

    fn get_host(&self, id: &str) -> Result<Option<HostRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {HOST_COLS} FROM hosts WHERE id = ?1"),
                params![id],
                host_from_row,
            )
            .optional()?)
    }

    fn hosts_with_id_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<HostRow>> {
        let escaped = crate::storage::timeline_sql::like_escape(prefix);
        self.rows(
            &format!(
                "SELECT {HOST_COLS} FROM hosts WHERE id LIKE ?1 ESCAPE '\\' AND retired_at IS NULL ORDER BY id LIMIT ?2"
            ),
            params![format!("{escaped}%"), limit],
            host_from_row,
        )
    }

    fn retire_host(&self, id: &str, reason: &str) -> Result<bool> {
        let n = self.lock().execute(
            "UPDATE hosts SET retired_at = ?2, retired_reason = ?3, cert_sha256 = NULL WHERE id = ?1 AND retired_at IS NULL",
            params![id, now(), reason],
        )?;
        Ok(n == 1)
    }
}
