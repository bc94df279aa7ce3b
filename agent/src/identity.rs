//! Who this host is: the identity written into every manifest.
//!
//! The collector resolves triggers to hosts by instance id, hostname or container id, and an
//! analyst must be able to tell evidence from two boots of the same machine apart (boot id).
//! Every field is best effort; nothing here fails the collection.
//!
//! The cloud part asks the EC2 instance metadata service (IMDSv2) over plain HTTP/1.1 written
//! by hand: one PUT and one GET on a link-local address do not justify an HTTP client stack.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_protocol::manifest::{CloudIdentity, HostIdentity};

/// When to ask the instance metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMode {
    /// Only when DMI / the hypervisor says this is EC2, the way cloud-init's ds-identify does,
    /// so that hosts elsewhere never send a packet to 169.254.169.254.
    Auto,
    /// Always ask (tests, or EC2 instances whose DMI is hidden).
    Always,
    /// Never ask.
    Never,
}

/// Where and whether to ask the instance metadata service.
#[derive(Debug, Clone)]
pub struct MetadataConfig {
    /// Whether to ask at all.
    pub mode: MetadataMode,
    /// Base URL, `http://host[:port]`. Only plain HTTP: IMDS is link-local.
    pub url: String,
    /// Connect and read timeout of each request.
    pub timeout: Duration,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            mode: MetadataMode::Auto,
            url: "http://169.254.169.254".to_string(),
            timeout: Duration::from_secs(1),
        }
    }
}

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

/// Ask the instance metadata service who this instance is.
///
/// `Ok(None)` when the mode says not to ask (or `Auto` finds no sign of EC2); `Err` when it was
/// asked and did not answer usably.
pub fn fetch_cloud_identity(cfg: &MetadataConfig) -> Result<Option<CloudIdentity>, String> {
    fetch_cloud_identity_at(cfg, Path::new("/sys"))
}

fn fetch_cloud_identity_at(
    cfg: &MetadataConfig,
    sys_root: &Path,
) -> Result<Option<CloudIdentity>, String> {
    match cfg.mode {
        MetadataMode::Never => return Ok(None),
        MetadataMode::Auto if !looks_like_ec2(sys_root) => return Ok(None),
        _ => {}
    }
    let (host, port) = parse_http_url(&cfg.url)?;
    let doc_path = "/latest/dynamic/instance-identity/document";
    let token = http_request(
        &host,
        port,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
        cfg.timeout,
    );
    let doc = match token {
        Ok((200, body)) => {
            let token = String::from_utf8_lossy(&body).trim().to_string();
            http_request(
                &host,
                port,
                "GET",
                doc_path,
                &[("X-aws-ec2-metadata-token", &token)],
                cfg.timeout,
            )?
        }
        // 403: IMDS is switched off for this instance; nothing else will work.
        Ok((403, _)) => return Err(format!("{}: IMDS token request refused (403)", cfg.url)),
        // Older or restricted endpoints without IMDSv2, or a PUT answer dropped by the hop
        // limit (containers): IMDSv1 may still answer a plain GET.
        Ok(_) | Err(HttpError::NoAnswer(_)) => {
            http_request(&host, port, "GET", doc_path, &[], cfg.timeout)?
        }
        Err(e) => return Err(e.to_string()),
    };
    match doc {
        (200, body) => parse_identity_document(&body).map(Some),
        (status, _) => Err(format!(
            "{}{doc_path}: HTTP status {status}",
            cfg.url.trim_end_matches('/')
        )),
    }
}

/// Signs of EC2 in DMI and the Xen hypervisor UUID, as cloud-init's ds-identify checks them.
fn looks_like_ec2(sys_root: &Path) -> bool {
    let vendor = ["class/dmi/id/sys_vendor", "class/dmi/id/board_vendor"]
        .iter()
        .filter_map(|p| read_nonempty(&sys_root.join(p)))
        .any(|v| v.contains("Amazon"));
    let uuid = ["hypervisor/uuid", "class/dmi/id/product_uuid"]
        .iter()
        .filter_map(|p| read_nonempty(&sys_root.join(p)))
        .any(|u| u.starts_with("ec2") || u.starts_with("EC2"));
    vendor || uuid
}

fn parse_identity_document(body: &[u8]) -> Result<CloudIdentity, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("instance identity document is not JSON: {e}"))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let id = CloudIdentity {
        provider: "aws".to_string(),
        instance_id: field("instanceId"),
        region: field("region"),
        availability_zone: field("availabilityZone"),
        account_id: field("accountId"),
        instance_type: field("instanceType"),
    };
    if id.instance_id.is_none() {
        return Err("instance identity document has no instanceId".to_string());
    }
    Ok(id)
}

fn read_nonempty(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Errors of the small HTTP client.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("{0}")]
    Connect(String),
    /// Connected, but no complete answer came before the timeout.
    #[error("{0}")]
    NoAnswer(String),
    #[error("{0}")]
    Bad(String),
}

impl From<HttpError> for String {
    fn from(e: HttpError) -> Self {
        e.to_string()
    }
}

fn parse_http_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("metadata URL {url:?}: only http:// is supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.is_empty() {
        return Err(format!("metadata URL {url:?} has no host"));
    }
    let bad_port = |p: &str| format!("metadata URL {url:?}: bad port {p:?}");
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("metadata URL {url:?}: unclosed ["))?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad_port(p))?,
            None => 80,
        };
        return Ok((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse::<u16>().map_err(|_| bad_port(p))?)),
        None => Ok((authority.to_string(), 80)),
    }
}

/// Largest answer accepted: identity documents are < 1 KiB.
const MAX_RESPONSE: u64 = 64 * 1024;

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
fn http_request(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), HttpError> {
    let target = format!("{host}:{port}");
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Connect(format!("{target}: {e}")))?
        .collect();
    let mut last = format!("{target}: no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    let mut stream = stream.ok_or(HttpError::Connect(last))?;
    let io_err = |e: std::io::Error| HttpError::NoAnswer(format!("{method} {target}{path}: {e}"));
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).map_err(io_err)?;
    // The read timeout applies per read; the deadline bounds a server that trickles bytes.
    let deadline = Instant::now() + timeout;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if Instant::now() > deadline {
            return Err(HttpError::NoAnswer(format!(
                "{method} {target}{path}: timed out"
            )));
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() as u64 > MAX_RESPONSE {
                    return Err(HttpError::Bad(format!("{target}{path}: answer too large")));
                }
                if response_complete(&raw) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    parse_response(&raw).map_err(|e| HttpError::Bad(format!("{target}{path}: {e}")))
}

/// Whether the answer is complete by its Content-Length (so a server that keeps the
/// connection open despite `Connection: close` does not cost a timeout).
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| raw.len() >= end + 4 + len)
}

fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = find(raw, b"\r\n\r\n").ok_or("answer has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut len = None;
    let mut chunked = false;
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            len = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body = &raw[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else if let Some(len) = len {
        body.get(..len)
            .ok_or("answer shorter than its Content-Length")?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = find(body, b"\r\n").ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).ok_or("truncated chunk")?);
        body = body.get(size + 2..).ok_or("truncated chunk")?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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

    /// A fake IMDS on loopback answering the token PUT and the document GET.
    fn fake_imds(require_token: bool) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while find(&req, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let resp = if req.starts_with("PUT /latest/api/token ")
                    && req.contains("X-aws-ec2-metadata-token-ttl-seconds: 21600")
                {
                    if require_token {
                        "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nTOKEN-123".to_string()
                    } else {
                        "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n".to_string()
                    }
                } else if req.starts_with("GET /latest/dynamic/instance-identity/document ")
                    && (!require_token || req.contains("X-aws-ec2-metadata-token: TOKEN-123"))
                {
                    let doc = r#"{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1b","imageId":"ami-0abc","instanceId":"i-0123456789abcdef0","instanceType":"m5.large","region":"eu-west-1"}"#;
                    // Chunked, to exercise that path too.
                    format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{doc}\r\n0\r\n\r\n",
                        doc.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_string()
                };
                s.write_all(resp.as_bytes()).unwrap();
                seen.push(req);
            }
            seen
        });
        (url, h)
    }

    /// Metadata always asked for, at `url`, waiting at most `secs`.
    fn always(url: String, secs: u64) -> MetadataConfig {
        MetadataConfig {
            mode: MetadataMode::Always,
            url,
            timeout: Duration::from_secs(secs),
        }
    }

    #[test]
    fn imdsv2_identity_from_fake_server() {
        let (url, server) = fake_imds(true);
        let cfg = always(url, 2);
        let id = fetch_cloud_identity(&cfg).unwrap().unwrap();
        assert_eq!(
            id,
            CloudIdentity {
                provider: "aws".into(),
                instance_id: Some("i-0123456789abcdef0".into()),
                region: Some("eu-west-1".into()),
                availability_zone: Some("eu-west-1b".into()),
                account_id: Some("123456789012".into()),
                instance_type: Some("m5.large".into()),
            }
        );
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("PUT "));
        assert!(seen[1].starts_with("GET "));
    }

    #[test]
    fn imdsv1_fallback_when_put_not_allowed() {
        let (url, server) = fake_imds(false);
        let cfg = always(url, 2);
        let id = fetch_cloud_identity(&cfg).unwrap().unwrap();
        assert_eq!(id.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        server.join().unwrap();
    }

    #[test]
    fn unreachable_imds_fails_fast_and_host_identity_still_works() {
        // Bind then drop: the port is closed, so connect is refused at once.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = always(format!("http://127.0.0.1:{port}"), 1);
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

    #[test]
    fn auto_and_never_do_not_ask_off_ec2() {
        // This machine has no EC2 DMI. A closed port would give an error if it were asked.
        let dir = std::env::temp_dir().join(format!("cairn-dmi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = MetadataConfig {
            mode: MetadataMode::Auto,
            url: "http://127.0.0.1:9".into(),
            timeout: Duration::from_millis(200),
        };
        assert_eq!(fetch_cloud_identity_at(&cfg, &dir), Ok(None));
        let never = MetadataConfig {
            mode: MetadataMode::Never,
            ..cfg.clone()
        };
        assert_eq!(fetch_cloud_identity(&never), Ok(None));
        // With an EC2 vendor string Auto does ask (and fails on the closed port).
        std::fs::create_dir_all(dir.join("class/dmi/id")).unwrap();
        std::fs::write(dir.join("class/dmi/id/sys_vendor"), "Amazon EC2\n").unwrap();
        assert!(looks_like_ec2(&dir));
        assert!(fetch_cloud_identity_at(&cfg, &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        if !Path::new("/sys/class/dmi/id/sys_vendor").exists() {
            assert!(!looks_like_ec2(Path::new("/sys")));
        }
    }

    #[test]
    fn url_parsing() {
        assert_eq!(
            parse_http_url("http://169.254.169.254").unwrap(),
            ("169.254.169.254".into(), 80)
        );
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/").unwrap(),
            ("127.0.0.1".into(), 8080)
        );
        assert_eq!(
            parse_http_url("http://[fd00:ec2::254]:80").unwrap(),
            ("fd00:ec2::254".into(), 80)
        );
        assert!(parse_http_url("https://x").is_err());
    }
}
