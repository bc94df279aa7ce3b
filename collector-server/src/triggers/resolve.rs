//! Which enrolled host an alert is about, from what agents report: instance id (hello),
//! hostname, and the containers and pods in their heartbeat status. The first lookup that
//! matches anything decides; later ones narrow a multiple match.

use super::parse::Lookup;
use crate::error::{Error, Result};
use crate::storage::{HostOrigin, HostRow};

/// The containers a host's agent reported in its last heartbeat.
fn containers(h: &HostRow) -> Vec<cairn_protocol::wire::ContainerInfo> {
    h.status
        .as_ref()
        .and_then(|s| s.get("containers"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// EC2's internal DNS names: GuardDuty reports `ip-10-0-1-17.eu-west-1.compute.internal`
/// where the instance calls itself `ip-10-0-1-17`.
const EC2_INTERNAL: &[&str] = &[".compute.internal", ".ec2.internal"];

/// Host names match exactly (ignoring case), or as an EC2 internal name and its first label;
/// never by first label alone (`vm.attacker.example` is not `vm`).
fn same_host_name(host: &str, alert: &str) -> bool {
    let short_of = |fqdn: &str, short: &str| {
        !short.contains('.')
            && EC2_INTERNAL
                .iter()
                .any(|s| fqdn.to_ascii_lowercase().ends_with(s))
            && fqdn
                .split('.')
                .next()
                .is_some_and(|l| l.eq_ignore_ascii_case(short))
    };
    host.eq_ignore_ascii_case(alert) || short_of(alert, host) || short_of(host, alert)
}

/// Whether a host matches a lookup; for container and pod matches, the full container id.
fn matches(h: &HostRow, l: &Lookup) -> Option<Option<String>> {
    let hit = |b: bool| b.then_some(None);
    match l {
        Lookup::Any(q) => hit(h.id == *q
            || h.hostname == *q
            || h.instance_id.as_deref() == Some(q)
            || h.machine_id.as_deref() == Some(q)),
        Lookup::InstanceId(i) => hit(h.instance_id.as_deref() == Some(i)),
        Lookup::Hostname(n) => hit(same_host_name(&h.hostname, n)),
        Lookup::ContainerId(c) => containers(h)
            .into_iter()
            .find(|x| c.len() >= 12 && x.id.starts_with(c.as_str()))
            .map(|x| Some(x.id)),
        Lookup::Pod {
            name,
            namespace,
            prefix,
        } => containers(h)
            .into_iter()
            .find(|x| {
                let n = x.pod_name.as_deref().unwrap_or("");
                let name_ok = if *prefix {
                    n.starts_with(&format!("{name}-"))
                } else {
                    n == name
                };
                let ns_ok = match (namespace, &x.pod_namespace) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                };
                name_ok && ns_ok
            })
            .map(|x| Some(x.id)),
    }
}

/// The one enrolled host the lookups name: the first lookup that matches anything decides,
/// and the later ones narrow it down when it matched several.
pub fn resolve(hosts: &[HostRow], lookups: &[Lookup]) -> Result<(HostRow, String, Option<String>)> {
    let enrolled: Vec<&HostRow> = hosts
        .iter()
        .filter(|h| h.origin == HostOrigin::Enrolled && h.retired_at.is_none())
        .collect();
    for (i, l) in lookups.iter().enumerate() {
        let mut found: Vec<(&HostRow, Option<String>)> = enrolled
            .iter()
            .filter_map(|h| matches(h, l).map(|c| (*h, c)))
            .collect();
        if found.is_empty() {
            continue;
        }
        for narrower in &lookups[i + 1..] {
            if found.len() == 1 {
                break;
            }
            let narrowed: Vec<_> = found
                .iter()
                .filter(|(h, _)| matches(h, narrower).is_some())
                .cloned()
                .collect();
            if !narrowed.is_empty() {
                found = narrowed;
            }
        }
        return match found.as_slice() {
            [(h, c)] => Ok(((*h).clone(), l.to_string(), c.clone())),
            many => Err(Error::conflict(
                format!(
                    "{l} matches {} hosts ({}); send a more specific alert or use POST /api/v1/collections with an agent id",
                    many.len(),
                    many.iter().map(|(h, _)| h.id.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        };
    }
    Err(Error::not_found(format!(
        "no enrolled host matches; looked for {}",
        lookups
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", then ")
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn host(id: &str, hostname: &str, instance: Option<&str>, containers: Value) -> HostRow {
        HostRow {
            id: id.into(),
            hostname: hostname.into(),
            machine_id: None,
            instance_id: instance.map(Into::into),
            kernel: None,
            agent_version: None,
            enrolled_at: String::new(),
            last_seen: None,
            origin: HostOrigin::Enrolled,
            status: Some(json!({"sensor_mode": "ebpf", "containers": containers})),
            readiness: None,
            readiness_since: None,
            readiness_at: None,
            retired_at: None,
            retired_reason: None,
            identity: None,
        }
    }

    #[test]
    fn resolution_by_instance_container_pod_and_hostname() {
        let cid = "4c01db0b339c0b5a0d0a3b2e1f5c7d9e8a6b4c2d0e1f3a5b7c9d1e3f5a7b9c1d";
        let hosts = vec![
            host(
                "a",
                "ip-10-0-1-17.eu-west-1.compute.internal",
                Some("i-0aaa"),
                json!([]),
            ),
            host(
                "b",
                "ip-10-0-1-18",
                Some("i-0bbb"),
                json!([{"id": cid, "runtime": "containerd", "pod_name": "web-7d4b9c-x2kqp", "pod_namespace": "payments"}]),
            ),
        ];
        let (h, by, _) = resolve(&hosts, &[Lookup::InstanceId("i-0aaa".into())]).unwrap();
        assert_eq!(
            (h.id.as_str(), by.as_str()),
            ("a", "instance id \"i-0aaa\"")
        );
        let (h, _, c) = resolve(
            &hosts,
            &[
                Lookup::ContainerId(cid[..12].into()),
                Lookup::Hostname("x".into()),
            ],
        )
        .unwrap();
        assert_eq!(h.id, "b");
        assert_eq!(c.as_deref(), Some(cid));
        let pod = Lookup::Pod {
            name: "web".into(),
            namespace: Some("payments".into()),
            prefix: true,
        };
        assert_eq!(resolve(&hosts, &[pod]).unwrap().0.id, "b");
        let wrong_ns = Lookup::Pod {
            name: "web-7d4b9c-x2kqp".into(),
            namespace: Some("default".into()),
            prefix: false,
        };
        let e = resolve(&hosts, &[wrong_ns]).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        assert!(e.to_string().contains("namespace \"default\""), "{e}");
        assert_eq!(
            resolve(&hosts, &[Lookup::Hostname("ip-10-0-1-17".into())])
                .unwrap()
                .0
                .id,
            "a"
        );
        let e = resolve(&hosts, &[Lookup::InstanceId("i-0ccc".into())]).unwrap_err();
        assert!(e.to_string().contains("i-0ccc"), "{e}");
    }

    #[test]
    fn host_names_match_exactly_or_as_ec2_internal_names() {
        assert!(same_host_name(
            "ip-10-0-1-17",
            "ip-10-0-1-17.eu-west-1.compute.internal"
        ));
        assert!(same_host_name("ip-10-0-1-17.ec2.internal", "IP-10-0-1-17"));
        assert!(same_host_name("web-1.corp.example", "WEB-1.corp.example"));
        assert!(!same_host_name("vm", "vm.attacker.example"));
        assert!(!same_host_name("web-1.corp.example", "web-1"));
        assert!(!same_host_name(
            "ip-10-0-1-17",
            "ip-10-0-1-18.eu-west-1.compute.internal"
        ));
    }
}
