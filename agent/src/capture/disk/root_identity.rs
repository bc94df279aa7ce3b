//! Whose files a root directory holds: `collect --root /mnt/image` files its evidence under
//! the image's host, named by the image's own files, not under the machine that reads them.
//!
//! The image is hostile: every file is opened inside the root (no link leads out), read to a
//! small bound, and kept only if it looks like what it claims to be.

use super::walk;
use cairn_protocol::manifest::{CloudIdentity, CollectedBy, HostIdentity};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RootIdentityError {
    #[error("cannot open the root {root}: {error}")]
    Open { root: String, error: std::io::Error },
    #[error("cannot tell which host {root} belongs to: {why}; name it with --host NAME")]
    Unnamed { root: String, why: String },
    #[error("--host {0:?} is not a host name (letters, digits, '.', '-', '_', at most 253)")]
    BadName(String),
}

/// The identity of the system whose root is `root`: its `etc/hostname` (or `name`, given by
/// the responder), `etc/machine-id`, and cloud-init's instance id; `reader` is the machine
/// running the collection, recorded as `collected_by`. Nothing of the reader's kernel, boot
/// or uptime is claimed for the image.
pub fn identify(
    root: &Path,
    name: Option<&str>,
    reader: &HostIdentity,
) -> Result<HostIdentity, RootIdentityError> {
    let shown = root.display().to_string();
    let fd: OwnedFd = std::fs::File::open(root)
        .map_err(|error| RootIdentityError::Open {
            root: shown.clone(),
            error,
        })?
        .into();
    let fd = fd.as_fd();
    let (hostname, hostname_from) = match name {
        Some(n) if is_host_name(n) => (n.to_string(), "--host".to_string()),
        Some(n) => return Err(RootIdentityError::BadName(n.to_string())),
        None => {
            let found = ["etc/hostname", "etc/HOSTNAME"].iter().find_map(|p| {
                let text = read_small(fd, p)?;
                let first = text.lines().next()?.trim().to_string();
                is_host_name(&first).then(|| (first, p.to_string()))
            });
            found.ok_or_else(|| RootIdentityError::Unnamed {
                root: shown.clone(),
                why: "it has no etc/hostname naming a host".into(),
            })?
        }
    };
    let machine_id = ["etc/machine-id", "var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| read_small(fd, p).map(|t| t.trim().to_string()))
        .filter(|m| m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit()));
    let cloud = read_small(fd, "var/lib/cloud/data/instance-id")
        .map(|t| t.trim().to_string())
        .filter(|i| is_instance_id(i))
        .map(|i| CloudIdentity {
            provider: if looks_like_ec2_instance(&i) {
                "aws".into()
            } else {
                "cloud-init".into()
            },
            instance_id: Some(i),
            ..Default::default()
        });
    Ok(HostIdentity {
        hostname,
        machine_id,
        cloud,
        source_root: Some(shown),
        hostname_from: Some(hostname_from),
        collected_by: Some(CollectedBy {
            hostname: reader.hostname.clone(),
            machine_id: reader.machine_id.clone(),
            boot_id: reader.boot_id.clone(),
        }),
        ..Default::default()
    })
}

/// The text of `rel` inside the root, when it is a regular file of at most 4 KiB reached
/// without leaving the root.
fn read_small(root: BorrowedFd<'_>, rel: &str) -> Option<String> {
    let mut parts: Vec<Vec<u8>> = rel.split('/').map(|c| c.as_bytes().to_vec()).collect();
    let name = parts.pop()?;
    let dir = walk::open_dir_in_root(root, &parts).ok()?;
    let f = walk::open_file_at(dir.as_fd(), &name).ok()?;
    let mut buf = Vec::new();
    f.take(4097).read_to_end(&mut buf).ok()?;
    if buf.len() > 4096 {
        return None;
    }
    String::from_utf8(buf).ok()
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

fn is_instance_id(s: &str) -> bool {
    // cloud-init's placeholder when no datasource named the instance.
    s != "iid-datasource-none"
        && !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `i-` and 8 or 17 hexadecimal digits: what EC2 names its instances.
fn looks_like_ec2_instance(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn reader() -> HostIdentity {
        HostIdentity {
            hostname: "workstation".into(),
            machine_id: Some("f".repeat(32)),
            boot_id: Some("boot".into()),
            kernel_release: Some("6.18".into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_image_is_named_by_its_own_files() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("var/lib/cloud/data")).unwrap();
        std::fs::write(r.join("etc/hostname"), "web-7\n").unwrap();
        std::fs::write(r.join("etc/machine-id"), format!("{}\n", "a".repeat(32))).unwrap();
        std::fs::write(
            r.join("var/lib/cloud/data/instance-id"),
            "i-0123456789abcdef0\n",
        )
        .unwrap();
        let id = identify(r, None, &reader()).unwrap();
        assert_eq!(id.hostname, "web-7");
        assert_eq!(id.hostname_from.as_deref(), Some("etc/hostname"));
        assert_eq!(id.machine_id, Some("a".repeat(32)));
        assert_eq!(id.instance_id(), Some("i-0123456789abcdef0"));
        assert_eq!(id.cloud.as_ref().unwrap().provider, "aws");
        assert_eq!(id.source_root, Some(r.display().to_string()));
        assert_eq!(id.collected_by.as_ref().unwrap().hostname, "workstation");
        // Nothing of the reader's own system is claimed for the image.
        assert_eq!(id.kernel_release, None);
        assert_eq!(id.boot_id, None);

        let named = identify(r, Some("web-7-restored"), &reader()).unwrap();
        assert_eq!(named.hostname, "web-7-restored");
        assert_eq!(named.hostname_from.as_deref(), Some("--host"));
        assert_eq!(named.machine_id, Some("a".repeat(32)));
    }

    #[test]
    fn hostile_or_missing_names_are_refused_with_what_to_do() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "not-the-image\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        // A link out of the image is not followed; a machine id that is not one is dropped.
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("etc/hostname")).unwrap();
        std::fs::write(r.join("etc/machine-id"), "uninitialized\n").unwrap();
        let e = identify(r, None, &reader()).unwrap_err().to_string();
        assert!(
            e.contains("--host NAME") && e.contains("etc/hostname"),
            "{e}"
        );
        let id = identify(r, Some("ghost"), &reader()).unwrap();
        assert_eq!(id.machine_id, None);
        let e = identify(r, Some("a b/../c"), &reader())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--host"), "{e}");
        std::fs::remove_file(r.join("etc/hostname")).unwrap();
        std::fs::write(r.join("etc/hostname"), "x".repeat(10_000)).unwrap();
        assert!(identify(r, None, &reader()).is_err());
    }
}
