//! Membership history: a host joining and leaving groups, kept as events on its own timeline
//! (source `cairn`, kinds `group_joined` and `group_left`). "Since when is web-7 in asg
//! web-prod, and where was it before" is then a timeline query beside what the host did,
//! kept on every back end and carried by `migrate`, with no table of its own.
//!
//! Changes are found where identities arrive (each agent hello): the groups of the identity
//! the collector had against those of the new one. A host's first identity joins its groups.

use cairn_protocol::manifest::HostIdentity;

use super::groups::{groups_of, Group, Peering};
use crate::error::Result;
use crate::storage::timeline::Event;
use crate::storage::MetadataStore;

/// The timeline source of membership events.
pub const SOURCE: &str = "cairn";
pub const JOINED: &str = "group_joined";
pub const LEFT: &str = "group_left";

/// The membership events between two identities of one host, at `now_ns`.
pub fn changes(
    old: Option<&HostIdentity>,
    new: &HostIdentity,
    peering: &Peering,
    now_ns: i64,
) -> Vec<Event> {
    let before: Vec<Group> = old.map(|o| groups_of(o, peering)).unwrap_or_default();
    let after = groups_of(new, peering);
    let left = before
        .iter()
        .filter(|g| !after.contains(g))
        .map(|g| (LEFT, g));
    let joined = after
        .iter()
        .filter(|g| !before.contains(g))
        .map(|g| (JOINED, g));
    left.chain(joined)
        .map(|(kind, g)| {
            let verb = if kind == JOINED { "joined" } else { "left" };
            let mut e = Event::new(now_ns, SOURCE, kind, format!("{verb} {}", g.label))
                .attr("group_key", g.key.clone())
                .attr("group_label", g.label.clone())
                .attr("group_kind", g.kind.as_str());
            e.dedup = crate::timeline::dedup_key(&[
                kind.as_bytes(),
                g.key.as_bytes(),
                &now_ns.to_le_bytes(),
            ]);
            e
        })
        .collect()
}

/// Records on `host_id`'s timeline how its groups change from the identity the store has to
/// `new`; returns how many events that made. Call before storing `new`.
pub fn record(
    meta: &dyn MetadataStore,
    host_id: &str,
    new: &HostIdentity,
    peering: &Peering,
    now_ns: i64,
) -> Result<usize> {
    let old = meta.get_host(host_id)?.and_then(|h| h.identity);
    let events = changes(old.as_ref(), new, peering, now_ns);
    if events.is_empty() {
        return Ok(0);
    }
    Ok(meta.insert_timeline(host_id, None, &events)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cairn_protocol::manifest::CloudIdentity;

    fn at(asg: &str) -> HostIdentity {
        HostIdentity {
            hostname: "web-7".into(),
            cloud: Some(CloudIdentity {
                provider: "aws".into(),
                account_id: Some("123456789012".into()),
                region: Some("eu-west-1".into()),
                network_id: Some("vpc-0a1".into()),
                scaling_group: Some(asg.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_first_identity_joins_and_a_move_leaves_one_group_for_another() {
        let p = Peering::default();
        let first = changes(None, &at("web-prod"), &p, 10);
        let mut kinds: Vec<(String, String)> = first
            .iter()
            .map(|e| (e.kind.clone(), e.message.clone()))
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                (JOINED.to_string(), "joined asg web-prod".to_string()),
                (
                    JOINED.to_string(),
                    "joined vpc vpc-0a1 (123456789012)".to_string()
                ),
            ]
        );
        // The same identity again: nothing.
        assert!(changes(Some(&at("web-prod")), &at("web-prod"), &p, 20).is_empty());
        // A move: left the old asg, joined the new one; the VPC stays.
        let moved = changes(Some(&at("web-prod")), &at("batch"), &p, 30);
        let msgs: Vec<&str> = moved.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, vec!["left asg web-prod", "joined asg batch"]);
        assert!(moved.iter().all(|e| e.time_ns == 30 && e.source == SOURCE));
        assert_eq!(moved[1].attrs["group_kind"], "scaling_group");
        assert_ne!(moved[0].dedup, moved[1].dedup);
        // A host outside any cloud is in no group: no history.
        assert!(changes(None, &HostIdentity::default(), &p, 40).is_empty());
    }
}
