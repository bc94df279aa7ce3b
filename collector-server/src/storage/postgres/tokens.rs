use super::{get, now, rows, sha, t, Postgres};
use crate::storage::tokens::{EnrollRefusal, Role, TokenInfo, TokenStore};
use crate::storage::Result;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS api_tokens (
    token_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created_at TEXT NOT NULL,
    revoked_at TEXT);
CREATE TABLE IF NOT EXISTS enroll_tokens (
    token_sha256 TEXT PRIMARY KEY, label TEXT, created_at TEXT NOT NULL,
    expires_at BIGINT NOT NULL, max_uses BIGINT NOT NULL, uses BIGINT NOT NULL DEFAULT 0,
    revoked_at TEXT);
"#;

impl TokenStore for Postgres {
    fn create_api_token(&self, name: &str, role: Role) -> Result<String> {
        let secret = crate::random_secret("cairn_api_", 24);
        let (hash, name) = (sha(&secret), name.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT INTO api_tokens(token_sha256, name, role, created_at) VALUES ($1, $2, $3, $4)",
                &[&hash, &t(&name), &role.as_str(), &now()],
            )?;
            Ok(())
        })?;
        Ok(secret)
    }

    fn check_api_token(&self, secret: &str) -> Result<Option<(String, Role)>> {
        let hash = sha(secret);
        let row = self.run(move |c| {
            c.query_opt(
                "SELECT name, role FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
                &[&hash],
            )?
            .map(|r| Ok((get::<String>(&r, 0)?, get::<String>(&r, 1)?)))
            .transpose()
        })?;
        Ok(row.and_then(|(n, r)| Role::parse(&r).map(|r| (n, r))))
    }

    fn create_enroll_token(&self, uses: u32, ttl_secs: i64, label: &str) -> Result<(String, i64)> {
        let secret = crate::random_secret("cairn_et_", 24);
        let expires = crate::unix_now() + ttl_secs;
        let (hash, label) = (sha(&secret), label.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT INTO enroll_tokens(token_sha256, label, created_at, expires_at, max_uses) VALUES ($1, $2, $3, $4, $5)",
                &[&hash, &t(&label), &now(), &expires, &i64::from(uses)],
            )?;
            Ok(())
        })?;
        Ok((secret, expires))
    }

    fn consume_enroll_token(&self, secret: &str) -> Result<std::result::Result<(), EnrollRefusal>> {
        let hash = sha(secret);
        self.run(move |c| {
            let mut tx = c.transaction()?;
            // The row is locked until the use is counted: two enrolments cannot both take the
            // last use, whichever collector they reach.
            let row = tx.query_opt(
                "SELECT expires_at, max_uses, uses, revoked_at FROM enroll_tokens WHERE token_sha256 = $1 FOR UPDATE",
                &[&hash],
            )?;
            let row = row
                .map(|r| {
                    Ok::<_, crate::storage::StorageError>((
                        get::<i64>(&r, 0)?,
                        get::<i64>(&r, 1)?,
                        get::<i64>(&r, 2)?,
                        get::<Option<String>>(&r, 3)?,
                    ))
                })
                .transpose()?;
            let verdict = match row {
                None => Err(EnrollRefusal::Unknown),
                Some((_, _, _, Some(at))) => Err(EnrollRefusal::Revoked(at)),
                Some((exp, _, _, _)) if exp <= crate::unix_now() => Err(EnrollRefusal::Expired(
                    cairn_protocol::rfc3339::from_unix(exp).unwrap_or_else(|| exp.to_string()),
                )),
                Some((_, max, uses, _)) if uses >= max => {
                    Err(EnrollRefusal::Exhausted(u32::try_from(max).unwrap_or(u32::MAX)))
                }
                Some(_) => {
                    tx.execute(
                        "UPDATE enroll_tokens SET uses = uses + 1 WHERE token_sha256 = $1",
                        &[&hash],
                    )?;
                    Ok(())
                }
            };
            tx.commit()?;
            Ok(verdict)
        })
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut out = self.run(|c| {
            let mut out = rows(
                c,
                "SELECT substr(token_sha256, 1, 12), name, role, created_at, revoked_at FROM api_tokens",
                &[],
                |r| {
                    Ok(TokenInfo {
                        id: get(r, 0)?,
                        kind: "api",
                        name: get(r, 1)?,
                        role: Role::parse(&get::<String>(r, 2)?),
                        created_at: get(r, 3)?,
                        expires_at: None,
                        uses_left: None,
                        revoked_at: get(r, 4)?,
                    })
                },
            )?;
            out.extend(rows(
                c,
                "SELECT substr(token_sha256, 1, 12), COALESCE(label, ''), created_at, expires_at, max_uses - uses, revoked_at FROM enroll_tokens",
                &[],
                |r| {
                    let exp: i64 = get(r, 3)?;
                    Ok(TokenInfo {
                        id: get(r, 0)?,
                        kind: "enroll",
                        name: get(r, 1)?,
                        role: None,
                        created_at: get(r, 2)?,
                        expires_at: cairn_protocol::rfc3339::from_unix(exp),
                        uses_left: Some(get::<i64>(r, 4)?.max(0) as u32),
                        revoked_at: get(r, 5)?,
                    })
                },
            )?);
            Ok(out)
        })?;
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
    }

    fn revoke_tokens(&self, id_or_name: &str) -> Result<u32> {
        let at = now();
        let id_or_name = id_or_name.to_string();
        let by_id = id_or_name.len() >= 6 && id_or_name.bytes().all(|b| b.is_ascii_hexdigit());
        self.run(move |c| {
            let mut n = 0;
            if by_id {
                let prefix = format!("{}%", id_or_name.to_ascii_lowercase());
                for table in ["api_tokens", "enroll_tokens"] {
                    n += c.execute(
                        &format!("UPDATE {table} SET revoked_at = $2 WHERE token_sha256 LIKE $1 AND revoked_at IS NULL"),
                        &[&prefix, &at],
                    )?;
                }
            }
            if n == 0 {
                n += c.execute(
                    "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                    &[&t(&id_or_name), &at],
                )?;
            }
            Ok(n as u32)
        })
    }
}
