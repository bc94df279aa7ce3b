//! Where this host runs in its cloud: the metadata services of EC2 (IMDSv2), Google Cloud and
//! Azure, asked from the host itself so the fleet context (issue #17) needs no cloud API
//! credentials and works in any account.
//!
//! Every answer is hostile: sizes and counts are bounded, a deadline bounds the whole visit,
//! and what could not be read is kept as `unavailable` with its reason instead of failing
//! the identity. Hosts outside a cloud never send a packet: `Auto` asks only when DMI says
//! which cloud this is, the way cloud-init's ds-identify does.

mod aws;
mod azure;
mod gcp;
pub(crate) mod http;

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_protocol::manifest::CloudIdentity;

use http::{http_request, parse_http_url, HttpError};

/// When to ask the instance metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMode {
    /// Only when DMI / the hypervisor says which cloud this is, so that hosts elsewhere never
    /// send a packet to 169.254.169.254.
    Auto,
    /// Always ask: the provider given, or each in turn (EC2, Google Cloud, Azure) until one
    /// answers (tests, or instances whose DMI is hidden).
    Always,
    /// Never ask.
    Never,
}

/// A cloud whose metadata service the agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Aws,
    Gcp,
    Azure,
}

impl Provider {
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "aws" | "ec2" => Some(Provider::Aws),
            "gcp" | "gce" | "google" => Some(Provider::Gcp),
            "azure" => Some(Provider::Azure),
            _ => None,
        }
    }
}

/// Where and whether to ask the instance metadata service.
#[derive(Debug, Clone)]
pub struct MetadataConfig {
    /// Whether to ask at all.
    pub mode: MetadataMode,
    /// Which cloud to ask; `None`: found from DMI (`Auto`) or each in turn (`Always`).
    pub provider: Option<Provider>,
    /// Base URL, `http://host[:port]`. Only plain HTTP: the services are link-local.
    pub url: String,
    /// Connect and read timeout of each request.
    pub timeout: Duration,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            mode: MetadataMode::Auto,
            provider: None,
            url: "http://169.254.169.254".to_string(),
            timeout: Duration::from_secs(1),
        }
    }
}

/// The whole visit to a metadata service may take at most this many request timeouts: a
/// service that answers each request just before its timeout cannot hold the hello for
/// minutes.
const BUDGET_TIMEOUTS: u32 = 5;

/// Ask the instance metadata service who this instance is and where it sits.
///
/// `Ok(None)` when the mode says not to ask (or `Auto` finds no sign of a cloud); `Err` when
/// it was asked and did not answer usably. Parts that could not be read after the instance
/// was identified are in [`CloudIdentity::unavailable`].
pub fn fetch_cloud_identity(cfg: &MetadataConfig) -> Result<Option<CloudIdentity>, String> {
    fetch_cloud_identity_at(cfg, Path::new("/sys"))
}

pub(crate) fn fetch_cloud_identity_at(
    cfg: &MetadataConfig,
    sys_root: &Path,
) -> Result<Option<CloudIdentity>, String> {
    let providers: Vec<Provider> = match (cfg.mode, cfg.provider) {
        (MetadataMode::Never, _) => return Ok(None),
        (_, Some(p)) => vec![p],
        (MetadataMode::Auto, None) => match detect(sys_root) {
            Some(p) => vec![p],
            None => return Ok(None),
        },
        (MetadataMode::Always, None) => vec![Provider::Aws, Provider::Gcp, Provider::Azure],
    };
    let (host, port) = parse_http_url(&cfg.url)?;
    let mut errors = Vec::new();
    for p in providers {
        let s = Session::new(&host, port, cfg.timeout);
        let r = match p {
            Provider::Aws => aws::fetch(&s),
            Provider::Gcp => gcp::fetch(&s),
            Provider::Azure => azure::fetch(&s),
        };
        match r {
            Ok(id) => return Ok(Some(id)),
            Err(e) => errors.push(format!("{}: {e}", p.as_str())),
        }
    }
    Err(errors.join("; "))
}

/// Which cloud DMI and the hypervisor say this is.
pub(crate) fn detect(sys_root: &Path) -> Option<Provider> {
    let read = |p: &str| read_nonempty(&sys_root.join(p)).unwrap_or_default();
    let vendor = read("class/dmi/id/sys_vendor");
    let board = read("class/dmi/id/board_vendor");
    let product = read("class/dmi/id/product_name");
    let uuid_ec2 = ["hypervisor/uuid", "class/dmi/id/product_uuid"]
        .iter()
        .map(|p| read(p))
        .any(|u| u.starts_with("ec2") || u.starts_with("EC2"));
    if vendor.contains("Amazon") || board.contains("Amazon") || uuid_ec2 {
        return Some(Provider::Aws);
    }
    if vendor.contains("Google") || product.contains("Google Compute Engine") {
        return Some(Provider::Gcp);
    }
    // Azure's fixed chassis asset tag, as cloud-init checks it.
    if read("class/dmi/id/chassis_asset_tag") == "7783-7084-3265-9085-8269-3286-77" {
        return Some(Provider::Azure);
    }
    None
}

fn read_nonempty(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// One visit to a metadata service: the address, the per-request timeout and the deadline
/// of the whole visit.
pub(crate) struct Session<'a> {
    host: &'a str,
    port: u16,
    timeout: Duration,
    deadline: Instant,
}

impl<'a> Session<'a> {
    fn new(host: &'a str, port: u16, timeout: Duration) -> Session<'a> {
        Session {
            host,
            port,
            timeout,
            deadline: Instant::now() + timeout * BUDGET_TIMEOUTS,
        }
    }

    /// One request; an error once the visit's deadline has passed.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::NoAnswer(format!(
                "{path}: not asked, the metadata service used up its time ({:?})",
                self.timeout * BUDGET_TIMEOUTS
            )));
        }
        http_request(
            self.host,
            self.port,
            method,
            path,
            headers,
            self.timeout.min(left),
        )
    }

    /// A GET whose 200 answer is text: `Ok(None)` on 404 (the service does not have it).
    fn text(&self, path: &str, headers: &[(&str, &str)]) -> Result<Option<String>, String> {
        match self.request("GET", path, headers) {
            Ok((200, body)) => String::from_utf8(body)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| format!("{path}: answer is not UTF-8")),
            Ok((404, _)) => Ok(None),
            Ok((status, _)) => Err(format!("{path}: HTTP status {status}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Bounds on what one identity keeps of a metadata service's answers.
pub(crate) const MAX_INTERFACES: usize = 16;
pub(crate) const MAX_ADDRESSES: usize = 64;
pub(crate) const MAX_TAGS: usize = 64;
pub(crate) const MAX_VALUE: usize = 1024;

/// A value kept only if it is short and printable: a metadata answer is not trusted to be
/// either.
pub(crate) fn clean(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty() && v.len() <= MAX_VALUE && !v.chars().any(char::is_control))
        .then(|| v.to_string())
}

/// The non-empty lines of a listing, each cleaned, at most `max`.
pub(crate) fn lines(v: &str, max: usize) -> Vec<String> {
    v.lines().filter_map(clean).take(max).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod stand_in;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::stand_in::{StandIn, Trouble};
    use super::*;

    fn always(url: String, provider: Option<Provider>) -> MetadataConfig {
        MetadataConfig {
            mode: MetadataMode::Always,
            provider,
            url,
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn dmi_names_the_cloud() {
        let dir = tempfile::tempdir().unwrap();
        let dmi = dir.path().join("class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        assert_eq!(detect(dir.path()), None);
        std::fs::write(dmi.join("product_name"), "Google Compute Engine\n").unwrap();
        assert_eq!(detect(dir.path()), Some(Provider::Gcp));
        std::fs::remove_file(dmi.join("product_name")).unwrap();
        std::fs::write(
            dmi.join("chassis_asset_tag"),
            "7783-7084-3265-9085-8269-3286-77\n",
        )
        .unwrap();
        assert_eq!(detect(dir.path()), Some(Provider::Azure));
        std::fs::write(dmi.join("sys_vendor"), "Amazon EC2\n").unwrap();
        assert_eq!(detect(dir.path()), Some(Provider::Aws));
    }

    #[test]
    fn auto_and_never_do_not_ask_outside_a_cloud() {
        let dir = tempfile::tempdir().unwrap();
        // A closed port: asking would be an error, not `Ok(None)`.
        let cfg = MetadataConfig {
            mode: MetadataMode::Auto,
            url: "http://127.0.0.1:9".into(),
            timeout: Duration::from_millis(200),
            provider: None,
        };
        assert_eq!(fetch_cloud_identity_at(&cfg, dir.path()), Ok(None));
        let never = MetadataConfig {
            mode: MetadataMode::Never,
            provider: Some(Provider::Aws),
            ..cfg.clone()
        };
        assert_eq!(fetch_cloud_identity_at(&never, dir.path()), Ok(None));
        std::fs::create_dir_all(dir.path().join("class/dmi/id")).unwrap();
        std::fs::write(dir.path().join("class/dmi/id/sys_vendor"), "Amazon EC2\n").unwrap();
        assert!(fetch_cloud_identity_at(&cfg, dir.path()).is_err());
    }

    #[test]
    fn always_finds_the_cloud_that_answers() {
        for (standin, provider) in [
            (StandIn::gcp(Trouble::None), "gcp"),
            (StandIn::azure(Trouble::None), "azure"),
            (StandIn::aws(Trouble::None), "aws"),
        ] {
            let id = fetch_cloud_identity(&always(standin.url(), None))
                .unwrap()
                .unwrap();
            assert_eq!(id.provider, provider);
            assert!(id.instance_id.is_some(), "{provider}: {id:?}");
        }
    }

    #[test]
    fn a_service_that_hangs_is_bounded_by_the_visit_deadline() {
        let s = StandIn::aws(Trouble::Hang);
        let cfg = always(s.url(), Some(Provider::Aws));
        let t = Instant::now();
        assert!(fetch_cloud_identity(&cfg).is_err());
        assert!(
            t.elapsed() < cfg.timeout * (BUDGET_TIMEOUTS + 2),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for p in [Provider::Aws, Provider::Gcp, Provider::Azure] {
            let s = StandIn::with_trouble(p, Trouble::Garbage);
            let r = fetch_cloud_identity(&always(s.url(), Some(p)));
            assert!(r.is_err(), "{p:?}: {r:?}");
        }
    }

    #[test]
    fn values_are_bounded_and_printable() {
        assert_eq!(clean("  web-7 \n").as_deref(), Some("web-7"));
        assert_eq!(clean(""), None);
        assert_eq!(clean("a\u{1b}[31mb"), None);
        assert_eq!(clean(&"x".repeat(MAX_VALUE + 1)), None);
        assert_eq!(lines("a\n\nb\nc\n", 2), vec!["a", "b"]);
    }
}
