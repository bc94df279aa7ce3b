//! The web console's sign-ins: sessions (a cookie's secret, stored hashed, with its CSRF
//! token and expiry) and one-time sign-in links (`cairn-collector console-link`).

use super::tokens::Role;
use super::Result;

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub name: String,
    pub role: Role,
    /// Every state-changing request carries it (form field or header).
    pub csrf: String,
    pub expires_at: i64,
}

pub trait ConsoleStore {
    /// A new session for `name` in `role`, valid `ttl_secs`; returns the cookie's secret.
    fn create_session(
        &self,
        name: &str,
        role: Role,
        ttl_secs: i64,
    ) -> Result<(String, ConsoleSession)>;
    /// The live session a cookie's secret names.
    fn session(&self, secret: &str) -> Result<Option<ConsoleSession>>;
    fn end_session(&self, secret: &str) -> Result<()>;
    /// A one-time sign-in link's code for `name` in `role`, valid `ttl_secs`.
    fn create_link(&self, name: &str, role: Role, ttl_secs: i64) -> Result<String>;
    /// Use a link's code once: the name and role it signs in as.
    fn use_link(&self, code: &str) -> Result<Option<(String, Role)>>;
}
