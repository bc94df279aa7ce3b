//! What an item and a collection are.
//!
//! An [`ItemManifest`] is written by the agent when the item's last byte has been read and is
//! verified by the collector against the chunks it received: same count, same hashes, same
//! total SHA-256. It is stored and exported as JSON; the field names are part of the contract.

use serde::{Deserialize, Serialize};

/// Who the evidence came from. Every field is best effort: a missing value is `None`, never a guess.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostIdentity {
    pub hostname: String,
    pub machine_id: Option<String>,
    pub boot_id: Option<String>,
    /// `uname -r`
    pub kernel_release: Option<String>,
    /// `uname -v`
    pub kernel_version: Option<String>,
    pub arch: Option<String>,
    pub uptime_seconds: Option<f64>,
    pub cloud: Option<CloudIdentity>,
    /// Set when the agent runs inside a container (DaemonSet): the container it runs in.
    pub container_id: Option<String>,
    /// Set when the evidence was read from another system's files (a mounted image, `collect
    /// --root DIR`), not from a running host: the directory it was read from. The fields
    /// above then describe the image's system, and only what its files say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_root: Option<String>,
    /// Where `hostname` came from when it was not asked of the running kernel: `etc/hostname`
    /// (of the image), `--host` (given by the responder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_from: Option<String>,
    /// The machine that ran the collection, when it is not the host the evidence is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_by: Option<CollectedBy>,
}

/// The machine that read another system's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectedBy {
    pub hostname: String,
    pub machine_id: Option<String>,
    pub boot_id: Option<String>,
}

/// Where the host runs in its cloud, as its metadata service says (EC2 IMDSv2, Google Cloud,
/// Azure). The fields after `instance_type` are the fleet context (issue #17): the collector
/// groups hosts by them. Each is absent when the service did not say; `unavailable` says why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudIdentity {
    /// `aws`, `gcp` or `azure`.
    pub provider: String,
    pub instance_id: Option<String>,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    /// AWS account id, Google Cloud project id, Azure subscription id.
    pub account_id: Option<String>,
    pub instance_type: Option<String>,
    /// The instance's name where the cloud has one (GCE, Azure; on EC2 the `Name` tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// AMI id, GCE image, Azure image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The network of the primary interface: VPC id, GCE network, Azure virtual network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Security group ids of the primary interface (EC2), network tags (GCE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<CloudInterface>,
    /// The role the instance acts as: IAM instance profile ARN, GCE service account, Azure
    /// managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Instance tags where the metadata service exposes them (EC2 with tags in metadata on,
    /// Azure tags).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// The scaling group it belongs to: EC2 Auto Scaling group (`aws:autoscaling:groupName`),
    /// GCE managed instance group, Azure scale set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_group: Option<String>,
    /// Azure's resource group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// EC2 Auto Scaling target lifecycle state (`InService`, `Terminated`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<String>,
    /// Whether the metadata service answered a request without a session token (IMDSv1):
    /// a preparedness finding. `None` when not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imdsv1_open: Option<bool>,
    /// What could not be read, each with its reason ("tags: not exposed (404)").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// One network interface of a cloud instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudInterface {
    /// ENI id (EC2), interface index (GCE, Azure).
    pub id: Option<String>,
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
}

impl HostIdentity {
    pub fn instance_id(&self) -> Option<&str> {
        self.cloud.as_ref().and_then(|c| c.instance_id.as_deref())
    }
}

/// What kind of evidence an item holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A JSON document describing volatile state (processes, sockets, mounts…).
    VolatileArtifact,
    /// A file copied from the host.
    File,
    ProcessCore,
    PhysicalMemory,
    DiskImage,
    ArtifactBundle,
    EventJournal,
}

/// Where the bytes of an item were read from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Short name of the artifact or file, unique within the collection (`processes.json`).
    pub name: String,
    /// Path on the host, when the item is a file or device.
    pub path: Option<String>,
    pub device: Option<String>,
    pub pid: Option<u32>,
    pub memory_source: Option<String>,
    /// MIME type of the raw stream where it is one (`application/json`).
    pub media_type: Option<String>,
    /// Free-form facts about the source (inode, mode, mtime…), kept as the agent saw them.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// A range of the source that could not be read, and what stands in its place in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Offset in the item's raw stream.
    pub offset: u64,
    pub length: u64,
    /// Why it could not be read (the error as the OS gave it).
    pub reason: String,
    /// What was written instead: `zeros` or `omitted`.
    pub filled_with: String,
}

/// Known at the start of an item: enough for the collector to open it and for resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemHeader {
    pub item_id: String,
    pub collection_id: String,
    pub kind: ItemKind,
    pub source: Source,
    pub chunk_size: u64,
    pub acquisition_start: String,
    /// The raw length the agent expects before reading, where it knows one (a file's or a
    /// device's size, a document in memory): what progress and an ETA are measured against.
    /// Only an expectation: the manifest's `raw_len` is what was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_len: Option<u64>,
}

/// How acquisition of an item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Every byte of the source was read.
    Complete,
    /// Read to the end with gaps (listed in the manifest).
    Partial,
    /// The source went away (a process exited, a device vanished); the bytes up to then are kept.
    SourceVanished,
    /// Acquisition failed; `error` says why. The bytes read until then are kept.
    Failed,
}

/// The full description of an item, sent when its last chunk has been produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemManifest {
    #[serde(flatten)]
    pub header: ItemHeader,
    pub host: HostIdentity,
    pub acquisition_end: String,
    pub raw_len: u64,
    /// SHA-256 of the whole raw stream, as read on the host.
    pub sha256: String,
    pub chunk_count: u64,
    /// SHA-256 of each chunk's raw bytes, by index.
    pub chunk_sha256: Vec<String>,
    #[serde(default)]
    pub gaps: Vec<Gap>,
    pub status: ItemStatus,
    #[serde(default)]
    pub error: Option<String>,
    pub tool: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest lists {manifest} chunks but {received} were received")]
    ChunkCount { manifest: u64, received: u64 },
    #[error(
        "chunk {index}: manifest hash {manifest} differs from the received chunk's {received}"
    )]
    ChunkHash {
        index: u64,
        manifest: String,
        received: String,
    },
    #[error("raw length {manifest} in the manifest differs from the {received} bytes received")]
    RawLen { manifest: u64, received: u64 },
    #[error("item SHA-256 {manifest} in the manifest differs from {computed} computed over the received bytes")]
    ItemHash { manifest: String, computed: String },
    #[error("manifest is for item {manifest}, the stream was opened for {opened}")]
    ItemId { manifest: String, opened: String },
}

impl ItemManifest {
    /// Check the manifest against what was received: chunk hashes by index, total length and
    /// the SHA-256 computed over the reassembled raw stream.
    pub fn verify_against(
        &self,
        received_chunks: &[(u64, String, u64)],
        computed_sha256: &str,
    ) -> Result<(), ManifestError> {
        if self.chunk_count != received_chunks.len() as u64
            || self.chunk_sha256.len() as u64 != self.chunk_count
        {
            return Err(ManifestError::ChunkCount {
                manifest: self.chunk_count,
                received: received_chunks.len() as u64,
            });
        }
        let mut total = 0u64;
        for (i, (index, hash, raw_len)) in received_chunks.iter().enumerate() {
            let expected = &self.chunk_sha256[i];
            if *index != i as u64 || expected != hash {
                return Err(ManifestError::ChunkHash {
                    index: i as u64,
                    manifest: expected.clone(),
                    received: hash.clone(),
                });
            }
            total += raw_len;
        }
        if total != self.raw_len {
            return Err(ManifestError::RawLen {
                manifest: self.raw_len,
                received: total,
            });
        }
        if computed_sha256 != self.sha256 {
            return Err(ManifestError::ItemHash {
                manifest: self.sha256.clone(),
                computed: computed_sha256.to_string(),
            });
        }
        Ok(())
    }
}

/// The collection profiles of this protocol version: what a request may name, what an agent
/// runs, what the collector lets through.
pub const PROFILES: &[&str] = &[
    "volatile",
    "file",
    "memory",
    "full",
    "triage",
    "minimal",
    "disk",
    "last-breath",
];

/// Which of a request's targets a profile uses; a target it does not use is refused (by the
/// collector and, before sending, by the CLI) rather than silently ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProfileTakes {
    pub pid: bool,
    /// Triage of a container reads its root through /proc/PID/root.
    pub container: bool,
    pub paths: bool,
    pub devices: bool,
}

/// What `profile` takes; nothing for a profile this version does not know.
pub fn profile_takes(profile: &str) -> ProfileTakes {
    let none = ProfileTakes::default();
    match profile {
        "memory" | "full" => ProfileTakes {
            pid: true,
            container: true,
            ..none
        },
        // A container's writable layer, besides the volatile documents.
        "triage" | "minimal" | "last-breath" => ProfileTakes {
            container: true,
            ..none
        },
        "file" => ProfileTakes {
            paths: true,
            ..none
        },
        "disk" => ProfileTakes {
            devices: true,
            ..none
        },
        _ => none,
    }
}

/// What one trigger asked of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectRequest {
    pub collection_id: String,
    pub profile: String,
    pub reason: String,
    pub requested_by: String,
    /// Files to capture, for the `file` profile.
    #[serde(default)]
    pub paths: Vec<String>,
    /// A process named by the detection.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub container_id: Option<String>,
    /// Block devices to image, for the `disk` profile (`/dev/nvme1n1`).
    #[serde(default)]
    pub devices: Vec<String>,
}

/// The record an offline collection directory starts with (`collection.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    pub request: CollectRequest,
    pub host: HostIdentity,
    pub started: String,
    pub finished: String,
    /// Item ids in the order they were produced.
    pub items: Vec<String>,
    pub status: CollectionStatus,
    #[serde(default)]
    pub errors: Vec<String>,
    pub tool: String,
    /// The age X25519 recipient (`age1…`) the items of an offline collection are encrypted
    /// to: each `items/ID.cairn` is then `items/ID.cairn.age`, the age encryption of exactly
    /// the bytes the clear file would hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionStatus {
    Requested,
    Running,
    /// Every item sealed.
    Sealed,
    /// Finished, but some items failed or were partial.
    Partial,
    Failed,
}

impl CollectionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CollectionStatus::Requested => "requested",
            CollectionStatus::Running => "running",
            CollectionStatus::Sealed => "sealed",
            CollectionStatus::Partial => "partial",
            CollectionStatus::Failed => "failed",
        }
    }
}

/// `cairn-agent <version>`
pub fn tool_version(component: &str, version: &str) -> String {
    format!("{component} {version}")
}
