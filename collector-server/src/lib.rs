//! cairn-collector: receives evidence from agents, verifies it, keeps custody, serves it.
//!
//! The crate is a stack of floors; a module uses only the floors below it (ARCHITECTURE.md
//! writes them down and `cargo xtask tidy` enforces them):
//!
//! ```text
//!  bin/ cairn-collector ─ server (wiring: stores, keys, listeners)
//!  api/ (HTTP JSON, one module per resource)   console/ (web pages)   quic/ (agent streams)
//!  state (what every handler holds)
//!  collections containment timeline custody triggers readiness hosts sessions admission health
//!  error (the domain's errors, by what the caller should do)
//!  ingest (the item state machine: frame order, chunk verification, sealing)
//!  evidence (the one verified read of stored chunks)
//!  storage (metadata + blob traits; SQLite, chunk directory)  crypt  authority  datadir
//!  cairn-protocol
//! ```

pub mod admission;
pub mod api;
pub mod authority;
pub mod collections;
pub mod console;
pub mod containment;
pub mod crypt;
pub mod custody;
pub mod datadir;
pub mod error;
pub mod evidence;
pub mod fleet;
pub mod health;
pub mod hosts;
pub mod ingest;
pub mod metrics;
pub mod migrate;
pub mod quic;
pub mod readiness;
pub mod server;
pub mod sessions;
pub mod state;
pub mod storage;
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
