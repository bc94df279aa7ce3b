//! cairn-collector: receives evidence from agents, verifies it, keeps custody, serves it.
//!
//! Data flows one way through these modules:
//!
//! ```text
//!  agent ──QUIC/mTLS──▶ quic ──▶ ingest ──▶ store (chunks/) + db (SQLite) ──▶ api ──▶ people, tools
//!                         │                    │
//!                         └── sessions ◀── api (collection commands)      custody (signed chain)
//! ```
//!
//! - [`authority`]: the collector's CA, server certificate, agent certificates from CSRs.
//! - [`db`]: SQLite schema and queries (hosts, tokens, collections, items, chunks, custody).
//! - [`store`]: content-addressed chunk files.
//! - [`ingest`]: the item state machine shared by live uploads and imports: verify every chunk,
//!   re-hash the whole item, seal it.
//! - [`custody`]: the signed, hash-chained log of everything that happened to a collection.
//! - [`quic`]: the agent-facing QUIC server: enrollment, control stream, item streams.
//! - [`api`]: the HTTP API for people and detection systems.
//! - [`selftest`]: agents' readiness reports and the self-test's evidence round trip.
//! - [`timeline`]: one table of events from every source (sensor, logs, histories, file
//!   times, snapshots): parsers, query with facets, export.
//! - [`triggers`]: GuardDuty, Falco and plain JSON alerts → collections on the right host.

pub mod api;
pub mod authority;
pub mod custody;
pub mod datadir;
pub mod db;
pub mod ingest;
pub mod quic;
pub mod selftest;
pub mod server;
pub mod sessions;
pub mod store;
pub mod timeline;
pub mod triggers;

/// `cairn-collector <version>`
pub fn tool_version() -> String {
    cairn_protocol::manifest::tool_version("cairn-collector", env!("CARGO_PKG_VERSION"))
}

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A fresh random secret of `n` bytes as URL-safe base64, with a prefix that says what it is.
pub fn random_secret(prefix: &str, n: usize) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
