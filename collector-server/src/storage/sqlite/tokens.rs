use super::{now, sha, Sqlite};
use crate::storage::tokens::{EnrollRefusal, Role, TokenStore};
use crate::storage::Result;
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS api_tokens (
    token_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS enroll_tokens (
    token_sha256 TEXT PRIMARY KEY, label TEXT, created_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL, max_uses INTEGER NOT NULL, uses INTEGER NOT NULL DEFAULT 0);
"#;

impl TokenStore for Sqlite {
    fn create_api_token(&self, name: &str, role: Role) -> Result<String> {
        let secret = crate::random_secret("cairn_api_", 24);
        self.lock().execute(
            "INSERT INTO api_tokens(token_sha256, name, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![sha(&secret), name, role.as_str(), now()],
        )?;
        Ok(secret)
    }

    fn check_api_token(&self, secret: &str) -> Result<Option<(String, Role)>> {
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

    fn create_enroll_token(&self, uses: u32, ttl_secs: i64, label: &str) -> Result<(String, i64)> {
        let secret = crate::random_secret("cairn_et_", 24);
        let expires = crate::unix_now() + ttl_secs;
        self.lock().execute(
            "INSERT INTO enroll_tokens(token_sha256, label, created_at, expires_at, max_uses) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sha(&secret), label, now(), expires, uses],
        )?;
        Ok((secret, expires))
    }

    fn consume_enroll_token(&self, secret: &str) -> Result<std::result::Result<(), EnrollRefusal>> {
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
            Some((exp, _, _)) if exp <= crate::unix_now() => Err(EnrollRefusal::Expired(
                cairn_protocol::rfc3339::from_unix(exp).unwrap_or_else(|| exp.to_string()),
            )),
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
}
