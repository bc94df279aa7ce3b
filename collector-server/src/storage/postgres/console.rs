use super::{get, sha, t, Postgres};
use crate::storage::console::{ConsoleSession, ConsoleStore};
use crate::storage::tokens::Role;
use crate::storage::Result;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS console_sessions (
    secret_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions(expires_at);
CREATE TABLE IF NOT EXISTS console_links (
    code_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
    expires_at BIGINT NOT NULL, used_at BIGINT);
"#;

impl ConsoleStore for Postgres {
    fn create_session(
        &self,
        name: &str,
        role: Role,
        ttl_secs: i64,
    ) -> Result<(String, ConsoleSession)> {
        let secret = crate::random_secret("cairn_s_", 32);
        let csrf = crate::random_secret("", 24);
        let now = crate::unix_now();
        let (hash, n, token) = (sha(&secret), name.to_string(), csrf.clone());
        self.run(move |c| {
            // Expired sessions go as new ones come: the table stays the size of who is signed in.
            c.execute("DELETE FROM console_sessions WHERE expires_at <= $1", &[&now])?;
            c.execute(
                "INSERT INTO console_sessions(secret_sha256, name, role, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&hash, &t(&n), &role.as_str(), &token, &now, &(now + ttl_secs)],
            )?;
            Ok(())
        })?;
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
        let hash = sha(secret);
        let row: Option<(String, String, String, i64)> = self.run(move |c| {
            c.query_opt(
                "SELECT name, role, csrf, expires_at FROM console_sessions WHERE secret_sha256 = $1 AND expires_at > $2",
                &[&hash, &crate::unix_now()],
            )?
            .map(|r| Ok((get(&r, 0)?, get(&r, 1)?, get(&r, 2)?, get(&r, 3)?)))
            .transpose()
        })?;
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
        let hash = sha(secret);
        self.run(move |c| {
            c.execute(
                "DELETE FROM console_sessions WHERE secret_sha256 = $1",
                &[&hash],
            )?;
            Ok(())
        })
    }

    fn create_link(&self, name: &str, role: Role, ttl_secs: i64) -> Result<String> {
        let code = crate::random_secret("", 24);
        let (hash, name) = (sha(&code), name.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT INTO console_links(code_sha256, name, role, expires_at) VALUES ($1, $2, $3, $4)",
                &[&hash, &t(&name), &role.as_str(), &(crate::unix_now() + ttl_secs)],
            )?;
            Ok(())
        })?;
        Ok(code)
    }

    fn use_link(&self, code: &str) -> Result<Option<(String, Role)>> {
        let hash = sha(code);
        let row: Option<(String, String)> = self.run(move |c| {
            // One statement: of two collectors given the same code, one marks it used.
            c.query_opt(
                "UPDATE console_links SET used_at = $2 WHERE code_sha256 = $1 AND used_at IS NULL AND expires_at > $2
                 RETURNING name, role",
                &[&hash, &crate::unix_now()],
            )?
            .map(|r| Ok((get(&r, 0)?, get(&r, 1)?)))
            .transpose()
        })?;
        Ok(row.and_then(|(n, r)| Role::parse(&r).map(|r| (n, r))))
    }
}
