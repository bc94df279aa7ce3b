use super::{now, sha, Sqlite};
use crate::storage::tokens::{EnrollRefusal, Role, TokenInfo, TokenStore};
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
                "SELECT name, role FROM api_tokens WHERE token_sha256 = ?1 AND revoked_at IS NULL",
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
        let row: Option<(i64, u32, u32, Option<String>)> = tx
            .query_row(
                "SELECT expires_at, max_uses, uses, revoked_at FROM enroll_tokens WHERE token_sha256 = ?1",
                params![sha(secret)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let verdict = match row {
            None => Err(EnrollRefusal::Unknown),
            Some((_, _, _, Some(at))) => Err(EnrollRefusal::Revoked(at)),
            Some((exp, _, _, _)) if exp <= crate::unix_now() => Err(EnrollRefusal::Expired(
                cairn_protocol::rfc3339::from_unix(exp).unwrap_or_else(|| exp.to_string()),
            )),
            Some((_, max, uses, _)) if uses >= max => Err(EnrollRefusal::Exhausted(max)),
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

    fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut out = self.rows(
            "SELECT substr(token_sha256, 1, 12), name, role, created_at, revoked_at FROM api_tokens",
            [],
            |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    kind: "api",
                    name: r.get(1)?,
                    role: Role::parse(&r.get::<_, String>(2)?),
                    created_at: r.get(3)?,
                    expires_at: None,
                    uses_left: None,
                    revoked_at: r.get(4)?,
                })
            },
        )?;
        out.extend(self.rows(
            "SELECT substr(token_sha256, 1, 12), COALESCE(label, ''), created_at, expires_at, max_uses - uses, revoked_at FROM enroll_tokens",
            [],
            |r| {
                let exp: i64 = r.get(3)?;
                Ok(TokenInfo {
                    id: r.get(0)?,
                    kind: "enroll",
                    name: r.get(1)?,
                    role: None,
                    created_at: r.get(2)?,
                    expires_at: cairn_protocol::rfc3339::from_unix(exp),
                    uses_left: Some(r.get::<_, i64>(4)?.max(0) as u32),
                    revoked_at: r.get(5)?,
                })
            },
        )?);
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
    }

    fn revoke_tokens(&self, id_or_name: &str) -> Result<u32> {
        let at = now();
        let conn = self.lock();
        let by_id = id_or_name.len() >= 6 && id_or_name.bytes().all(|b| b.is_ascii_hexdigit());
        let mut n = 0;
        if by_id {
            let prefix = format!("{}%", id_or_name.to_ascii_lowercase());
            for table in ["api_tokens", "enroll_tokens"] {
                n += conn.execute(
                    &format!("UPDATE {table} SET revoked_at = ?2 WHERE token_sha256 LIKE ?1 AND revoked_at IS NULL"),
                    params![prefix, at],
                )?;
            }
        }
        if n == 0 {
            n += conn.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![id_or_name, at],
            )?;
        }
        Ok(n as u32)
    }
}
