use super::{sha, Sqlite};
use crate::storage::console::{ConsoleSession, ConsoleStore};
use crate::storage::tokens::Role;
use crate::storage::Result;
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS console_sessions (
    secret_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS console_links (
    code_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
    expires_at INTEGER NOT NULL, used_at INTEGER);
"#;

impl ConsoleStore for Sqlite {
    fn create_session(
        &self,
        name: &str,
        role: Role,
        ttl_secs: i64,
    ) -> Result<(String, ConsoleSession)> {
        let secret = crate::random_secret("cairn_s_", 32);
        let csrf = crate::random_secret("", 24);
        let now = crate::unix_now();
        let conn = self.lock();
        // Expired sessions go as new ones come: the table stays the size of who is signed in.
        conn.execute(
            "DELETE FROM console_sessions WHERE expires_at <= ?1",
            params![now],
        )?;
        conn.execute(
            "INSERT INTO console_sessions(secret_sha256, name, role, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![sha(&secret), name, role.as_str(), csrf, now, now + ttl_secs],
        )?;
        Ok((
            secret,
            ConsoleSession {
                name: name.to_string(),
                role,
                csrf,
                expires_at: now + ttl_secs,
            },
        ))
    }

    fn session(&self, secret: &str) -> Result<Option<ConsoleSession>> {
        let row: Option<(String, String, String, i64)> = self
            .lock()
            .query_row(
                "SELECT name, role, csrf, expires_at FROM console_sessions WHERE secret_sha256 = ?1 AND expires_at > ?2",
                params![sha(secret), crate::unix_now()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        Ok(row.and_then(|(name, role, csrf, expires_at)| {
            Role::parse(&role).map(|role| ConsoleSession {
                name,
                role,
                csrf,
                expires_at,
            })
        }))
    }

    fn end_session(&self, secret: &str) -> Result<()> {
        self.lock().execute(
            "DELETE FROM console_sessions WHERE secret_sha256 = ?1",
            params![sha(secret)],
        )?;
        Ok(())
    }

    fn create_link(&self, name: &str, role: Role, ttl_secs: i64) -> Result<String> {
        let code = crate::random_secret("", 24);
        self.lock().execute(
            "INSERT INTO console_links(code_sha256, name, role, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![sha(&code), name, role.as_str(), crate::unix_now() + ttl_secs],
        )?;
        Ok(code)
    }

    fn use_link(&self, code: &str) -> Result<Option<(String, Role)>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = crate::unix_now();
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT name, role FROM console_links WHERE code_sha256 = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![sha(code), now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if row.is_some() {
            tx.execute(
                "UPDATE console_links SET used_at = ?2 WHERE code_sha256 = ?1",
                params![sha(code), now],
            )?;
        }
        tx.commit()?;
        Ok(row.and_then(|(n, r)| Role::parse(&r).map(|r| (n, r))))
    }
}
