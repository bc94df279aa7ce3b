//! Outlier scores: how many of a host's peers share each thing it did.
//!
//! Stacking (least-frequency counts) done for every group at once: a feature seen on `k` of
//! the `n` members weighs `ln(n / k)`, so one seen on one host of twelve weighs 2.5 and one
//! seen on all weighs nothing. A host's score in a group is the sum over its rare features
//! (seen on at most a quarter of the group); it is an outlier when its score stands above
//! the group's median by more than three median absolute deviations and by at least the
//! weight of one unique feature. Every score carries its reasons in words.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Groups smaller than this are not scored: with two hosts, "unlike its peers" means nothing.
pub const MIN_GROUP: usize = 3;
/// Reasons kept per host and group, the heaviest first.
pub const MAX_REASONS: usize = 10;

/// What a feature is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// An executable run (path).
    Exec,
    /// A parent → child executable pair.
    ParentChild,
    /// An outbound destination, `address:port`.
    Connect,
    /// A user who logged in.
    Login,
    /// A port listened on (volatile snapshots).
    Listen,
    /// A loaded kernel module (volatile snapshots).
    KernelModule,
    /// A pinned BPF object (volatile snapshots).
    Bpf,
    /// A preparedness finding: a `logs.*` or `mgmt.*` self-test check not passing, IMDSv1
    /// answering without a token.
    Preparedness,
    /// The role the instance acts as (IAM instance profile, service account).
    InstanceProfile,
}

/// How many of a host's features are behaviour (what it did), not context (how it is set up).
fn behaviour(f: &BTreeSet<Feature>) -> usize {
    f.iter().filter(|f| f.kind.is_behaviour()).count()
}

impl FeatureKind {
    /// What the host did or runs, as opposed to its configuration.
    pub fn is_behaviour(&self) -> bool {
        !matches!(
            self,
            FeatureKind::Preparedness | FeatureKind::InstanceProfile
        )
    }

    /// What a host did, in words: "ran /tmp/x".
    pub fn words(&self, value: &str) -> String {
        match self {
            FeatureKind::Exec => format!("ran {value}"),
            FeatureKind::ParentChild => match value.split_once(" -> ") {
                Some((p, c)) => format!("started {c} from {p}"),
                None => format!("started {value}"),
            },
            FeatureKind::Connect => format!("connected to {value}"),
            FeatureKind::Login => format!("had a login by {value}"),
            FeatureKind::Listen => format!("listened on port {value}"),
            FeatureKind::KernelModule => format!("had {value} loaded"),
            FeatureKind::Bpf => format!("had BPF object {value} pinned"),
            FeatureKind::Preparedness => format!("has {value}"),
            FeatureKind::InstanceProfile => format!("carries instance profile {value}"),
        }
    }
}

/// One thing a host did in the window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Feature {
    pub kind: FeatureKind,
    pub value: String,
}

/// Why a host scored what it did.
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub feature: Feature,
    /// How many members of the group share it (this host included).
    pub hosts: usize,
    pub group_size: usize,
    pub weight: f64,
    pub text: String,
}

/// A host's score in one group.
#[derive(Debug, Clone, Serialize)]
pub struct HostScore {
    pub host_id: String,
    pub hostname: String,
    pub score: f64,
    pub outlier: bool,
    /// How many features of its behaviour the host had in the window (0: nothing seen, so
    /// nothing to compare); context features (preparedness, instance profile) not counted.
    pub features: usize,
    pub reasons: Vec<Reason>,
}

/// Scores of the members of one group, the highest first.
#[derive(Debug, Clone, Serialize)]
pub struct GroupScores {
    pub scored: bool,
    /// Why not, when not scored.
    pub note: Option<String>,
    pub hosts: Vec<HostScore>,
}

/// Scores every member of a group. `members` are `(host id, hostname)`; a member missing
/// from `features` had no events in the window.
pub fn score_group(
    label: &str,
    members: &[(String, String)],
    features: &BTreeMap<String, BTreeSet<Feature>>,
) -> GroupScores {
    let n = members.len();
    let empty = BTreeSet::new();
    let of = |h: &str| features.get(h).unwrap_or(&empty);
    if n < MIN_GROUP {
        return GroupScores {
            scored: false,
            note: Some(format!(
                "{label} has {n} member{}: groups of fewer than {MIN_GROUP} are not scored",
                if n == 1 { "" } else { "s" }
            )),
            hosts: members
                .iter()
                .map(|(id, name)| HostScore {
                    host_id: id.clone(),
                    hostname: name.clone(),
                    score: 0.0,
                    outlier: false,
                    features: behaviour(of(id)),
                    reasons: Vec::new(),
                })
                .collect(),
        };
    }
    let mut count: BTreeMap<&Feature, usize> = BTreeMap::new();
    for (id, _) in members {
        for f in of(id) {
            *count.entry(f).or_default() += 1;
        }
    }
    let rare_max = (n / 4).max(1);
    let mut hosts: Vec<HostScore> = members
        .iter()
        .map(|(id, name)| {
            let mut reasons: Vec<Reason> = of(id)
                .iter()
                .filter_map(|f| {
                    let k = count.get(f).copied().unwrap_or(1);
                    (k <= rare_max && k < n).then(|| {
                        let text = if k == 1 {
                            format!("only {name} of {n} in {label} {}", f.kind.words(&f.value))
                        } else {
                            format!(
                                "{name} is one of {k} of {n} in {label} that {}",
                                f.kind.words(&f.value)
                            )
                        };
                        Reason {
                            feature: f.clone(),
                            hosts: k,
                            group_size: n,
                            weight: (n as f64 / k as f64).ln(),
                            text,
                        }
                    })
                })
                .collect();
            reasons.sort_by(|a, b| {
                b.weight
                    .total_cmp(&a.weight)
                    .then_with(|| a.feature.cmp(&b.feature))
            });
            // `+ 0.0`: the sum of nothing is -0.0, which people would read as a score.
            let score: f64 = reasons.iter().map(|r| r.weight).sum::<f64>() + 0.0;
            reasons.truncate(MAX_REASONS);
            HostScore {
                host_id: id.clone(),
                hostname: name.clone(),
                score: (score * 100.0).round() / 100.0,
                outlier: false,
                features: behaviour(of(id)),
                reasons,
            }
        })
        .collect();
    let scores: Vec<f64> = hosts.iter().map(|h| h.score).collect();
    let m = median(&scores);
    let mad = median(&scores.iter().map(|s| (s - m).abs()).collect::<Vec<_>>());
    let unique = (n as f64).ln();
    for h in &mut hosts {
        h.outlier = h.score > 0.0 && h.score - m >= (3.0 * mad).max(unique) - 1e-9;
    }
    hosts.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.hostname.cmp(&b.hostname))
    });
    GroupScores {
        scored: true,
        note: None,
        hosts,
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn f(kind: FeatureKind, v: &str) -> Feature {
        Feature {
            kind,
            value: v.into(),
        }
    }

    type Members = Vec<(String, String)>;
    type Profiles = BTreeMap<String, BTreeSet<Feature>>;

    fn fleet(n: usize) -> (Members, Profiles) {
        let members: Vec<_> = (1..=n)
            .map(|i| (format!("id-{i}"), format!("web-{i}")))
            .collect();
        let features = members
            .iter()
            .map(|(id, _)| {
                (
                    id.clone(),
                    [
                        f(FeatureKind::Exec, "/usr/sbin/nginx"),
                        f(
                            FeatureKind::ParentChild,
                            "/usr/lib/systemd/systemd -> /usr/sbin/nginx",
                        ),
                        f(FeatureKind::Connect, "10.0.2.5:5432"),
                    ]
                    .into_iter()
                    .collect(),
                )
            })
            .collect();
        (members, features)
    }

    #[test]
    fn the_one_host_unlike_its_peers_is_flagged_with_its_reasons() {
        let (members, mut features) = fleet(12);
        let odd = features.get_mut("id-7").unwrap();
        odd.insert(f(FeatureKind::Exec, "/tmp/.x/payload"));
        odd.insert(f(FeatureKind::Connect, "198.51.100.7:4444"));
        let s = score_group("asg web-prod", &members, &features);
        assert!(s.scored);
        let flagged: Vec<&str> = s
            .hosts
            .iter()
            .filter(|h| h.outlier)
            .map(|h| h.hostname.as_str())
            .collect();
        assert_eq!(flagged, vec!["web-7"]);
        let top = &s.hosts[0];
        assert_eq!(top.hostname, "web-7");
        assert!((top.score - 2.0 * 12f64.ln()).abs() < 0.01, "{}", top.score);
        let texts: Vec<&str> = top.reasons.iter().map(|r| r.text.as_str()).collect();
        assert!(
            texts.contains(&"only web-7 of 12 in asg web-prod ran /tmp/.x/payload"),
            "{texts:?}"
        );
        assert!(texts.contains(&"only web-7 of 12 in asg web-prod connected to 198.51.100.7:4444"));
        assert!(s.hosts[1..]
            .iter()
            .all(|h| h.score == 0.0 && h.reasons.is_empty()));
    }

    #[test]
    fn what_every_host_does_weighs_nothing_and_shared_rarities_weigh_less() {
        let (members, mut features) = fleet(12);
        for id in ["id-2", "id-3"] {
            features
                .get_mut(id)
                .unwrap()
                .insert(f(FeatureKind::Login, "deploy"));
        }
        let s = score_group("asg web-prod", &members, &features);
        let two = s.hosts.iter().find(|h| h.hostname == "web-2").unwrap();
        assert!((two.score - 6f64.ln()).abs() < 0.01);
        assert_eq!(
            two.reasons[0].text,
            "web-2 is one of 2 of 12 in asg web-prod that had a login by deploy"
        );
        // ln 6 is less than the weight of one unique feature (ln 12): not an outlier.
        assert!(s.hosts.iter().all(|h| !h.outlier));
        // A feature on a third of the group is not rare at all.
        for id in ["id-4", "id-5"] {
            features
                .get_mut(id)
                .unwrap()
                .insert(f(FeatureKind::Login, "deploy"));
        }
        let s = score_group("asg web-prod", &members, &features);
        assert!(s.hosts.iter().all(|h| h.score == 0.0));
        // Zero, not minus zero: "-0.00" is what a page would show.
        assert!(s.hosts.iter().all(|h| h.score.is_sign_positive()));
    }

    #[test]
    fn small_groups_are_not_scored_and_say_so() {
        let (members, features) = fleet(2);
        let s = score_group("asg tiny", &members, &features);
        assert!(!s.scored);
        assert_eq!(
            s.note.as_deref(),
            Some("asg tiny has 2 members: groups of fewer than 3 are not scored")
        );
        assert!(s.hosts.iter().all(|h| !h.outlier && h.score == 0.0));
    }

    #[test]
    fn a_noisy_group_flags_only_what_stands_out_of_its_noise() {
        // Every host has one unique destination (noise); web-9 has five unique things.
        let (members, mut features) = fleet(12);
        for (i, (id, _)) in members.iter().enumerate() {
            features
                .get_mut(id)
                .unwrap()
                .insert(f(FeatureKind::Connect, &format!("203.0.113.{i}:443")));
        }
        let odd = features.get_mut("id-9").unwrap();
        for x in ["a", "b", "c", "d"] {
            odd.insert(f(FeatureKind::Exec, &format!("/tmp/{x}")));
        }
        let s = score_group("asg web-prod", &members, &features);
        let flagged: Vec<&str> = s
            .hosts
            .iter()
            .filter(|h| h.outlier)
            .map(|h| h.hostname.as_str())
            .collect();
        assert_eq!(flagged, vec!["web-9"]);
    }
}
