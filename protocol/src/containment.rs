//! Containment: what the collector asks an agent to do to a host, a container or a process
//! tree (isolate, release, freeze, thaw, kill, mark for a last-breath collection), and what
//! the agent says it enforced.
//!
//! Pure: the allow-list is parsed and checked here, once, by both sides, so that what the
//! collector records in custody is exactly what the agent enforces.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Most allow-list entries one isolation may carry (each is a rule in the kernel).
pub const MAX_ALLOW: usize = 64;
/// Longest reason kept.
pub const MAX_REASON: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Isolate,
    Release,
    Freeze,
    Thaw,
    Kill,
    /// Mark a host or a container for a last-breath collection: when the agent receives the
    /// host's shutdown (SIGTERM) or sees the container exit, it asks the collector for a
    /// bounded `last-breath` collection and sends it before the evidence disappears.
    MarkLastBreath,
    UnmarkLastBreath,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Isolate => "isolate",
            Action::Release => "release",
            Action::Freeze => "freeze",
            Action::Thaw => "thaw",
            Action::Kill => "kill",
            Action::MarkLastBreath => "mark_last_breath",
            Action::UnmarkLastBreath => "unmark_last_breath",
        }
    }
}

/// What an action applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The whole host (its network namespace).
    Host,
    /// One container or pod, by its container id (or a unique prefix of it): its cgroup.
    Container { id: String },
    /// A process and every descendant (freeze, thaw, kill).
    Process { pid: u32 },
}

impl Target {
    /// Whether two targets name the same thing: a container by either id being a prefix of
    /// the other (ids are given abbreviated), case aside.
    pub fn same_as(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Container { id: x }, Target::Container { id: y }) => {
                let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
                x.starts_with(&y) || y.starts_with(&x)
            }
            _ => self == other,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Host => "host".into(),
            // By characters: it is named (logged, recorded) before `Request::check` refuses an
            // id that is not hex, and a byte slice could end inside a character.
            Target::Container { id } => {
                format!("container {}", id.chars().take(12).collect::<String>())
            }
            Target::Process { pid } => format!("process tree {pid}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
}

/// One exception to an isolation: traffic to and from `cidr` (and `port` on it, when given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allow {
    /// `10.0.0.5`, `10.0.0.0/24`, `fd00::/64`.
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Why it is allowed (`jump host`, `resolver`, `instance metadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An allow-list entry, checked: an address and a prefix that fits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v) => {
            let bits = u32::from(v);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v) => {
            let bits = u128::from(v);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl Allow {
    pub fn cidr(&self) -> Result<Cidr, String> {
        Cidr::parse(&self.cidr)
    }

    /// As responders write one: `CIDR[,tcp/PORT|udp/PORT][,NOTE]` (`10.0.0.5,tcp/22,jump
    /// host`); the port is the remote side's.
    pub fn parse_spec(s: &str) -> Result<Allow, String> {
        let mut parts = s.splitn(3, ',');
        let cidr = parts.next().unwrap_or("").trim().to_string();
        Cidr::parse(&cidr)?;
        let mut a = Allow {
            cidr,
            port: None,
            proto: None,
            note: None,
        };
        if let Some(pp) = parts.next().map(str::trim).filter(|p| !p.is_empty()) {
            let (proto, port) = pp
                .split_once('/')
                .ok_or_else(|| format!("{s}: write the port as tcp/PORT or udp/PORT"))?;
            a.proto = Some(match proto.to_ascii_lowercase().as_str() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => return Err(format!("{s}: the protocol is tcp or udp")),
            });
            a.port = Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s}: {port:?} is not a port"))?,
            );
        }
        a.note = parts
            .next()
            .map(|n| n.trim().chars().take(200).collect::<String>())
            .filter(|n| !n.is_empty());
        Ok(a)
    }
}

/// The collector → agent request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The collector's id of this action: the agent's answer names it.
    pub id: String,
    pub action: Action,
    pub target: Target,
    /// For `isolate`: what stays reachable beside the collector and loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Allow>,
    pub reason: String,
    pub requested_by: String,
}

impl Request {
    /// Every rule an agent would refuse, refused here first.
    pub fn check(&self) -> Result<(), String> {
        if self.reason.trim().is_empty() {
            return Err("a reason is required (the ticket, the alert)".into());
        }
        if self.reason.len() > MAX_REASON {
            return Err(format!("the reason is longer than {MAX_REASON} bytes"));
        }
        if self.allow.len() > MAX_ALLOW {
            return Err(format!(
                "{} allow-list entries; at most {MAX_ALLOW}",
                self.allow.len()
            ));
        }
        if !self.allow.is_empty() && self.action != Action::Isolate {
            return Err(format!(
                "an allow-list applies to isolate only, not {}",
                self.action.as_str()
            ));
        }
        for a in &self.allow {
            a.cidr()?;
            if a.port == Some(0) {
                return Err(format!("{}: port 0 is not a port", a.cidr));
            }
            if a.port.is_some() && a.proto.is_none() {
                return Err(format!("{}: a port needs a protocol (tcp or udp)", a.cidr));
            }
        }
        match (&self.action, &self.target) {
            (Action::Isolate | Action::Release, Target::Process { .. }) => Err(
                "a process tree cannot be isolated on its own: isolate its container or the host"
                    .into(),
            ),
            (Action::MarkLastBreath | Action::UnmarkLastBreath, Target::Process { .. }) => {
                Err("a last-breath mark is for a host or a container, not a process tree".into())
            }
            (_, Target::Container { id })
                if id.len() < 4 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Err(format!(
                    "container id {id:?}: 4 to 64 hex digits (a unique prefix is enough)"
                ))
            }
            (Action::Freeze | Action::Thaw | Action::Kill, Target::Host) => Err(format!(
                "{} applies to a container or a process tree, not the whole host",
                self.action.as_str()
            )),
            (_, Target::Process { pid: 0 | 1 }) => {
                Err("process 0 and 1 are the host itself; name a container instead".into())
            }
            _ => Ok(()),
        }
    }
}

/// The agent → collector answer: what is enforced now, proven by a round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The request it answers; for a break-glass release on the host, `local-…`.
    pub id: String,
    pub action: Action,
    pub target: Target,
    /// True when the action is in force (or, for release and thaw, undone).
    pub ok: bool,
    /// What enforces it: `nftables table inet cairn_isolation`, `cgroup_skb on /sys/fs/cgroup/…`,
    /// `cgroup.freeze`, `SIGSTOP`, `cgroup.kill`, `SIGKILL`.
    #[serde(default)]
    pub mechanism: String,
    /// SHA-256 of the rules in force as the agent wrote them (`rules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    /// Processes the action reached (freeze, thaw, kill).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// The round trip to the collector through the isolated path, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_rtt_ms: Option<f64>,
    /// Enforcement was undone because the collector could not be reached through it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a local (break-glass) release: who and why, as the host's root gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalAction>,
    /// When the agent finished the action (RFC 3339).
    pub at: String,
}

/// What made the agent ask for a last-breath collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastBreathEvent {
    /// The agent received SIGTERM (systemd stopping it at shutdown, a DaemonSet's pod
    /// terminating) on a marked host.
    HostShutdown,
    /// A marked container's last process exited.
    ContainerExit,
}

impl LastBreathEvent {
    pub fn as_str(&self) -> &'static str {
        match self {
            LastBreathEvent::HostShutdown => "host_shutdown",
            LastBreathEvent::ContainerExit => "container_exit",
        }
    }
}

/// Longest last-breath budget an agent may announce, in seconds.
pub const MAX_LAST_BREATH_SECS: u64 = 3600;

/// The agent's call for a last-breath collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBreathCall {
    /// The collection's id, chosen by the agent (a UUID) so it can wait for that collection
    /// without another round trip.
    pub collection_id: String,
    pub event: LastBreathEvent,
    /// The host, or the container that exited.
    pub target: Target,
    /// The mark (the containment action id) this answers.
    pub mark_id: String,
    /// How long the agent will keep sending before it goes, in seconds (a shutdown), or none
    /// (a container exit: the agent stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_secs: Option<u64>,
    /// What the agent saw (the signal, the container's cgroup, its writable layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When it happened on the host (RFC 3339).
    pub at: String,
}

impl LastBreathCall {
    pub fn check(&self) -> Result<(), String> {
        if uuid_like(&self.collection_id).is_none() {
            return Err(format!(
                "collection id {:?} is not a UUID",
                self.collection_id.chars().take(80).collect::<String>()
            ));
        }
        match (&self.event, &self.target) {
            (LastBreathEvent::HostShutdown, Target::Host) => {}
            (LastBreathEvent::ContainerExit, Target::Container { id })
                if (4..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            (e, t) => {
                return Err(format!(
                    "a {} last breath does not apply to {}",
                    e.as_str(),
                    t.describe()
                ))
            }
        }
        if self.mark_id.is_empty() || self.mark_id.len() > 128 {
            return Err("the mark id must be 1 to 128 bytes".into());
        }
        if self.budget_secs.is_some_and(|b| b > MAX_LAST_BREATH_SECS) {
            return Err(format!("a budget of at most {MAX_LAST_BREATH_SECS} s"));
        }
        if self.detail.as_ref().is_some_and(|d| d.len() > MAX_REASON) {
            return Err(format!("the detail is longer than {MAX_REASON} bytes"));
        }
        Ok(())
    }
}

/// `Some` when `s` is a UUID in its 36-character hyphenated form.
fn uuid_like(s: &str) -> Option<()> {
    let b = s.as_bytes();
    (b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        }))
    .then_some(())
}

/// An action taken on the host itself, without the collector (`cairn-agent isolation release
/// --local`): reported when the agent next connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAction {
    pub user: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: Action, target: Target, allow: Vec<Allow>) -> Request {
        Request {
            id: "r".into(),
            action,
            target,
            allow,
            reason: "IR-1".into(),
            requested_by: "admin".into(),
        }
    }

    fn allow(cidr: &str) -> Allow {
        Allow {
            cidr: cidr.into(),
            port: None,
            proto: None,
            note: None,
        }
    }

    #[test]
    fn cidrs_are_masked_and_matched_by_family() {
        let c = Cidr::parse("10.1.2.3/24").unwrap();
        assert_eq!(c.to_string(), "10.1.2.0/24");
        assert!(c.contains("10.1.2.200".parse().unwrap()));
        assert!(!c.contains("10.1.3.1".parse().unwrap()));
        assert!(!c.contains("::ffff:10.1.2.1".parse().unwrap()));
        let v6 = Cidr::parse("fd00::1/64").unwrap();
        assert_eq!(v6.to_string(), "fd00::/64");
        assert_eq!(Cidr::parse("192.0.2.1").unwrap().prefix, 32);
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "host.example",
            "10.0.0.0/x",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_that_cannot_be_enforced_are_refused() {
        let ok = req(Action::Isolate, Target::Host, vec![allow("10.0.0.0/8")]);
        assert_eq!(ok.check(), Ok(()));
        let mut r = ok.clone();
        r.reason = " ".into();
        assert!(r.check().unwrap_err().contains("reason"));
        let r = req(Action::Isolate, Target::Host, vec![allow("nope")]);
        assert!(r.check().is_err());
        let r = req(
            Action::Isolate,
            Target::Host,
            vec![allow("10.0.0.1"); MAX_ALLOW + 1],
        );
        assert!(r.check().unwrap_err().contains("at most"));
        let mut a = allow("10.0.0.1");
        a.port = Some(22);
        let r = req(Action::Isolate, Target::Host, vec![a.clone()]);
        assert!(r.check().unwrap_err().contains("protocol"));
        a.proto = Some(Proto::Tcp);
        assert_eq!(req(Action::Isolate, Target::Host, vec![a]).check(), Ok(()));
        let r = req(Action::Freeze, Target::Host, vec![]);
        assert!(r.check().unwrap_err().contains("not the whole host"));
        let r = req(Action::Isolate, Target::Process { pid: 42 }, vec![]);
        assert!(r.check().is_err());
        let r = req(Action::Kill, Target::Process { pid: 1 }, vec![]);
        assert!(r.check().is_err());
        let r = req(
            Action::Freeze,
            Target::Container {
                id: "zz; rm -rf /".into(),
            },
            vec![],
        );
        assert!(r.check().unwrap_err().contains("hex"));
        let r = req(
            Action::Thaw,
            Target::Container {
                id: "abcd12".into(),
            },
            vec![],
        );
        assert_eq!(r.check(), Ok(()));
        let r = req(Action::Thaw, Target::Host, vec![allow("10.0.0.1")]);
        assert!(r.check().is_err());
        assert_eq!(
            req(Action::MarkLastBreath, Target::Host, vec![]).check(),
            Ok(())
        );
        let r = req(Action::MarkLastBreath, Target::Process { pid: 42 }, vec![]);
        assert!(r.check().unwrap_err().contains("host or a container"));
        let r = req(
            Action::UnmarkLastBreath,
            Target::Host,
            vec![allow("10.0.0.1")],
        );
        assert!(r.check().is_err());
    }

    #[test]
    fn last_breath_calls_are_checked() {
        let ok = LastBreathCall {
            collection_id: "0b6f5f2e-8d8f-4b8e-9a51-3c1a8f0c9d11".into(),
            event: LastBreathEvent::HostShutdown,
            target: Target::Host,
            mark_id: "m".into(),
            budget_secs: Some(20),
            detail: None,
            at: "2026-12-02T10:00:00Z".into(),
        };
        assert_eq!(ok.check(), Ok(()));
        let mut c = ok.clone();
        c.collection_id = "../../etc".into();
        assert!(c.check().unwrap_err().contains("UUID"));
        let mut c = ok.clone();
        c.target = Target::Container { id: "abcd".into() };
        assert!(c.check().is_err(), "a host shutdown is the host's");
        c.event = LastBreathEvent::ContainerExit;
        assert_eq!(c.check(), Ok(()));
        c.target = Target::Container { id: "zz".into() };
        assert!(c.check().is_err());
        let mut c = ok.clone();
        c.budget_secs = Some(MAX_LAST_BREATH_SECS + 1);
        assert!(c.check().is_err());
        let mut c = ok;
        c.mark_id = String::new();
        assert!(c.check().is_err());
    }

    #[test]
    fn a_container_is_named_by_its_first_twelve_characters() {
        let t = |id: &str| Target::Container { id: id.into() }.describe();
        assert_eq!(t("3f2a9c4b5d6e7f8091a2"), "container 3f2a9c4b5d6e");
        assert_eq!(t("abcd"), "container abcd");
        // Not hex, so check refuses it, but only after it was named.
        assert_eq!(t("3f2a9c4b5d6\u{e9}1a2b"), "container 3f2a9c4b5d6\u{e9}");
    }

    #[test]
    fn allow_entries_are_read_as_responders_write_them() {
        let a = Allow::parse_spec("10.0.0.0/24,tcp/22,jump host").unwrap();
        assert_eq!(
            (a.cidr.as_str(), a.proto, a.port, a.note.as_deref()),
            ("10.0.0.0/24", Some(Proto::Tcp), Some(22), Some("jump host"))
        );
        let a = Allow::parse_spec("fd00::53,UDP/53").unwrap();
        assert_eq!(
            (a.proto, a.port, a.note),
            (Some(Proto::Udp), Some(53), None)
        );
        assert_eq!(Allow::parse_spec("10.0.0.5").unwrap().port, None);
        for bad in [
            "10.0.0.1,22",
            "10.0.0.1,icmp/1",
            "10.0.0.1,tcp/99999",
            "10.0.0.1,tcp/0",
            "host,tcp/22",
        ] {
            assert!(Allow::parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_wire_form_is_stable() {
        let r = req(
            Action::Isolate,
            Target::Container { id: "abcd".into() },
            vec![Allow {
                cidr: "10.0.0.2".into(),
                port: Some(53),
                proto: Some(Proto::Udp),
                note: Some("resolver".into()),
            }],
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":"r","action":"isolate","target":{"kind":"container","id":"abcd"},"allow":[{"cidr":"10.0.0.2","port":53,"proto":"udp","note":"resolver"}],"reason":"IR-1","requested_by":"admin"}"#
        );
    }
}
