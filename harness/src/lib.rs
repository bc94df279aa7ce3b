//! The one harness that starts real cairn collectors and agents on loopback: used by the
//! end-to-end tests (`tests/`, crate `cairn-e2e`) and by `cargo xtask` (demo, bench, vm).
//!
//! - [`Bins`]: where the binaries are — beside a test executable (`target/<profile>/`, found
//!   from `deps/`) or in a given directory (xtask's `target/release`).
//! - [`run`]: a command to completion with a timeout, as an [`Output`]; [`wait_for`] polls.
//! - [`free_ports`]: loopback ports from one process-wide registry; [`with_free_ports`] retries
//!   on fresh ports when a bind lost a race.
//! - [`Managed`]: a background process with its log in a file, killed on drop (unless
//!   [detached](Managed::detach)), its log tail printed when a test panics.
//! - [`Collector`], [`Agent`], [`collector_with_agent`]: the real daemons, the `cairn` CLI,
//!   collections ([`Collector::collect_wait`], [`summary`], [`item_named`]…) and the HTTPS
//!   API ([`Api`], or [`Collector::api_get`] through curl).
//!
//! - [`ConsoleClient`]: the web console over HTTPS with a session cookie; [`Browser`]: headless
//!   Chromium over WebDriver, with screenshots.
//! - [`memimage`]: the LiME and ELF core readers the memory checks use.
//! - [`TempPostgres`]: a throwaway PostgreSQL server (the collector's shared metadata store).
//!
//! Everything has a timeout: a broken binary makes a test fail with the tail of the process
//! logs, never hang.

mod agent;
mod api;
pub mod backends;
mod bins;
mod collection;
mod collector;
mod console;
mod files;
pub mod garage;
pub mod imds;
mod managed;
pub mod memimage;
pub mod netns;
mod ports;
pub mod postgres;
mod run;
mod tamper;
mod wait;
mod webdriver;

use std::time::Duration;

pub use agent::{
    collector_with_agent, collector_with_agent_in, enroll_raw, enroll_raw_with, set_agent_option,
    set_agent_table_option, Agent,
};
pub use api::Api;
pub use bins::{bin, bin_dir, Bins};
pub use collection::{is_finished, item_named, items, s, summary, u};
pub use collector::{cli, Collector, InitInfo};
pub use console::{csrf_of, ConsoleClient, Page};
pub use files::{
    cgroup2_root, sha256_bytes, sha256_file, sha256sum_cli, workdir, write_random_file,
};
pub use managed::{KillOnDrop, Managed};
pub use ports::{free_ports, with_free_ports};
pub use postgres::TempPostgres;
pub use run::{describe_cmd, have_command, run, tail_file, tail_str, Output};
pub use wait::{wait_for, wait_for_every};
pub use webdriver::{Browser, El};

pub use serde_json;
pub use tempfile;

/// How long a plain CLI call may take before it is killed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a collector or agent may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
