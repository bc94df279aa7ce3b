//! Fleet context (issue #17): each host's place in the architecture, and the ones that behave
//! unlike their peers.
//!
//! Hosts are grouped by what their agents say about where they run ([`groups`]); each host's
//! behaviour over a sliding window is read from the timeline as a set of features
//! (executables run, parent → child pairs, outbound destinations, users who logged in, and
//! from volatile snapshots: ports listened on, kernel modules loaded, BPF objects pinned); and
//! every group is scored by how many of its members share each feature ([`score`]). Nothing
//! is stored: the report is computed from the current identities and the timeline, so a host
//! that moves, or a group that changes, is reflected at the next report. What changes is kept
//! as the host's membership history ([`history`]: events on its timeline).

pub mod groups;
pub mod history;
pub mod score;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::Result;
use crate::storage::timeline::{Column, Filter};
use crate::storage::MetadataStore;
pub use groups::{Group, GroupKind, Peering};
pub use score::{Feature, FeatureKind, HostScore};

/// The window behaviour is profiled over by default.
pub const DEFAULT_WINDOW_NS: i64 = 24 * 3600 * 1_000_000_000;
/// At most this many distinct (host, feature) rows are read per feature kind: a profile cut
/// there says so.
pub const MAX_FEATURE_ROWS: u32 = 500_000;

/// One feature kind and where it is read from in the timeline.
struct Source {
    kind: FeatureKind,
    event_kinds: &'static [&'static str],
    a: Column,
    b: Option<Column>,
    /// How `a` and `b` make the feature's value.
    join: &'static str,
}

const SOURCES: &[Source] = &[
    Source {
        kind: FeatureKind::Exec,
        // Executions the sensor saw, and processes a volatile snapshot found running.
        event_kinds: &["process_exec", "process_start"],
        a: Column::Exe,
        b: None,
        join: "",
    },
    Source {
        kind: FeatureKind::ParentChild,
        event_kinds: &["process_exec"],
        a: Column::Parent,
        b: Some(Column::Exe),
        join: " -> ",
    },
    Source {
        kind: FeatureKind::Connect,
        event_kinds: &["tcp_connect"],
        a: Column::Dst,
        b: Some(Column::DstPort),
        join: ":",
    },
    Source {
        kind: FeatureKind::Login,
        event_kinds: &["ssh_login", "login"],
        a: Column::User,
        b: None,
        join: "",
    },
    Source {
        kind: FeatureKind::Listen,
        event_kinds: &["socket_listen"],
        a: Column::DstPort,
        b: None,
        join: "",
    },
    Source {
        kind: FeatureKind::KernelModule,
        event_kinds: &["kernel_module"],
        // `kernel module NAME`: the message carries the name and nothing host-specific.
        a: Column::Message,
        b: None,
        join: "",
    },
    Source {
        kind: FeatureKind::Bpf,
        event_kinds: &["bpf_pinned"],
        a: Column::Path,
        b: None,
        join: "",
    },
];

/// The fleet's configuration: which VPCs are peered, and the profiling window.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub peering: Peering,
    pub window_ns: i64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            peering: Peering::default(),
            window_ns: DEFAULT_WINDOW_NS,
        }
    }
}

/// One group and its members' scores.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    #[serde(flatten)]
    pub group: Group,
    pub members: usize,
    pub scored: bool,
    pub note: Option<String>,
    /// The members, the highest score first.
    pub hosts: Vec<HostScore>,
}

/// A host's standing over all its groups.
#[derive(Debug, Clone, Serialize)]
pub struct HostStanding {
    pub host_id: String,
    /// The instance's `Name` tag where it has one, else its hostname.
    pub hostname: String,
    /// Its highest score in any group.
    pub score: f64,
    pub outlier: bool,
    /// How many features it had in the window (0: nothing of its behaviour seen).
    pub features: usize,
    /// The group keys it is in.
    pub groups: Vec<String>,
    /// The reasons of every group it stands out in, the highest-scoring first (of its
    /// highest-scoring group when it stands out in none).
    pub reasons: Vec<String>,
    /// The features behind the reasons of the groups it stands out in, the heaviest first:
    /// what a responder (or a trigger looking for a process to capture) starts from.
    pub odd_features: Vec<Feature>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub from_ns: i64,
    pub to_ns: i64,
    /// Groups with an outlier first, then by size.
    pub groups: Vec<GroupReport>,
    /// Every host in a group, the highest score first.
    pub hosts: Vec<HostStanding>,
    /// Hosts whose agents gave no cloud context: in no group, not scored.
    pub ungrouped: Vec<String>,
    /// Feature kinds whose rows were cut at [`MAX_FEATURE_ROWS`]: profiles are incomplete.
    pub truncated: Vec<FeatureKind>,
}

/// Largest peering inventory read.
const MAX_INVENTORY: u64 = 64 << 20;

impl Fleet {
    /// The fleet configuration from the data directory: `vpc-peering.json` (the JSON of `aws
    /// ec2 describe-vpc-peering-connections`) when present.
    pub fn load(peering: &std::path::Path) -> Result<Fleet> {
        use std::io::Read;
        let bad = |e: &dyn std::fmt::Display| {
            crate::error::Error::invalid(format!("{}: {e}", peering.display()))
        };
        let f = match std::fs::File::open(peering) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Fleet::default()),
            Err(e) => return Err(bad(&e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_INVENTORY + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(&e))?;
        if bytes.len() as u64 > MAX_INVENTORY {
            return Err(bad(&format!("larger than {} MiB", MAX_INVENTORY >> 20)));
        }
        Ok(Fleet {
            peering: Peering::from_json(&bytes).map_err(|e| bad(&e))?,
            ..Fleet::default()
        })
    }

    /// Groups, profiles and scores the fleet as of `now_ns`.
    pub fn report(&self, meta: &dyn MetadataStore, now_ns: i64) -> Result<FleetReport> {
        let (from_ns, to_ns) = (now_ns.saturating_sub(self.window_ns), now_ns);
        let hosts: Vec<_> = meta
            .list_hosts()?
            .into_iter()
            .filter(|h| h.retired_at.is_none())
            .collect();
        let mut members: BTreeMap<Group, Vec<(String, String)>> = BTreeMap::new();
        let mut ungrouped = Vec::new();
        let mut host_groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in &hosts {
            let gs = h
                .identity
                .as_ref()
                .map(|id| groups::groups_of(id, &self.peering))
                .unwrap_or_default();
            if gs.is_empty() {
                ungrouped.push(h.id.clone());
            }
            for g in gs {
                host_groups
                    .entry(h.id.clone())
                    .or_default()
                    .push(g.key.clone());
                members
                    .entry(g)
                    .or_default()
                    .push((h.id.clone(), display_name(h)));
            }
        }
        let (mut features, truncated) = if host_groups.is_empty() {
            (BTreeMap::new(), Vec::new())
        } else {
            profiles(meta, from_ns, to_ns)?
        };
        for h in hosts.iter().filter(|h| host_groups.contains_key(&h.id)) {
            let context = context_features(meta, h)?;
            if !context.is_empty() {
                features.entry(h.id.clone()).or_default().extend(context);
            }
        }
        let mut reports: Vec<GroupReport> = members
            .into_iter()
            .map(|(group, m)| {
                let s = score::score_group(&group.label, &m, &features);
                GroupReport {
                    members: m.len(),
                    scored: s.scored,
                    note: s.note,
                    hosts: s.hosts,
                    group,
                }
            })
            .collect();
        reports.sort_by(|a, b| {
            let odd = |r: &GroupReport| r.hosts.iter().any(|h| h.outlier);
            odd(b)
                .cmp(&odd(a))
                .then(b.members.cmp(&a.members))
                .then_with(|| a.group.key.cmp(&b.group.key))
        });
        // Each host's groups, the highest score first: its reasons are those of every group
        // it stands out in (or of its highest group when it stands out in none).
        let mut per_host: BTreeMap<String, Vec<&HostScore>> = BTreeMap::new();
        for r in &reports {
            for h in &r.hosts {
                per_host.entry(h.host_id.clone()).or_default().push(h);
            }
        }
        let mut hosts: Vec<HostStanding> = per_host
            .into_iter()
            .map(|(id, mut scores)| {
                scores.sort_by(|a, b| b.score.total_cmp(&a.score));
                let outlier = scores.iter().any(|s| s.outlier);
                let reasons = scores
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| s.outlier || (!outlier && *i == 0))
                    .flat_map(|(_, s)| s.reasons.iter().map(|r| r.text.clone()))
                    .take(2 * score::MAX_REASONS)
                    .collect();
                let mut odd_features: Vec<Feature> = Vec::new();
                for r in scores.iter().filter(|s| s.outlier).flat_map(|s| &s.reasons) {
                    if !odd_features.contains(&r.feature) {
                        odd_features.push(r.feature.clone());
                    }
                }
                HostStanding {
                    hostname: scores
                        .first()
                        .map(|s| s.hostname.clone())
                        .unwrap_or_default(),
                    score: scores.first().map(|s| s.score).unwrap_or(0.0),
                    outlier,
                    features: scores.first().map(|s| s.features).unwrap_or(0),
                    groups: host_groups.get(&id).cloned().unwrap_or_default(),
                    reasons,
                    odd_features,
                    host_id: id,
                }
            })
            .collect();
        hosts.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.hostname.cmp(&b.hostname))
        });
        Ok(FleetReport {
            from_ns,
            to_ns,
            groups: reports,
            hosts,
            ungrouped,
            truncated,
        })
    }
}

/// The last report, reused for [`CACHE_SECS`]: every trigger asks for its host's standing,
/// and an alert storm must not profile the whole fleet once per alert.
#[derive(Default)]
pub struct ReportCache {
    last: std::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<FleetReport>)>>,
}

/// How long a cached report is used.
pub const CACHE_SECS: u64 = 60;

impl ReportCache {
    pub fn get(
        &self,
        fleet: &Fleet,
        meta: &dyn MetadataStore,
        now_ns: i64,
    ) -> Result<std::sync::Arc<FleetReport>> {
        let fresh = |t: &std::time::Instant| t.elapsed().as_secs() < CACHE_SECS;
        if let Ok(g) = self.last.lock() {
            if let Some((_, r)) = g.as_ref().filter(|(t, _)| fresh(t)) {
                return Ok(r.clone());
            }
        }
        let r = std::sync::Arc::new(fleet.report(meta, now_ns)?);
        if let Ok(mut g) = self.last.lock() {
            *g = Some((std::time::Instant::now(), r.clone()));
        }
        Ok(r)
    }
}

/// What a responder calls the host: its instance's `Name` tag where it has one (hostnames
/// of cloud instances are often alike or meaningless), else its hostname.
fn display_name(h: &crate::storage::HostRow) -> String {
    h.identity
        .as_ref()
        .and_then(|i| i.cloud.as_ref())
        .and_then(|c| c.instance_name.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| h.hostname.clone())
}

/// The self-test checks whose verdicts are compared across peers: will the evidence exist.
const PREPAREDNESS_CHECKS: &[&str] = &["logs.", "mgmt."];

/// What a host's context says beyond its behaviour: preparedness checks that do not pass in
/// its last self-test, IMDSv1 answering, its instance profile. Compared across peers like
/// behaviour, so a misconfiguration only this host has raises its score.
fn context_features(meta: &dyn MetadataStore, h: &crate::storage::HostRow) -> Result<Vec<Feature>> {
    let mut out = Vec::new();
    let last = meta.readiness_history(&h.id, 1)?;
    let checks = last
        .first()
        .and_then(|r| r["checks"].as_array().cloned())
        .unwrap_or_default();
    for c in checks {
        let (Some(id), Some(status)) = (c["id"].as_str(), c["status"].as_str()) else {
            continue;
        };
        if status != "pass" && PREPAREDNESS_CHECKS.iter().any(|p| id.starts_with(p)) {
            out.push(Feature {
                kind: FeatureKind::Preparedness,
                value: format!("self-test {id}: {status}"),
            });
        }
    }
    let cloud = h.identity.as_ref().and_then(|i| i.cloud.as_ref());
    if cloud.and_then(|c| c.imdsv1_open) == Some(true) {
        out.push(Feature {
            kind: FeatureKind::Preparedness,
            value: "IMDSv1 answering without a token".into(),
        });
    }
    if let Some(p) = cloud.and_then(|c| c.instance_profile.clone()) {
        out.push(Feature {
            kind: FeatureKind::InstanceProfile,
            value: p,
        });
    }
    Ok(out)
}

/// A process behind what made a host odd: the one a memory capture should take when the
/// alert names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub pid: u32,
    pub exe: Option<String>,
    /// Which of the host's odd features it is behind, in words ("ran /tmp/.x/payload").
    pub why: String,
}

/// The newest process of `host_id`, in the window, behind one of its odd features (an
/// executable run, the child of a parent → child pair, a connection), trying the heaviest
/// feature first. It may have exited since: the agent then reports the capture as a gap.
pub fn suspect(
    meta: &dyn MetadataStore,
    host_id: &str,
    odd: &[Feature],
    from_ns: i64,
    to_ns: i64,
) -> Result<Option<Suspect>> {
    use crate::storage::timeline::{Cond, Match};
    for f in odd {
        let (kinds, cond) = match f.kind {
            FeatureKind::Exec => (
                &["process_exec", "process_start"][..],
                Cond::Is(Column::Exe, Match::Is(f.value.clone())),
            ),
            FeatureKind::ParentChild => match f.value.split_once(" -> ") {
                Some((parent, child)) => (
                    &["process_exec"][..],
                    Cond::All(vec![
                        Cond::Is(Column::Parent, Match::Is(parent.to_string())),
                        Cond::Is(Column::Exe, Match::Is(child.to_string())),
                    ]),
                ),
                None => continue,
            },
            FeatureKind::Connect => match f.value.rsplit_once(':') {
                Some((addr, port)) if port.parse::<u16>().is_ok() => (
                    &["tcp_connect"][..],
                    Cond::All(vec![
                        Cond::Is(Column::Dst, Match::Is(addr.to_string())),
                        Cond::Is(Column::DstPort, Match::Is(port.to_string())),
                    ]),
                ),
                _ => continue,
            },
            FeatureKind::Login
            | FeatureKind::Listen
            | FeatureKind::KernelModule
            | FeatureKind::Bpf
            | FeatureKind::Preparedness
            | FeatureKind::InstanceProfile => continue,
        };
        let filter = Filter {
            host_ids: vec![host_id.to_string()],
            from_ns: Some(from_ns),
            to_ns: Some(to_ns),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            cond: Some(cond),
            newest_first: true,
            ..Default::default()
        };
        let (rows, _) = meta.timeline_page(&filter, None, 1)?;
        let found = rows.into_iter().find_map(|r| {
            let pid = u32::try_from(r.event.pid?).ok().filter(|p| *p > 0)?;
            Some(Suspect {
                pid,
                exe: r.event.exe,
                why: f.kind.words(&f.value),
            })
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Each host's features in the window, by host id.
type Profiles = BTreeMap<String, BTreeSet<Feature>>;

/// Each host's features in the window, and the feature kinds cut at the row bound. Every
/// host's: naming the grouped ones would make a thousand-host IN list for nothing, as
/// scoring looks up group members only.
fn profiles(
    meta: &dyn MetadataStore,
    from_ns: i64,
    to_ns: i64,
) -> Result<(Profiles, Vec<FeatureKind>)> {
    let mut out: BTreeMap<String, BTreeSet<Feature>> = BTreeMap::new();
    let mut truncated = Vec::new();
    for s in SOURCES {
        let filter = Filter {
            from_ns: Some(from_ns),
            to_ns: Some(to_ns),
            kinds: s.event_kinds.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        };
        let mut rows = meta.timeline_host_values(&filter, s.a, s.b, MAX_FEATURE_ROWS)?;
        if rows.len() > MAX_FEATURE_ROWS as usize {
            rows.truncate(MAX_FEATURE_ROWS as usize);
            truncated.push(s.kind);
        }
        for r in rows {
            let value = match r.b {
                Some(b) => format!("{}{}{b}", r.a, s.join),
                None => r.a,
            };
            out.entry(r.host).or_default().insert(Feature {
                kind: s.kind,
                value,
            });
        }
    }
    Ok((out, truncated))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::storage::sqlite::Sqlite;
    use crate::storage::timeline::Event;
    use cairn_protocol::manifest::{CloudIdentity, HostIdentity};

    const HOUR: i64 = 3600 * 1_000_000_000;

    fn enroll(db: &Sqlite, n: usize, asg: &str) -> String {
        use crate::storage::HostStore;
        let id = format!("agent-{asg}-{n}");
        db.insert_enrolled_host(&id, &format!("{asg}-{n}"), &format!("cert-{id}"))
            .unwrap();
        let ident = HostIdentity {
            hostname: format!("{asg}-{n}"),
            cloud: Some(CloudIdentity {
                provider: "aws".into(),
                instance_id: Some(format!("i-{asg}{n}")),
                account_id: Some("123456789012".into()),
                region: Some("eu-west-1".into()),
                network_id: Some("vpc-0a1".into()),
                scaling_group: Some(asg.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        db.update_host_identity(&id, &ident, "test").unwrap();
        id
    }

    fn exec(t: i64, exe: &str, parent: &str) -> Event {
        let mut e = Event::new(t, "ebpf", "process_exec", format!("exec {exe}"));
        e.exe = Some(exe.into());
        e.parent_exe = Some(parent.into());
        e.dedup = t ^ (exe.len() as i64);
        e
    }

    fn connect(t: i64, addr: &str, port: i64) -> Event {
        let mut e = Event::new(t, "ebpf", "tcp_connect", format!("connect {addr}"));
        e.dst_addr = Some(addr.into());
        e.dst_port = Some(port);
        e.dedup = t ^ port;
        e
    }

    #[test]
    fn the_odd_web_server_is_flagged_in_its_groups_and_nowhere_else() {
        use crate::storage::TimelineStore;
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let now = 100 * HOUR;
        let web: Vec<String> = (1..=8).map(|i| enroll(&db, i, "web")).collect();
        let batch: Vec<String> = (1..=4).map(|i| enroll(&db, i, "batch")).collect();
        let pair: Vec<String> = (1..=2).map(|i| enroll(&db, i, "tiny")).collect();
        for (i, h) in web.iter().enumerate() {
            let t = now - HOUR + i as i64;
            let mut evs = vec![
                exec(t, "/usr/sbin/nginx", "/usr/lib/systemd/systemd"),
                connect(t + 100, "10.0.2.5", 5432),
            ];
            if i == 6 {
                let mut payload = exec(t + 200, "/tmp/.x/payload", "/usr/sbin/nginx");
                payload.pid = Some(4242);
                evs.push(payload);
                evs.push(connect(t + 300, "198.51.100.7", 4444));
            }
            // Long before the window: not part of the profile.
            evs.push(exec(now - 48 * HOUR, "/opt/old/tool", "/bin/sh"));
            db.insert_timeline(h, None, &evs).unwrap();
        }
        for h in batch.iter().chain(&pair) {
            db.insert_timeline(
                h,
                None,
                &[exec(now - HOUR, "/usr/bin/python3", "/usr/sbin/cron")],
            )
            .unwrap();
        }
        let r = Fleet::default().report(&db, now).unwrap();
        let outliers: Vec<&str> = r
            .hosts
            .iter()
            .filter(|h| h.outlier)
            .map(|h| h.hostname.as_str())
            .collect();
        assert_eq!(outliers, vec!["web-7"]);
        let top = &r.hosts[0];
        assert_eq!(top.hostname, "web-7");
        assert!(
            top.reasons
                .iter()
                .any(|t| t == "only web-7 of 8 in asg web ran /tmp/.x/payload"),
            "{:?}",
            top.reasons
        );
        assert!(top
            .reasons
            .iter()
            .any(|t| t == "only web-7 of 8 in asg web connected to 198.51.100.7:4444"));
        assert!(top
            .reasons
            .iter()
            .any(|t| t.contains("started /tmp/.x/payload from /usr/sbin/nginx")));
        // Groups with an outlier come first (the VPC and the asg), the batch group after;
        // the tiny group is not scored and says so.
        let odd: Vec<&str> = r.groups[..2]
            .iter()
            .map(|g| g.group.label.as_str())
            .collect();
        assert_eq!(odd, vec!["vpc vpc-0a1 (123456789012)", "asg web"]);
        assert!(r.groups[2..]
            .iter()
            .all(|g| g.hosts.iter().all(|h| !h.outlier)));
        let tiny = r
            .groups
            .iter()
            .find(|g| g.group.label == "asg tiny")
            .unwrap();
        assert!(!tiny.scored);
        assert!(tiny.note.as_deref().unwrap().contains("not scored"));
        // Every host is also in the shared VPC, where web-7 is odd as well (1 of 14).
        let vpc = r
            .groups
            .iter()
            .find(|g| g.group.kind == GroupKind::Network)
            .unwrap();
        assert_eq!(vpc.members, 14);
        assert!(vpc
            .hosts
            .iter()
            .filter(|h| h.outlier)
            .all(|h| h.hostname == "web-7"));
        assert!(r.ungrouped.is_empty() && r.truncated.is_empty());

        // The process behind it, for a memory capture when the alert names none.
        assert_eq!(top.odd_features[0].value, "/tmp/.x/payload");
        let s = suspect(&db, &web[6], &top.odd_features, r.from_ns, r.to_ns)
            .unwrap()
            .unwrap();
        assert_eq!((s.pid, s.exe.as_deref()), (4242, Some("/tmp/.x/payload")));
        assert_eq!(s.why, "ran /tmp/.x/payload");
        // A peer has no odd features, and a feature with no pid behind it finds nothing.
        assert!(r
            .hosts
            .iter()
            .filter(|h| !h.outlier)
            .all(|h| h.odd_features.is_empty()));
        let connect_only = [Feature {
            kind: FeatureKind::Connect,
            value: "198.51.100.7:4444".into(),
        }];
        assert_eq!(
            suspect(&db, &web[6], &connect_only, r.from_ns, r.to_ns).unwrap(),
            None
        );
    }

    #[test]
    fn snapshots_add_listeners_kernel_modules_and_bpf_objects_to_profiles() {
        use crate::storage::TimelineStore;
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let now = 100 * HOUR;
        let hosts: Vec<String> = (1..=6).map(|i| enroll(&db, i, "node")).collect();
        let snap = |t: i64, kind: &str, msg: &str| {
            let mut e = Event::new(t, "kernel.json", kind, msg);
            e.dedup = t ^ (msg.len() as i64) ^ (kind.len() as i64);
            e
        };
        for (i, h) in hosts.iter().enumerate() {
            let t = now - HOUR + 10 * i as i64;
            let mut listen = Event::new(t, "network.json", "socket_listen", "tcp6 :::22 LISTEN");
            listen.dst_port = Some(22);
            listen.dedup = t;
            let mut evs = vec![
                listen,
                snap(t + 1, "kernel_module", "kernel module nf_tables"),
            ];
            if i == 3 {
                evs.push(snap(t + 2, "kernel_module", "kernel module diamorphine"));
                let mut odd = Event::new(t + 3, "network.json", "socket_listen", "tcp :31337");
                odd.dst_port = Some(31337);
                odd.dedup = t + 3;
                evs.push(odd);
                let mut bpf = snap(t + 4, "bpf_pinned", "pinned bpf prog /sys/fs/bpf/x (1)");
                bpf.path = Some("/sys/fs/bpf/x".into());
                evs.push(bpf);
            }
            db.insert_timeline(h, None, &evs).unwrap();
        }
        let r = Fleet::default().report(&db, now).unwrap();
        let odd: Vec<&HostStanding> = r.hosts.iter().filter(|h| h.outlier).collect();
        assert_eq!(odd.len(), 1, "{:?}", r.hosts);
        assert_eq!(odd[0].hostname, "node-4");
        for want in [
            "only node-4 of 6 in asg node had kernel module diamorphine loaded",
            "only node-4 of 6 in asg node listened on port 31337",
            "only node-4 of 6 in asg node had BPF object /sys/fs/bpf/x pinned",
        ] {
            assert!(
                odd[0].reasons.iter().any(|t| t == want),
                "{want}: {:?}",
                odd[0].reasons
            );
        }
        // What every node shares weighs nothing.
        assert!(!odd[0]
            .reasons
            .iter()
            .any(|t| t.contains("nf_tables") || t.contains("port 22")));
    }

    #[test]
    fn a_misconfiguration_only_one_host_has_makes_it_stand_out() {
        use crate::storage::{HostStore, ReadinessStore, TimelineStore};
        use cairn_protocol::readiness::{CheckResult, CheckStatus, SelftestReport};
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let now = 100 * HOUR;
        let hosts: Vec<String> = (1..=8).map(|i| enroll(&db, i, "api")).collect();
        for (i, h) in hosts.iter().enumerate() {
            let t = now - HOUR + i as i64;
            db.insert_timeline(h, None, &[exec(t, "/usr/bin/api", "/sbin/init")])
                .unwrap();
            let auditd = if i == 1 {
                CheckStatus::Warn
            } else {
                CheckStatus::Pass
            };
            let check = |id: &str, status| CheckResult {
                id: id.into(),
                status,
                measured: String::new(),
                remediation: String::new(),
                duration_ms: 0,
            };
            // clock.sync warns everywhere but one: not a preparedness check, not compared.
            let clock = if i == 5 {
                CheckStatus::Pass
            } else {
                CheckStatus::Warn
            };
            let report = SelftestReport {
                schema_version: 1,
                started: "2026-12-07T00:00:00Z".into(),
                duration_ms: 1,
                hostname: format!("api-{}", i + 1),
                agent_version: "test".into(),
                status: CheckStatus::Warn,
                checks: vec![check("logs.auditd", auditd), check("clock.sync", clock)],
            };
            db.insert_readiness(h, &report).unwrap();
        }
        // api-2 also carries an instance profile none of its peers has.
        let mut row = db.get_host(&hosts[1]).unwrap().unwrap().identity.unwrap();
        if let Some(c) = row.cloud.as_mut() {
            c.instance_profile = Some("arn:aws:iam::123456789012:instance-profile/admin".into());
        }
        db.update_host_identity(&hosts[1], &row, "test").unwrap();
        let r = Fleet::default().report(&db, now).unwrap();
        let odd: Vec<&HostStanding> = r.hosts.iter().filter(|h| h.outlier).collect();
        assert_eq!(odd.len(), 1, "{:?}", r.hosts);
        assert_eq!(odd[0].hostname, "api-2");
        assert!(odd[0]
            .reasons
            .iter()
            .any(|t| t == "only api-2 of 8 in asg api has self-test logs.auditd: warn"));
        assert!(odd[0].reasons.iter().any(|t| t
            == "only api-2 of 8 in asg api carries instance profile arn:aws:iam::123456789012:instance-profile/admin"));
        assert!(!odd[0].reasons.iter().any(|t| t.contains("clock")));
        // Context is not behaviour: one executable and its parent pair seen.
        assert_eq!(odd[0].features, 2);
    }

    #[test]
    fn a_host_that_moves_is_in_its_new_group_at_once() {
        use crate::storage::HostStore;
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let moved = enroll(&db, 1, "web");
        enroll(&db, 2, "web");
        let mut ident = db.get_host(&moved).unwrap().unwrap().identity.unwrap();
        if let Some(c) = ident.cloud.as_mut() {
            c.scaling_group = Some("api".into());
        }
        db.update_host_identity(&moved, &ident, "test").unwrap();
        let r = Fleet::default().report(&db, HOUR).unwrap();
        let api = r
            .groups
            .iter()
            .find(|g| g.group.label == "asg api")
            .unwrap();
        assert_eq!(api.hosts[0].host_id, moved);
        let web = r
            .groups
            .iter()
            .find(|g| g.group.label == "asg web")
            .unwrap();
        assert_eq!(web.members, 1);
    }

    #[test]
    fn a_peering_inventory_is_read_checked_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vpc-peering.json");
        assert!(Fleet::load(&p).is_ok(), "absent is the default");
        std::fs::write(&p, b"{\"nope\": 1}").unwrap();
        let e = Fleet::load(&p).unwrap_err().to_string();
        assert!(e.contains("describe-vpc-peering-connections"), "{e}");
        std::fs::write(&p, br#"{"VpcPeeringConnections": []}"#).unwrap();
        assert!(Fleet::load(&p).is_ok());
    }
}
