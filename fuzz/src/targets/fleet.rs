//! The fleet's outside input: a VPC peering inventory (`DATA/vpc-peering.json`, the JSON of
//! `aws ec2 describe-vpc-peering-connections`), and the groups it makes of hosts.

use super::{shape_of, text, Target};
use cairn_collector::fleet::groups::{groups_of, Peering};
use cairn_protocol::manifest::{CloudIdentity, HostIdentity};

const DICT: &[&[u8]] = &[
    b"\"VpcPeeringConnections\"",
    b"\"AccepterVpcInfo\"",
    b"\"RequesterVpcInfo\"",
    b"\"VpcId\"",
    b"\"OwnerId\"",
    b"\"Status\"",
    b"\"Code\"",
    b"\"active\"",
    b"\"deleted\"",
    b"\"vpc-a\"",
    b"\"vpc-b\"",
    b"\"123456789012\"",
];

fn host(vpc: &str) -> HostIdentity {
    HostIdentity {
        cloud: Some(CloudIdentity {
            provider: "aws".into(),
            account_id: Some("123456789012".into()),
            network_id: Some(vpc.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn peering(d: &[u8]) -> u64 {
    let r = Peering::from_json(d);
    if let Ok(p) = &r {
        // Peered networks are one group whichever side is asked, and asking twice agrees.
        let a = groups_of(&host("vpc-a"), p);
        let b = groups_of(&host("vpc-b"), p);
        assert_eq!(
            a,
            groups_of(&host("vpc-a"), p),
            "grouping is not deterministic"
        );
        assert_eq!(a.len(), 1, "one network group: {a:?}");
        assert_eq!(b.len(), 1, "one network group: {b:?}");
    }
    shape_of(&r, |p| {
        let a = groups_of(&host("vpc-a"), p);
        let b = groups_of(&host("vpc-b"), p);
        format!("joined {}", a[0].key == b[0].key)
    })
}

pub fn targets() -> Vec<Target> {
    vec![text(
        "vpc_peering",
        "fleet::groups::Peering::from_json (DATA/vpc-peering.json)",
        DICT,
        peering,
    )]
}
