//! The containers running on this host, reported with each heartbeat.
//!
//! Detection systems name containers and pods, not hosts: Falco sends a 12-character container
//! id and a pod name, GuardDuty an EKS workload. The collector can only find the node that
//! runs them if the agent says what it runs. The container id comes from each process's cgroup
//! path; the pod name from the container's `HOSTNAME` (Kubernetes sets it to the pod name);
//! the namespace from the service-account mount inside the container's root, when there is one.

use cairn_protocol::wire::ContainerInfo;
use std::collections::BTreeMap;
use std::path::Path;

/// Most containers reported: a heartbeat stays small even on a crowded node.
const MAX_CONTAINERS: usize = 1024;

/// Scan `proc_root` (normally `/proc`) for processes in containers; one entry per container.
/// Processes that vanish or cannot be read are skipped: this is a best-effort inventory.
pub fn running_containers(proc_root: &Path) -> Vec<ContainerInfo> {
    let mut found: BTreeMap<String, ContainerInfo> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let pdir = proc_root.join(pid);
        let Ok(cgroup) = std::fs::read_to_string(pdir.join("cgroup")) else {
            continue;
        };
        let Some((c, line)) = cgroup
            .lines()
            .find_map(|l| crate::identity::container_from_cgroup(l).map(|c| (c, l.to_string())))
        else {
            continue;
        };
        let entry = found.entry(c.id.clone()).or_insert_with(|| ContainerInfo {
            id: c.id.clone(),
            runtime: c.runtime.to_string(),
            pod_uid: crate::identity::pod_uid_from_cgroup(&line),
            ..Default::default()
        });
        if entry.pod_uid.is_some() && entry.pod_name.is_none() {
            entry.pod_name = hostname_env(&pdir.join("environ"));
        }
        if entry.pod_uid.is_some() && entry.pod_namespace.is_none() {
            // `/var/run` is often a symlink to `/run` in the image, and an absolute symlink
            // under /proc/PID/root would resolve in our root, not the container's: try both.
            entry.pod_namespace = ["root/run", "root/var/run"].iter().find_map(|run| {
                std::fs::read_to_string(
                    pdir.join(run)
                        .join("secrets/kubernetes.io/serviceaccount/namespace"),
                )
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
            });
        }
        if found.len() >= MAX_CONTAINERS {
            break;
        }
    }
    found.into_values().collect()
}

/// Where one container's processes are in the cgroup v2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// The full 64-hex id.
    pub id: String,
    /// A process found in it.
    pub pid: u32,
    /// The container's cgroup, relative to the cgroup v2 root (`/system.slice/docker-….scope`):
    /// the path of that process cut after the segment that names the container, so that a
    /// process in a sub-cgroup of the container still names the whole container.
    pub path: String,
}

/// The cgroup of the one running container whose id starts with `prefix` (case-insensitive),
/// from the `0::` (cgroup v2) line of its processes' `/proc/PID/cgroup`.
pub fn cgroup_of(proc_root: &Path, prefix: &str) -> Result<ContainerCgroup, String> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("container id {prefix:?}: hex digits"));
    }
    let dir = std::fs::read_dir(proc_root)
        .map_err(|e| format!("cannot list {}: {e}", proc_root.display()))?;
    let mut found: BTreeMap<String, ContainerCgroup> = BTreeMap::new();
    let mut v1_only = false;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cgroup) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        let Some(c) = cgroup
            .lines()
            .find_map(crate::identity::container_from_cgroup)
            .filter(|c| c.id.starts_with(&prefix))
        else {
            continue;
        };
        let Some(v2) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) else {
            v1_only = true;
            continue;
        };
        let segments: Vec<&str> = v2.split('/').collect();
        let Some(at) = segments.iter().rposition(|seg| {
            crate::identity::container_from_cgroup(seg).is_some_and(|x| x.id == c.id)
        }) else {
            continue;
        };
        found
            .entry(c.id.clone())
            .or_insert_with(|| ContainerCgroup {
                id: c.id.clone(),
                pid,
                path: segments[..=at].join("/"),
            });
        if found.len() > 1 {
            let ids: Vec<&str> = found.keys().map(|k| &k[..12]).collect();
            return Err(format!(
                "container id {prefix} is ambiguous: {}; give more of it",
                ids.join(", ")
            ));
        }
    }
    match found.into_values().next() {
        Some(c) => Ok(c),
        None if v1_only => Err(format!(
            "container {prefix} runs in cgroup v1 only: containment needs cgroup v2"
        )),
        None => Err(format!("no running process belongs to container {prefix}")),
    }
}

/// `HOSTNAME` from a `/proc/PID/environ` (NUL-separated `KEY=value`).
fn hostname_env(path: &Path) -> Option<String> {
    let env = std::fs::read(path).ok()?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"HOSTNAME="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_pod_container_in_a_fake_proc() {
        let id = "4c01db0b339c0b5a0d0a3b2e1f5c7d9e8a6b4c2d0e1f3a5b7c9d1e3f5a7b9c1d";
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("4242");
        std::fs::create_dir_all(p.join("root/var/run/secrets/kubernetes.io/serviceaccount"))
            .unwrap();
        std::fs::write(
            p.join("cgroup"),
            format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{id}.scope\n"),
        )
        .unwrap();
        std::fs::write(p.join("environ"), b"PATH=/bin\0HOSTNAME=web-7d4b9c-x2kqp\0").unwrap();
        std::fs::write(
            p.join("root/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
            "payments",
        )
        .unwrap();
        // A host process: no container.
        std::fs::create_dir_all(dir.path().join("1")).unwrap();
        std::fs::write(dir.path().join("1/cgroup"), "0::/init.scope\n").unwrap();
        let found = running_containers(dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].id, id);
        assert_eq!(found[0].runtime, "containerd");
        assert_eq!(
            found[0].pod_uid.as_deref(),
            Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        assert_eq!(found[0].pod_name.as_deref(), Some("web-7d4b9c-x2kqp"));
        assert_eq!(found[0].pod_namespace.as_deref(), Some("payments"));
    }

    #[test]
    fn a_container_prefix_names_its_whole_cgroup() {
        let a = "4c01db0b339c0b5a0d0a3b2e1f5c7d9e8a6b4c2d0e1f3a5b7c9d1e3f5a7b9c1d";
        let b = "4c01ffff339c0b5a0d0a3b2e1f5c7d9e8a6b4c2d0e1f3a5b7c9d1e3f5a7b9c1d";
        let dir = tempfile::tempdir().unwrap();
        let put = |pid: u32, text: String| {
            std::fs::create_dir_all(dir.path().join(pid.to_string())).unwrap();
            std::fs::write(dir.path().join(format!("{pid}/cgroup")), text).unwrap();
        };
        // Hybrid hierarchy: v1 lines, then the v2 one; the process sits in a sub-cgroup.
        put(
            10,
            format!(
                "4:memory:/system.slice/docker-{a}.scope\n0::/system.slice/docker-{a}.scope/init\n"
            ),
        );
        put(11, format!("0::/kubepods/besteffort/pod1/{b}\n"));
        put(12, "0::/init.scope\n".into());
        let c = cgroup_of(dir.path(), "4C01DB0B").unwrap();
        assert_eq!(c.id, a);
        assert_eq!(c.pid, 10);
        assert_eq!(c.path, format!("/system.slice/docker-{a}.scope"));
        assert_eq!(
            cgroup_of(dir.path(), "4c01ff").unwrap().path,
            format!("/kubepods/besteffort/pod1/{b}")
        );
        assert!(cgroup_of(dir.path(), "4c01")
            .unwrap_err()
            .contains("ambiguous"));
        assert!(cgroup_of(dir.path(), "dead")
            .unwrap_err()
            .contains("no running"));
    }
}
