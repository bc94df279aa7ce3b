//! API tokens (who may use the HTTP API, in which role) and enrollment tokens (which hosts may
//! join). Secrets are stored as their SHA-256 only.

use super::Result;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Request collections and read results; no imports, no tokens.
    Analyst,
    /// Read everything, change nothing (a manager, an auditor, a second team).
    Viewer,
    /// Start collections only (detection systems); cannot sign in to the console.
    Trigger,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
            Role::Trigger => "trigger",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "analyst" => Some(Role::Analyst),
            "viewer" => Some(Role::Viewer),
            "trigger" => Some(Role::Trigger),
            _ => None,
        }
    }
}

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    #[error("enrollment token is not known to this collector")]
    Unknown,
    #[error("enrollment token expired at {0}")]
    Expired(String),
    #[error("enrollment token has been used {0} of {0} times")]
    Exhausted(u32),
    #[error("enrollment token was revoked at {0}")]
    Revoked(String),
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// The first 12 hex digits of the secret's SHA-256: enough to name it, nothing to use.
    pub id: String,
    /// `api` or `enroll`.
    pub kind: &'static str,
    /// API tokens: the name custody records; enrollment tokens: the label.
    pub name: String,
    /// API tokens only.
    pub role: Option<Role>,
    pub created_at: String,
    /// Enrollment tokens: when they stop working, and how many uses are left.
    pub expires_at: Option<String>,
    pub uses_left: Option<u32>,
    pub revoked_at: Option<String>,
}

pub trait TokenStore {
    /// A new API token; returns the secret (shown once, stored hashed).
    fn create_api_token(&self, name: &str, role: Role) -> Result<String>;
    /// `(name, role)` of a valid API token.
    fn check_api_token(&self, secret: &str) -> Result<Option<(String, Role)>>;
    /// A new enrollment token: `(secret, expires_at unix)`.
    fn create_enroll_token(&self, uses: u32, ttl_secs: i64, label: &str) -> Result<(String, i64)>;
    /// Use an enrollment token once, atomically.
    fn consume_enroll_token(&self, secret: &str) -> Result<std::result::Result<(), EnrollRefusal>>;
    /// Every token, API and enrollment, newest first.
    fn list_tokens(&self) -> Result<Vec<TokenInfo>>;
    /// Revoke the tokens an id prefix (at least 6 hex digits) or an API token name names;
    /// returns how many were revoked.
    fn revoke_tokens(&self, id_or_name: &str) -> Result<u32>;
}
