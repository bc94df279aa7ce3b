//! What a request asks for, checked before a command is sent: a profile the agent knows, only
//! the fields that profile uses, a reason for the custody log, paths and devices within bounds.

use crate::error::{Error, Result};
use cairn_protocol::manifest::{CollectRequest, PROFILES};

/// Most files one request may name (each is an item, opened a few at a time on the host).
pub const MAX_PATHS: usize = 4096;
/// Most block devices one request may image.
pub const MAX_DEVICES: usize = 16;

/// Paths and devices as a request names them: absolute, without NUL, within the limits;
/// devices under `/dev/`. The agent checks again what they are when it opens them.
pub fn check_paths(paths: &[String], devices: &[String]) -> Result<()> {
    if paths.len() > MAX_PATHS {
        return Err(Error::invalid(format!(
            "{} paths in one request; at most {MAX_PATHS} (split the request, or use a triage profile)",
            paths.len()
        )));
    }
    if devices.len() > MAX_DEVICES {
        return Err(Error::invalid(format!(
            "{} devices in one request; at most {MAX_DEVICES}",
            devices.len()
        )));
    }
    for p in paths {
        if !p.starts_with('/') || p.contains('\0') {
            return Err(Error::invalid(format!(
                "path {p:?} is not absolute: name files from the host's root, e.g. /var/log/auth.log"
            )));
        }
    }
    for d in devices {
        if !d.starts_with("/dev/") || d.contains('\0') || d.split('/').any(|c| c == "..") {
            return Err(Error::invalid(format!(
                "device {d:?} is not a device path: name a block device under /dev/, e.g. /dev/nvme1n1"
            )));
        }
    }
    Ok(())
}

/// What a request asks for, before it has an id.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub profile: String,
    pub reason: String,
    pub paths: Vec<String>,
    pub pid: Option<u32>,
    pub container_id: Option<String>,
    pub devices: Vec<String>,
}

impl Ask {
    /// Refuse what the agent could not run, before a command is sent.
    pub fn check(&self) -> Result<()> {
        if !PROFILES.contains(&self.profile.as_str()) {
            return Err(Error::invalid(format!(
                "unknown profile {:?}; known profiles: {}",
                self.profile,
                PROFILES.join(", ")
            )));
        }
        // A field a profile would ignore is refused, so nobody believes a flag did something
        // it did not.
        let takes = cairn_protocol::manifest::profile_takes(&self.profile);
        let ignored = |what: &str, flag: &str, hint: &str| {
            Err(Error::invalid(format!(
                "profile {:?} takes no {what} ({flag}); {hint}",
                self.profile
            )))
        };
        if self.pid.is_some() && !takes.pid {
            let hint = if takes.container {
                "triage a container with --container"
            } else {
                "a process's memory is the memory or full profile"
            };
            return ignored("\"pid\"", "--pid", hint);
        }
        if self.container_id.is_some() && !takes.container {
            return ignored(
                "\"container_id\"",
                "--container",
                "a container's memory is the memory or full profile, its files triage",
            );
        }
        if !self.paths.is_empty() && !takes.paths {
            return ignored("\"paths\"", "--path", "files are the file profile");
        }
        if !self.devices.is_empty() && !takes.devices {
            return ignored(
                "\"devices\"",
                "--device",
                "block devices are the disk profile",
            );
        }
        if self.profile == "file" && self.paths.is_empty() {
            return Err(Error::invalid(
                "profile \"file\" needs at least one entry in \"paths\" (--path FILE)",
            ));
        }
        if self.profile == "memory" && self.pid.is_none() && self.container_id.is_none() {
            return Err(Error::invalid(
                "profile \"memory\" needs \"pid\" (--pid) or \"container_id\" (--container): the process (and its ancestors) or container to capture",
            ));
        }
        if self.profile == "disk" && self.devices.is_empty() {
            return Err(Error::invalid(
                "profile \"disk\" needs at least one entry in \"devices\" (--device /dev/nvme1n1)",
            ));
        }
        if self.reason.trim().is_empty() {
            return Err(Error::invalid(
                "\"reason\" (--reason) must say why evidence is collected: it goes into the custody log",
            ));
        }
        check_paths(&self.paths, &self.devices)
    }

    /// The request as the agent receives it, under a new collection id.
    pub fn into_request(self, requested_by: String) -> CollectRequest {
        CollectRequest {
            collection_id: uuid::Uuid::new_v4().to_string(),
            profile: self.profile,
            reason: self.reason,
            requested_by,
            paths: self.paths,
            pid: self.pid,
            container_id: self.container_id,
            devices: self.devices,
        }
    }
}
