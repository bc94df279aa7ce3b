//! Trigger payloads, as `POST /api/v1/triggers/{generic,guardduty,falco}` reads them.

use super::{shape_of, text, Target};
use cairn_collector::triggers::Triggers;

const DICT: &[&[u8]] = &[
    b"\"host\"",
    b"\"instance_id\"",
    b"\"hostname\"",
    b"\"container_id\"",
    b"\"pod\"",
    b"\"namespace\"",
    b"\"reason\"",
    b"\"profile\"",
    b"\"severity\"",
    b"\"rule\"",
    b"\"dedup_key\"",
    b"\"pid\"",
    b"\"paths\"",
    b"\"detail-type\"",
    b"\"GuardDuty Finding\"",
    b"\"detail\"",
    b"\"resource\"",
    b"\"resourceType\"",
    b"\"Instance\"",
    b"\"EKSCluster\"",
    b"\"instanceDetails\"",
    b"\"instanceId\"",
    b"\"kubernetesDetails\"",
    b"\"kubernetesWorkloadDetails\"",
    b"\"containerDetails\"",
    b"\"service\"",
    b"\"runtimeDetails\"",
    b"\"process\"",
    b"\"output_fields\"",
    b"\"container.id\"",
    b"\"k8s.pod.name\"",
    b"\"k8s.ns.name\"",
    b"\"proc.pid\"",
    b"\"priority\"",
    b"\"Critical\"",
    b"\"info\"",
    b"10.0",
    b"-0.0",
    b"1e308",
    b"4294967296",
    b"null",
];

fn read(format: &str, body: &[u8]) -> u64 {
    let r = Triggers::read(format, body);
    if let Ok(a) = &r {
        assert!(
            !a.lookups.is_empty(),
            "a {format} alert was accepted without naming a host: {a:?}"
        );
        assert!(
            !a.reason.trim().is_empty(),
            "a {format} alert without a reason"
        );
    }
    shape_of(&r, |a| {
        let l: Vec<String> = a
            .lookups
            .iter()
            .map(|l| format!("{l}").split(' ').next().unwrap_or("").to_string())
            .collect();
        format!(
            "{} {} {} {}",
            l.join(","),
            a.pid.is_some(),
            a.profile.is_some(),
            a.paths.len().min(2)
        )
    })
}

pub fn targets() -> Vec<Target> {
    vec![
        text(
            "trigger_generic",
            "triggers::parse::generic (POST /api/v1/triggers/generic)",
            DICT,
            |d| read("generic", d),
        ),
        text(
            "trigger_guardduty",
            "triggers::parse::guardduty (EventBridge event or bare finding)",
            DICT,
            |d| read("guardduty", d),
        ),
        text(
            "trigger_falco",
            "triggers::parse::falco (falcosidekick webhook)",
            DICT,
            |d| read("falco", d),
        ),
    ]
}
