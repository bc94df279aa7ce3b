//! cairn-agent: the daemon and CLI that run on every host.
//!
//! The modules stand on floors; a module uses only those on its floor (without cycles) or
//! below, never above (`main.rs`, the CLI, is the top floor):
//!
//! ```text
//! daemon                             the running agent: control loop, recording, schedules,
//!                                    collections and their uploads
//! selftest  offline                  readiness checks; collections written to a directory
//! transport  collect                 connection, enrollment, TLS, control-stream protocol,
//!                                    uploads, event stream; profile → items → chunks
//! config                             the state directory and agent.toml
//! capture  sensor  flight_recorder   what a collection reads; live events; the journal;
//! containment                        isolate, freeze, thaw, kill, kept across restarts
//! identity  containers               who this host is; the containers running here
//! mountinfo  encryption              /proc/PID/mountinfo; age to the collector's key
//! ```
//!
//! - [`daemon`]: `cairn-agent run`: the policy above the transport's mechanisms.
//! - [`selftest`]: the readiness self-test (`cairn-agent selftest`).
//! - [`offline`]: the same collection written to a directory for air-gapped hosts.
//! - [`transport`]: enrollment, the QUIC connection to the collector, the control stream,
//!   uploads with resume (chunk spool), the live event stream (event spool).
//! - [`collect`]: runs a profile and turns its captures into items through the evidence pipeline.
//! - [`config`]: the state directory and the agent's configuration.
//! - [`capture`]: what a collection reads — volatile state, files, memory, disks.
//! - [`sensor`]: process and network events from eBPF (or /proc polling).
//! - [`flight_recorder`]: the on-disk journal of recent events.
//! - [`containment`]: host isolation (nftables), container isolation (cgroup BPF), freeze,
//!   thaw and kill, their state on disk and the break-glass release.
//! - [`identity`]: who this host is (hostname, machine id, boot id, kernel, cloud instance).
//! - [`containers`]: the containers running here, reported so triggers naming a pod find us.
//! - [`mountinfo`]: the one parser of the kernel's mount tables.
//! - [`encryption`]: evidence encrypted on the host to the collector's age recipient.
//!
//! [`tool_version`], at the crate root, may be used from any floor.

pub mod capture;
pub mod cloud;
pub mod collect;
pub mod config;
pub mod containers;
pub mod containment;
pub mod daemon;
pub mod encryption;
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
