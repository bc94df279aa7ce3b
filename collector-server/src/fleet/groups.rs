//! Architectures: the groups a host belongs to, from what its agent said about where it runs.
//!
//! A host is in each group it is in: its network (account + VPC, with peered VPCs counted as
//! one when an inventory says they are peered) and its scaling group. Groups are computed
//! from the hosts' current identities, so a host that moves is in its new group at once.

use std::collections::{BTreeMap, BTreeSet};

use cairn_protocol::manifest::HostIdentity;
use serde::Serialize;

/// What kind of architecture a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Account + VPC (peered VPCs merged), GCE network, Azure subnet.
    Network,
    /// EC2 Auto Scaling group, GCE managed instance group, Azure scale set.
    ScalingGroup,
}

impl GroupKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            GroupKind::Network => "network",
            GroupKind::ScalingGroup => "scaling_group",
        }
    }
}

/// One group a host is in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Group {
    pub kind: GroupKind,
    /// Stable and unique: `network:aws:123456789012:vpc-0a1`.
    pub key: String,
    /// For people: `asg web-prod`, `vpc vpc-0a1 + vpc-0b2 (123456789012)`.
    pub label: String,
}

/// Which VPCs are peered, from an inventory file: the JSON of `aws ec2
/// describe-vpc-peering-connections`. Only active peerings join networks.
#[derive(Debug, Clone, Default)]
pub struct Peering {
    /// Each network's representative (union-find, path not compressed: inventories are small).
    parent: BTreeMap<String, String>,
}

/// At most this many peerings are read from one inventory.
const MAX_PEERINGS: usize = 100_000;

impl Peering {
    /// Reads `{"VpcPeeringConnections": [{"AccepterVpcInfo": {"VpcId", "OwnerId"},
    /// "RequesterVpcInfo": {…}, "Status": {"Code": "active"}}]}`.
    pub fn from_json(bytes: &[u8]) -> Result<Peering, String> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("peering inventory: {e}"))?;
        let list = v
            .get("VpcPeeringConnections")
            .and_then(|l| l.as_array())
            .ok_or("peering inventory: no VpcPeeringConnections list (the JSON of `aws ec2 describe-vpc-peering-connections`)")?;
        let mut p = Peering::default();
        for c in list.iter().take(MAX_PEERINGS) {
            if c.pointer("/Status/Code").and_then(|s| s.as_str()) != Some("active") {
                continue;
            }
            let side = |k: &str| -> Option<String> {
                let i = c.get(k)?;
                let vpc = i.get("VpcId")?.as_str()?;
                let owner = i.get("OwnerId")?.as_str()?;
                Some(network_key("aws", owner, vpc))
            };
            if let (Some(a), Some(b)) = (side("AccepterVpcInfo"), side("RequesterVpcInfo")) {
                p.join(&a, &b);
            }
        }
        Ok(p)
    }

    fn root(&self, k: &str) -> String {
        let mut k = k.to_string();
        // Bounded: each step moves to a strictly smaller key.
        while let Some(p) = self.parent.get(&k) {
            if *p >= k {
                break;
            }
            k = p.clone();
        }
        k
    }

    fn join(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            // The smaller key represents the component, so the result is the same whatever
            // the order of the inventory.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent.insert(hi, lo);
        }
    }

    /// The networks peered with `key` (itself included), sorted.
    fn component(&self, key: &str) -> Vec<String> {
        let r = self.root(key);
        let mut all: BTreeSet<String> = self
            .parent
            .keys()
            .filter(|k| self.root(k) == r)
            .cloned()
            .collect();
        all.insert(r);
        all.insert(key.to_string());
        all.into_iter().collect()
    }
}

fn network_key(provider: &str, account: &str, network: &str) -> String {
    format!("network:{provider}:{account}:{network}")
}

/// The groups a host is in.
pub fn groups_of(id: &HostIdentity, peering: &Peering) -> Vec<Group> {
    let Some(c) = id.cloud.as_ref() else {
        return Vec::new();
    };
    let account = c.account_id.as_deref().unwrap_or("?");
    let mut out = Vec::new();
    let network = c.network_id.as_deref().or(c.subnet_id.as_deref());
    if let Some(net) = network {
        let key = network_key(&c.provider, account, net);
        let peers = peering.component(&key);
        let names: Vec<&str> = peers.iter().filter_map(|k| k.rsplit(':').next()).collect();
        let word = if c.provider == "aws" {
            "vpc"
        } else {
            "network"
        };
        out.push(Group {
            kind: GroupKind::Network,
            label: format!("{word} {} ({account})", names.join(" + ")),
            key: peering.root(&key),
        });
    }
    if let Some(sg) = c.scaling_group.as_deref() {
        let region = c.region.as_deref().unwrap_or("?");
        let word = match c.provider.as_str() {
            "aws" => "asg",
            "gcp" => "mig",
            "azure" => "vmss",
            _ => "group",
        };
        let short = sg.rsplit('/').next().unwrap_or(sg);
        out.push(Group {
            kind: GroupKind::ScalingGroup,
            key: format!("scaling_group:{}:{account}:{region}:{sg}", c.provider),
            label: format!("{word} {short}"),
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cairn_protocol::manifest::CloudIdentity;

    fn host(vpc: &str, asg: Option<&str>) -> HostIdentity {
        HostIdentity {
            hostname: "h".into(),
            cloud: Some(CloudIdentity {
                provider: "aws".into(),
                account_id: Some("123456789012".into()),
                region: Some("eu-west-1".into()),
                network_id: Some(vpc.into()),
                scaling_group: asg.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_host_is_in_its_vpc_and_its_scaling_group() {
        let g = groups_of(&host("vpc-a", Some("web-prod")), &Peering::default());
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].key, "network:aws:123456789012:vpc-a");
        assert_eq!(g[0].label, "vpc vpc-a (123456789012)");
        assert_eq!(
            g[1].key,
            "scaling_group:aws:123456789012:eu-west-1:web-prod"
        );
        assert_eq!(g[1].label, "asg web-prod");
        assert!(groups_of(&HostIdentity::default(), &Peering::default()).is_empty());
    }

    #[test]
    fn peered_vpcs_are_one_network_whatever_the_order() {
        let inv = br#"{"VpcPeeringConnections":[
            {"AccepterVpcInfo":{"VpcId":"vpc-c","OwnerId":"123456789012"},
             "RequesterVpcInfo":{"VpcId":"vpc-b","OwnerId":"123456789012"},"Status":{"Code":"active"}},
            {"AccepterVpcInfo":{"VpcId":"vpc-b","OwnerId":"123456789012"},
             "RequesterVpcInfo":{"VpcId":"vpc-a","OwnerId":"123456789012"},"Status":{"Code":"active"}},
            {"AccepterVpcInfo":{"VpcId":"vpc-z","OwnerId":"123456789012"},
             "RequesterVpcInfo":{"VpcId":"vpc-a","OwnerId":"123456789012"},"Status":{"Code":"deleted"}}]}"#;
        let p = Peering::from_json(inv).unwrap();
        let keys: Vec<String> = ["vpc-a", "vpc-b", "vpc-c"]
            .iter()
            .map(|v| groups_of(&host(v, None), &p)[0].key.clone())
            .collect();
        assert!(
            keys.iter().all(|k| k == "network:aws:123456789012:vpc-a"),
            "{keys:?}"
        );
        assert_eq!(
            groups_of(&host("vpc-c", None), &p)[0].label,
            "vpc vpc-a + vpc-b + vpc-c (123456789012)"
        );
        // A deleted peering joins nothing.
        assert_eq!(
            groups_of(&host("vpc-z", None), &p)[0].key,
            "network:aws:123456789012:vpc-z"
        );
        assert!(Peering::from_json(b"[]").is_err());
        assert!(Peering::from_json(b"{not json").is_err());
    }
}
