//! Google Compute Engine's metadata server (`metadata.google.internal`, the same link-local
//! address): every request carries `Metadata-Flavor: Google`, which the server requires.

use cairn_protocol::manifest::{CloudIdentity, CloudInterface};

use super::{clean, Session, MAX_ADDRESSES, MAX_INTERFACES, MAX_TAGS};

const HDR: &[(&str, &str)] = &[("Metadata-Flavor", "Google")];

pub(super) fn fetch(s: &Session) -> Result<CloudIdentity, String> {
    let base = "/computeMetadata/v1";
    let instance_id = s
        .text(&format!("{base}/instance/id"), HDR)?
        .and_then(|v| clean(&v))
        .filter(|v| v.chars().all(|c| c.is_ascii_digit()))
        .ok_or("instance/id: no numeric instance id")?;
    let mut unavailable = Vec::new();
    let get =
        |path: &str, unavailable: &mut Vec<String>| match s.text(&format!("{base}/{path}"), HDR) {
            Ok(v) => v.and_then(|v| clean(&v)),
            Err(e) => {
                unavailable.push(e);
                None
            }
        };
    // `projects/NUMBER/zones/us-central1-a`: the zone is the last segment, its region the
    // zone without its letter.
    let zone = get("instance/zone", &mut unavailable).map(|z| last_segment(&z));
    let region = zone
        .as_deref()
        .and_then(|z| z.rsplit_once('-'))
        .map(|(r, _)| r.to_string());
    let mut id = CloudIdentity {
        provider: "gcp".to_string(),
        instance_id: Some(instance_id),
        account_id: get("project/project-id", &mut unavailable),
        instance_type: get("instance/machine-type", &mut unavailable).map(|m| last_segment(&m)),
        instance_name: get("instance/name", &mut unavailable),
        image_id: get("instance/image", &mut unavailable),
        instance_profile: get("instance/service-accounts/default/email", &mut unavailable),
        // `projects/NUMBER/regions/R/instanceGroupManagers/NAME` on a managed group's member.
        scaling_group: get("instance/attributes/created-by", &mut unavailable),
        availability_zone: zone,
        region,
        ..Default::default()
    };
    if let Some(tags) = get("instance/tags", &mut unavailable) {
        match serde_json::from_str::<Vec<serde_json::Value>>(&tags) {
            Ok(v) => {
                id.security_groups = v
                    .iter()
                    .filter_map(|t| t.as_str().and_then(clean))
                    .take(MAX_TAGS)
                    .collect()
            }
            Err(e) => unavailable.push(format!("instance/tags: not a JSON list: {e}")),
        }
    }
    if let Some(nics) = get(
        "instance/network-interfaces/?recursive=true",
        &mut unavailable,
    ) {
        match serde_json::from_str::<Vec<serde_json::Value>>(&nics) {
            Ok(v) => {
                for (i, n) in v.iter().take(MAX_INTERFACES).enumerate() {
                    let field = |k: &str| n.get(k).and_then(|x| x.as_str()).and_then(clean);
                    let public_ips = n
                        .get("accessConfigs")
                        .and_then(|a| a.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|c| c.get("externalIp")?.as_str().and_then(clean))
                                .take(MAX_ADDRESSES)
                                .collect()
                        })
                        .unwrap_or_default();
                    id.interfaces.push(CloudInterface {
                        id: Some(i.to_string()),
                        mac: field("mac"),
                        private_ips: field("ip").into_iter().collect(),
                        public_ips,
                        network_id: field("network"),
                        subnet_id: field("subnetwork"),
                        security_groups: Vec::new(),
                    });
                }
            }
            Err(e) => unavailable.push(format!("network-interfaces: not a JSON list: {e}")),
        }
    }
    if let Some(first) = id.interfaces.first() {
        id.network_id = first.network_id.clone();
        id.subnet_id = first.subnet_id.clone();
    }
    unavailable
        .push("labels: not served by the metadata server (only network tags are)".to_string());
    id.unavailable = unavailable;
    Ok(id)
}

fn last_segment(v: &str) -> String {
    v.rsplit('/').next().unwrap_or(v).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::stand_in::{StandIn, Trouble};
    use super::super::{fetch_cloud_identity, MetadataConfig, MetadataMode, Provider};
    use std::time::Duration;

    #[test]
    fn the_metadata_server_gives_project_zone_network_and_account() {
        let s = StandIn::gcp(Trouble::None);
        let cfg = MetadataConfig {
            mode: MetadataMode::Always,
            provider: Some(Provider::Gcp),
            url: s.url(),
            timeout: Duration::from_secs(2),
        };
        let id = fetch_cloud_identity(&cfg).unwrap().unwrap();
        assert_eq!(id.provider, "gcp");
        assert_eq!(id.instance_id.as_deref(), Some("4520031799277581759"));
        assert_eq!(id.account_id.as_deref(), Some("acme-prod"));
        assert_eq!(id.availability_zone.as_deref(), Some("us-central1-a"));
        assert_eq!(id.region.as_deref(), Some("us-central1"));
        assert_eq!(id.instance_type.as_deref(), Some("e2-medium"));
        assert_eq!(id.instance_name.as_deref(), Some("web-3"));
        assert_eq!(
            id.network_id.as_deref(),
            Some("projects/123456/networks/prod")
        );
        assert_eq!(id.interfaces[0].private_ips, vec!["10.128.0.3"]);
        assert_eq!(id.interfaces[0].public_ips, vec!["198.51.100.3"]);
        assert_eq!(id.security_groups, vec!["http-server", "web"]);
        assert_eq!(
            id.instance_profile.as_deref(),
            Some("web@acme-prod.iam.gserviceaccount.com")
        );
        assert_eq!(
            id.scaling_group.as_deref(),
            Some("projects/123456/regions/us-central1/instanceGroupManagers/web")
        );
        assert!(s
            .requests()
            .iter()
            .all(|r| r.contains("Metadata-Flavor: Google")));
    }
}
