use super::{enum_col, get, now, ot, rows, sha, t, Postgres};
use crate::storage::hosts::{HostOrigin, HostRow, HostStore};
use crate::storage::{from_json, to_json, Result};
use cairn_protocol::manifest::HostIdentity;
use cairn_protocol::wire::AgentStatus;
use postgres::Row;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS hosts (
    id TEXT PRIMARY KEY, hostname TEXT NOT NULL, machine_id TEXT, instance_id TEXT, kernel TEXT,
    agent_version TEXT, identity_json TEXT, cert_sha256 TEXT UNIQUE, enrolled_at TEXT NOT NULL,
    last_seen TEXT, origin TEXT NOT NULL, status_json TEXT, readiness TEXT, readiness_since TEXT,
    readiness_at TEXT, retired_at TEXT, retired_reason TEXT);
CREATE INDEX IF NOT EXISTS hosts_machine ON hosts(machine_id);
CREATE INDEX IF NOT EXISTS hosts_hostname ON hosts(hostname);
"#;

const HOST_COLS: &str =
    "id, hostname, machine_id, instance_id, kernel, agent_version, enrolled_at, last_seen, origin, status_json, readiness, readiness_since, readiness_at, retired_at, retired_reason, identity_json";

fn host_from_row(r: &Row) -> Result<HostRow> {
    Ok(HostRow {
        id: get(r, 0)?,
        hostname: get(r, 1)?,
        machine_id: get(r, 2)?,
        instance_id: get(r, 3)?,
        kernel: get(r, 4)?,
        agent_version: get(r, 5)?,
        enrolled_at: get(r, 6)?,
        last_seen: get(r, 7)?,
        origin: enum_col(r, 8, "host origin", HostOrigin::parse)?,
        status: from_json(get(r, 9)?),
        readiness: get(r, 10)?,
        readiness_since: get(r, 11)?,
        readiness_at: get(r, 12)?,
        retired_at: get(r, 13)?,
        retired_reason: get(r, 14)?,
        identity: from_json(get(r, 15)?),
    })
}

/// One statement that changes rows, on owned arguments.
macro_rules! exec {
    ($self:expr, $sql:expr, $($p:expr),*) => {
        $self.run(move |c| {
            c.execute($sql, &[$(&$p),*])?;
            Ok(())
        })
    };
}
pub(super) use exec;

impl HostStore for Postgres {
    fn insert_enrolled_host(&self, id: &str, hostname: &str, cert_sha256: &str) -> Result<()> {
        let (id, hostname, cert) = (
            id.to_string(),
            hostname.to_string(),
            cert_sha256.to_string(),
        );
        exec!(
            self,
            "INSERT INTO hosts(id, hostname, cert_sha256, enrolled_at, origin) VALUES ($1, $2, $3, $4, 'enrolled')",
            t(&id), t(&hostname), t(&cert), now()
        )
    }

    fn host_id_by_cert(&self, cert_sha256: &str) -> Result<Option<String>> {
        let cert = cert_sha256.to_string();
        self.run(move |c| {
            c.query_opt("SELECT id FROM hosts WHERE cert_sha256 = $1", &[&t(&cert)])?
                .map(|r| get(&r, 0))
                .transpose()
        })
    }

    fn enrolled_host_of_machine(
        &self,
        machine_id: &str,
        instance_id: Option<&str>,
    ) -> Result<Option<String>> {
        let (mid, iid) = (machine_id.to_string(), instance_id.map(str::to_string));
        self.run(move |c| {
            c.query_opt(
                "SELECT id FROM hosts WHERE machine_id = $1 AND origin = 'enrolled' AND retired_at IS NULL
                 AND (instance_id IS NULL OR $2::text IS NULL OR instance_id = $2)
                 ORDER BY instance_id IS NOT DISTINCT FROM $2 DESC, last_seen IS NULL, last_seen DESC, enrolled_at DESC LIMIT 1",
                &[&t(&mid), &ot(iid.as_deref())],
            )?
            .map(|r| get(&r, 0))
            .transpose()
        })
    }

    fn reenroll_host(&self, id: &str, hostname: &str, cert_sha256: &str) -> Result<()> {
        let (id, hostname, cert) = (
            id.to_string(),
            hostname.to_string(),
            cert_sha256.to_string(),
        );
        exec!(
            self,
            "UPDATE hosts SET hostname = $2, cert_sha256 = $3 WHERE id = $1",
            t(&id),
            t(&hostname),
            t(&cert)
        )
    }

    fn set_enrolled_identity(&self, id: &str, host: &HostIdentity) -> Result<()> {
        let id = id.to_string();
        let (mid, iid) = (
            host.machine_id.clone(),
            host.instance_id().map(str::to_string),
        );
        exec!(
            self,
            "UPDATE hosts SET machine_id = $2, instance_id = COALESCE($3, instance_id) WHERE id = $1",
            t(&id), ot(mid.as_deref()), ot(iid.as_deref())
        )
    }

    fn update_host_identity(
        &self,
        id: &str,
        host: &HostIdentity,
        agent_version: &str,
    ) -> Result<()> {
        let id = id.to_string();
        let json = to_json("host identity", host)?;
        let h = host.clone();
        let version = agent_version.to_string();
        self.run(move |c| {
            c.execute(
                "UPDATE hosts SET hostname = $2, machine_id = $3, instance_id = $4, kernel = $5, agent_version = $6,
                 identity_json = $7, last_seen = $8 WHERE id = $1",
                &[
                    &t(&id),
                    &t(&h.hostname),
                    &ot(h.machine_id.as_deref()),
                    &ot(h.instance_id()),
                    &ot(h.kernel_release.as_deref()),
                    &t(&version),
                    &t(&json),
                    &now(),
                ],
            )?;
            Ok(())
        })
    }

    fn set_host_status(&self, id: &str, status: &AgentStatus) -> Result<()> {
        let (id, json) = (id.to_string(), to_json("agent status", status)?);
        exec!(
            self,
            "UPDATE hosts SET status_json = $2, last_seen = $3 WHERE id = $1",
            t(&id),
            t(&json),
            now()
        )
    }

    fn touch_host(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        exec!(
            self,
            "UPDATE hosts SET last_seen = $2 WHERE id = $1",
            t(&id),
            now()
        )
    }

    fn upsert_import_host(&self, host: &HostIdentity) -> Result<String> {
        let json = to_json("host identity", host)?;
        let h = host.clone();
        self.run(move |c| {
            // An offline collection from a known host belongs to that host: the same machine
            // id (enrolled hosts first), else the one host of that name whose machine id
            // cannot tell them apart (one side does not know it).
            if let Some(mid) = &h.machine_id {
                let existing = c.query_opt(
                    "SELECT id FROM hosts WHERE machine_id = $1 AND retired_at IS NULL
                     ORDER BY origin = 'enrolled' DESC, enrolled_at LIMIT 1",
                    &[&t(mid)],
                )?;
                if let Some(r) = existing {
                    return get(&r, 0);
                }
            }
            let named: Vec<String> = rows(
                c,
                "SELECT id FROM hosts WHERE hostname = $1 AND retired_at IS NULL
                 AND (machine_id IS NULL OR $2::text IS NULL) LIMIT 2",
                &[&t(&h.hostname), &ot(h.machine_id.as_deref())],
                |r| get(r, 0),
            )?;
            if let [one] = named.as_slice() {
                return Ok(one.clone());
            }
            let key = h.machine_id.clone().unwrap_or_else(|| h.hostname.clone());
            let id = format!("offline-{}", &sha(&format!("{key}/{}", h.hostname))[..16]);
            c.execute(
                "INSERT INTO hosts(id, hostname, machine_id, instance_id, kernel, identity_json, enrolled_at, origin)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'import') ON CONFLICT(id) DO NOTHING",
                &[
                    &t(&id),
                    &t(&h.hostname),
                    &ot(h.machine_id.as_deref()),
                    &ot(h.instance_id()),
                    &ot(h.kernel_release.as_deref()),
                    &t(&json),
                    &now(),
                ],
            )?;
            Ok(id)
        })
    }

    fn list_hosts(&self) -> Result<Vec<HostRow>> {
        self.run(|c| {
            rows(
                c,
                &format!("SELECT {HOST_COLS} FROM hosts ORDER BY hostname, id"),
                &[],
                host_from_row,
            )
        })
    }

    fn find_hosts(&self, query: &str) -> Result<Vec<HostRow>> {
        let q = query.to_string();
        self.run(move |c| {
            rows(
                c,
                &format!(
                    "SELECT {HOST_COLS} FROM hosts WHERE (id = $1 OR hostname = $1 OR instance_id = $1 OR machine_id = $1)
                     AND (retired_at IS NULL OR id = $1) ORDER BY last_seen DESC NULLS LAST"
                ),
                &[&t(&q)],
                host_from_row,
            )
        })
    }

    fn get_host(&self, id: &str) -> Result<Option<HostRow>> {
        let id = id.to_string();
        self.run(move |c| {
            c.query_opt(
                &format!("SELECT {HOST_COLS} FROM hosts WHERE id = $1"),
                &[&t(&id)],
            )?
            .map(|r| host_from_row(&r))
            .transpose()
        })
    }

    fn hosts_with_id_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<HostRow>> {
        let pattern = format!("{}%", crate::storage::timeline_sql::like_escape(prefix));
        self.run(move |c| {
            rows(
                c,
                &format!(
                    "SELECT {HOST_COLS} FROM hosts WHERE id LIKE $1 ESCAPE '\\' AND retired_at IS NULL ORDER BY id LIMIT $2"
                ),
                &[&t(&pattern), &i64::from(limit)],
                host_from_row,
            )
        })
    }

    fn retire_host(&self, id: &str, reason: &str) -> Result<bool> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.run(move |c| {
            let n = c.execute(
                "UPDATE hosts SET retired_at = $2, retired_reason = $3, cert_sha256 = NULL WHERE id = $1 AND retired_at IS NULL",
                &[&t(&id), &now(), &t(&reason)],
            )?;
            Ok(n == 1)
        })
    }
}
