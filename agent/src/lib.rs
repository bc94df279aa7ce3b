//! cairn-agent: the daemon and CLI that run on every host.
//!
//! - [`identity`]: who this host is (hostname, machine id, boot id, kernel, cloud instance).
//! - [`containers`]: the containers running here, reported so triggers naming a pod find us.
//! - [`capture`]: what a collection reads — volatile state, files (memory and disks later).
//! - [`collect`]: runs a profile and turns its captures into items through the evidence pipeline.
//! - [`transport`]: enrollment, the QUIC connection to the collector, uploads with resume, spool.
//! - [`offline`]: the same collection written to a directory for air-gapped hosts.
//! - [`selftest`]: the readiness self-test (`cairn-agent selftest`).

pub mod capture;
pub mod collect;
pub mod config;
pub mod containers;
pub mod flight_recorder;
pub mod identity;
pub mod mountinfo;
pub mod offline;
pub mod selftest;
pub mod sensor;
pub mod transport;

/// `cairn-agent <version>`, as written into every manifest.
pub fn tool_version() -> String {
    cairn_protocol::manifest::tool_version("cairn-agent", env!("CARGO_PKG_VERSION"))
}
