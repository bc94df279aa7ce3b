//! Who this host is: the identity written into every manifest.
//!
//! The collector resolves triggers to hosts by instance id, hostname or container id, and an
//! analyst must be able to tell evidence from two boots of the same machine apart (boot id).
//! Every field is best effort; nothing here fails the collection. Where the host runs in its
//! cloud comes from [`crate::cloud`].

use std::path::Path;

use cairn_protocol::manifest::HostIdentity;

use crate::cloud::fetch_cloud_identity_at;
pub use crate::cloud::{fetch_cloud_identity, MetadataConfig, MetadataMode, Provider};

/// The identity of the host the agent runs on, read from `/`, `/proc` and `/sys`.
pub fn host_identity(cfg: &MetadataConfig) -> HostIdentity {
    let (id, cloud_err) =
        host_identity_at(cfg, Path::new("/proc"), Path::new("/sys"), Path::new("/"));
    if let Some(e) = cloud_err {
        tracing::debug!("cloud identity not available: {e}");
    }
    id
}

/// As [`host_identity`], for an agent whose host's root file system is at `host_root` (`/host`
/// in a container): /proc and /etc are read inside it.
pub fn host_identity_in(cfg: &MetadataConfig, host_root: &Path) -> HostIdentity {
    if host_root == Path::new("/") {
        return host_identity(cfg);
    }
    host_identity_at(cfg, &host_root.join("proc"), Path::new("/sys"), host_root).0
}

/// As [`host_identity`], with the host's procfs, sysfs and root file system mounted elsewhere
/// (an agent in a container sees the host at `/host`). Also returns why the cloud identity
/// is missing when the metadata service was asked and failed.
pub fn host_identity_at(
    cfg: &MetadataConfig,
    proc_root: &Path,
    sys_root: &Path,
    host_root: &Path,
) -> (HostIdentity, Option<String>) {
    let hostname = nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let machine_id = ["etc/machine-id", "var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| read_nonempty(&host_root.join(p)));
    let boot_id = read_nonempty(&proc_root.join("sys/kernel/random/boot_id"));
    let uts = nix::sys::utsname::uname().ok();
    let text = |s: &std::ffi::OsStr| Some(s.to_string_lossy().into_owned());
    let uptime_seconds = read_nonempty(&proc_root.join("uptime"))
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    let container_id = std::fs::read_to_string(proc_root.join("self/cgroup"))
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| container_from_cgroup(l).map(|c| c.id))
        })
        .or_else(|| {
            std::fs::read_to_string(proc_root.join("self/mountinfo"))
                .ok()
                .and_then(|m| docker_id_from_mountinfo(&m))
        });
    let (cloud, cloud_err) = match fetch_cloud_identity_at(cfg, sys_root) {
        Ok(c) => (c, None),
        Err(e) => (None, Some(e)),
    };
    let id = HostIdentity {
        hostname,
        machine_id,
        boot_id,
        kernel_release: uts.as_ref().and_then(|u| text(u.release())),
        kernel_version: uts.as_ref().and_then(|u| text(u.version())),
        arch: uts.as_ref().and_then(|u| text(u.machine())),
        uptime_seconds,
        cloud,
        container_id,
        ..Default::default()
    };
    (id, cloud_err)
}

fn read_nonempty(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// A container found in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The 64-hex container id.
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`, or `unknown` for a bare id (cgroupfs driver).
    pub runtime: &'static str,
}

/// The container of a cgroup path (or a whole `/proc/PID/cgroup` line), if any.
///
/// Knows the systemd driver's `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope` and the cgroupfs driver's `/docker/<id>` and
/// `/kubepods/.../pod<uid>/<id>`. The innermost match wins (nested containers).
pub fn container_from_cgroup(path: &str) -> Option<ContainerRef> {
    // A `/proc/PID/cgroup` line is `hierarchy:controllers:path`; the path may hold colons.
    let path = match path.splitn(3, ':').collect::<Vec<_>>()[..] {
        [h, _, p] if h.chars().all(|c| c.is_ascii_digit()) => p,
        _ => path,
    };
    const PREFIXES: [(&str, &str); 5] = [
        ("cri-containerd-", "containerd"),
        ("containerd-", "containerd"),
        ("docker-", "docker"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    let segments: Vec<&str> = path.split('/').collect();
    for (i, seg) in segments.iter().enumerate().rev() {
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let found = PREFIXES
            .iter()
            .find_map(|(p, rt)| seg.strip_prefix(p).map(|rest| (rest, *rt)));
        let (candidate, runtime) = match found {
            Some(f) => f,
            None => {
                // cgroupfs driver: the parent directory names the runtime.
                let parent = if i > 0 { segments[i - 1] } else { "" };
                let rt = match parent {
                    "docker" => "docker",
                    "libpod_parent" => "podman",
                    _ => "unknown",
                };
                (seg, rt)
            }
        };
        if is_hex64(candidate) {
            return Some(ContainerRef {
                id: candidate.to_ascii_lowercase(),
                runtime,
            });
        }
    }
    None
}

/// The Kubernetes pod UID of a cgroup path under `kubepods`, with dashes
/// (`kubepods-besteffort-pod<uid_with_underscores>.slice` or `/kubepods/burstable/pod<uid>`).
pub fn pod_uid_from_cgroup(path: &str) -> Option<String> {
    if !path.contains("kubepods") {
        return None;
    }
    path.split('/').rev().find_map(|seg| {
        let at = seg.rfind("pod")?;
        let uid = seg[at + 3..]
            .strip_suffix(".slice")
            .unwrap_or(&seg[at + 3..])
            .replace('_', "-");
        let ok = uid.len() == 36
            && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            && uid.matches('-').count() == 4;
        ok.then_some(uid)
    })
}

/// Docker bind-mounts `/var/lib/docker/containers/<id>/hostname` etc. into its containers;
/// with cgroup namespaces `/proc/self/cgroup` shows only `/`, but the mount source remains.
fn docker_id_from_mountinfo(mountinfo: &str) -> Option<String> {
    crate::mountinfo::parse(mountinfo).find_map(|m| {
        let root = m.root.as_str();
        let rest = &root[root.find("/containers/")? + "/containers/".len()..];
        let id = rest.split('/').next()?;
        is_hex64(id).then(|| id.to_ascii_lowercase())
    })
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    const ID: &str = "3f1c8e2a9b7d4c6e5f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a";

    #[test]
    fn container_ids_from_cgroup_paths() {
        let cases = [
            (format!("0::/system.slice/docker-{ID}.scope"), "docker"),
            (format!("12:memory:/docker/{ID}"), "docker"),
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{ID}.scope"),
                "containerd",
            ),
            (
                format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/crio-{ID}.scope"),
                "cri-o",
            ),
            (format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"), "podman"),
            (format!("4:cpu:/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{ID}"), "unknown"),
        ];
        for (path, runtime) in &cases {
            let c = container_from_cgroup(path).unwrap();
            assert_eq!(c.id, ID, "{path}");
            assert_eq!(c.runtime, *runtime, "{path}");
        }
        assert_eq!(
            pod_uid_from_cgroup(&cases[2].0).as_deref(),
            Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        assert_eq!(
            pod_uid_from_cgroup(&cases[5].0).as_deref(),
            Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        assert_eq!(pod_uid_from_cgroup(&cases[0].0), None);
        // A plain host, a conmon scope, a short id: no container.
        for p in [
            "0::/",
            "0::/user.slice/user-0.slice/session-3.scope",
            "0::/machine.slice/libpod-conmon-abc.scope",
            "0::/system.slice/docker-abc123.scope",
        ] {
            assert_eq!(container_from_cgroup(p), None, "{p}");
        }
        let mi = format!("600 590 253:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/vda1 rw");
        assert_eq!(docker_id_from_mountinfo(&mi).as_deref(), Some(ID));
    }

    #[test]
    fn unreachable_imds_fails_fast_and_host_identity_still_works() {
        // Bind then drop: the port is closed, so connect is refused at once.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = MetadataConfig {
            mode: MetadataMode::Always,
            provider: Some(Provider::Aws),
            url: format!("http://127.0.0.1:{port}"),
            timeout: Duration::from_secs(1),
        };
        let t = Instant::now();
        assert!(fetch_cloud_identity(&cfg).is_err());
        assert!(t.elapsed() < Duration::from_secs(3));
        let h = host_identity(&cfg);
        assert!(!h.hostname.is_empty());
        assert_eq!(
            h.hostname,
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
        );
        assert_eq!(
            h.boot_id.as_deref(),
            Some(
                std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .unwrap()
                    .trim()
            )
        );
        assert!(h.kernel_release.is_some() && h.arch.is_some());
        assert!(h.uptime_seconds.unwrap() > 0.0);
        assert!(h.cloud.is_none());
    }
}
