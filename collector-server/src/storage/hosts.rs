//! Hosts: enrolled agents (known by their certificate) and hosts of imported collections.

use super::Result;
use cairn_protocol::manifest::HostIdentity;
use cairn_protocol::wire::AgentStatus;
use serde::Serialize;

/// How a host became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOrigin {
    /// An agent enrolled with a token and holds a certificate.
    Enrolled,
    /// Only offline collections came from it.
    Import,
}

impl HostOrigin {
    pub fn as_str(&self) -> &'static str {
        match self {
            HostOrigin::Enrolled => "enrolled",
            HostOrigin::Import => "import",
        }
    }
    pub fn parse(s: &str) -> Option<HostOrigin> {
        match s {
            "enrolled" => Some(HostOrigin::Enrolled),
            "import" => Some(HostOrigin::Import),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    pub id: String,
    pub hostname: String,
    pub machine_id: Option<String>,
    pub instance_id: Option<String>,
    pub kernel: Option<String>,
    pub agent_version: Option<String>,
    pub enrolled_at: String,
    pub last_seen: Option<String>,
    pub origin: HostOrigin,
    /// The agent's last reported status (sensor mode, events lost, containers).
    pub status: Option<serde_json::Value>,
    /// The last self-test's verdict (pass, warn, fail), since when it has been that, and when
    /// the last report arrived.
    pub readiness: Option<String>,
    pub readiness_since: Option<String>,
    pub readiness_at: Option<String>,
    /// When it was retired (its certificate no longer accepted, its evidence kept), and why.
    pub retired_at: Option<String>,
    pub retired_reason: Option<String>,
    /// What the agent last said about itself (its hello, or the manifest of an import): the
    /// cloud context the fleet is grouped by.
    pub identity: Option<HostIdentity>,
}

pub trait HostStore {
    fn insert_enrolled_host(&self, id: &str, hostname: &str, cert_sha256: &str) -> Result<()>;
    fn host_id_by_cert(&self, cert_sha256: &str) -> Result<Option<String>>;
    /// The enrolled, unretired host a machine already is: the same machine id, and the same
    /// cloud instance id where both are known (a machine id cloned into another instance's
    /// image is another host). The most recently seen when several are.
    fn enrolled_host_of_machine(
        &self,
        machine_id: &str,
        instance_id: Option<&str>,
    ) -> Result<Option<String>>;
    /// A host enrolled again: the new certificate replaces the old one, which is no longer
    /// accepted; the name is the one the enrolment gave.
    fn reenroll_host(&self, id: &str, hostname: &str, cert_sha256: &str) -> Result<()>;
    /// What an enrolment said of the machine (machine id, instance id), known before its first
    /// hello so that a second enrolment finds it.
    fn set_enrolled_identity(&self, id: &str, host: &HostIdentity) -> Result<()>;
    /// What the agent said about itself in its hello.
    fn update_host_identity(
        &self,
        id: &str,
        host: &HostIdentity,
        agent_version: &str,
    ) -> Result<()>;
    fn set_host_status(&self, id: &str, status: &AgentStatus) -> Result<()>;
    fn touch_host(&self, id: &str) -> Result<()>;
    /// The host an offline collection came from: a host with the same machine id (enrolled
    /// first), else the one host of that name when a machine id cannot tell them apart, else
    /// one created for imports. Retired hosts are not matched.
    fn upsert_import_host(&self, host: &HostIdentity) -> Result<String>;
    fn list_hosts(&self) -> Result<Vec<HostRow>>;
    /// Hosts matching an id, hostname, instance id or machine id.
    fn find_hosts(&self, query: &str) -> Result<Vec<HostRow>>;
    fn get_host(&self, id: &str) -> Result<Option<HostRow>>;
    /// Hosts whose id starts with `prefix` (at most `limit`).
    fn hosts_with_id_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<HostRow>>;
    /// Retire a host: its certificate is no longer accepted, triggers and names no longer
    /// find it, its collections stay. False when there is no such host.
    fn retire_host(&self, id: &str, reason: &str) -> Result<bool>;
}
