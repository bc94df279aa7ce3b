//! Everything between this host and the collector.
//!
//! - [`tls`]: rustls configurations: the pinned-CA one used to enroll, the mutual one after.
//! - [`enroll`]: key generation, CSR, token exchange; the private key never leaves the host.
//! - [`connection`]: one QUIC connection kept alive with reconnect and backoff.
//! - [`control`]: the control stream (hello, heartbeats, commands) and `run`.
//! - [`events`]: the live event stream, batched and acknowledged.
//! - [`upload`]: one item over one stream, resumable, with the on-disk spool.

pub mod connection;
pub mod control;
pub mod enroll;
pub mod events;
pub mod tls;
pub mod upload;
