//! Azure's Instance Metadata Service: one document, `GET /metadata/instance`, with the
//! `Metadata: true` header it requires.

use cairn_protocol::manifest::{CloudIdentity, CloudInterface};

use super::{clean, Session, MAX_ADDRESSES, MAX_INTERFACES, MAX_TAGS};

const PATH: &str = "/metadata/instance?api-version=2021-02-01";

pub(super) fn fetch(s: &Session) -> Result<CloudIdentity, String> {
    let doc = s
        .text(PATH, &[("Metadata", "true")])?
        .ok_or("/metadata/instance: not found (404)")?;
    let v: serde_json::Value =
        serde_json::from_str(&doc).map_err(|e| format!("/metadata/instance: not JSON: {e}"))?;
    let compute = v.get("compute").ok_or("/metadata/instance: no compute")?;
    let field = |k: &str| compute.get(k).and_then(|x| x.as_str()).and_then(clean);
    let mut id = CloudIdentity {
        provider: "azure".to_string(),
        instance_id: Some(field("vmId").ok_or("/metadata/instance: no compute.vmId")?),
        region: field("location"),
        availability_zone: field("zone"),
        account_id: field("subscriptionId"),
        instance_type: field("vmSize"),
        instance_name: field("name"),
        resource_group: field("resourceGroupName"),
        scaling_group: field("vmScaleSetName"),
        image_id: compute
            .pointer("/storageProfile/imageReference")
            .and_then(|r| {
                let part = |k: &str| r.get(k).and_then(|x| x.as_str()).unwrap_or("");
                let id = part("id");
                if !id.is_empty() {
                    clean(id)
                } else {
                    clean(&format!(
                        "{}:{}:{}:{}",
                        part("publisher"),
                        part("offer"),
                        part("sku"),
                        part("version")
                    ))
                    .filter(|s| s != ":::")
                }
            }),
        ..Default::default()
    };
    if let Some(tags) = compute.get("tagsList").and_then(|t| t.as_array()) {
        for t in tags.iter().take(MAX_TAGS) {
            if let Some(k) = t.get("name").and_then(|x| x.as_str()).and_then(clean) {
                let val = t.get("value").and_then(|x| x.as_str()).and_then(clean);
                id.tags.insert(k, val.unwrap_or_default());
            }
        }
    }
    if let Some(nics) = v.pointer("/network/interface").and_then(|n| n.as_array()) {
        for (i, n) in nics.iter().take(MAX_INTERFACES).enumerate() {
            let addrs = |kind: &str| -> Vec<String> {
                n.pointer("/ipv4/ipAddress")
                    .and_then(|a| a.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.get(kind)?.as_str().and_then(clean))
                            .take(MAX_ADDRESSES)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            // IMDS names no virtual network; the subnet's prefix is what it gives.
            let subnet = n.pointer("/ipv4/subnet/0").and_then(|s| {
                let a = s.get("address")?.as_str()?;
                let p = s.get("prefix")?.as_str()?;
                clean(&format!("{a}/{p}"))
            });
            id.interfaces.push(CloudInterface {
                id: Some(i.to_string()),
                mac: n.get("macAddress").and_then(|x| x.as_str()).and_then(clean),
                private_ips: addrs("privateIpAddress"),
                public_ips: addrs("publicIpAddress"),
                network_id: None,
                subnet_id: subnet,
                security_groups: Vec::new(),
            });
        }
    }
    id.subnet_id = id.interfaces.first().and_then(|n| n.subnet_id.clone());
    id.unavailable.push(
        "virtual network: not named by the metadata service (the subnet prefix is kept)"
            .to_string(),
    );
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::stand_in::{StandIn, Trouble};
    use super::super::{fetch_cloud_identity, MetadataConfig, MetadataMode, Provider};
    use std::time::Duration;

    #[test]
    fn the_instance_document_gives_subscription_group_and_scale_set() {
        let s = StandIn::azure(Trouble::None);
        let cfg = MetadataConfig {
            mode: MetadataMode::Always,
            provider: Some(Provider::Azure),
            url: s.url(),
            timeout: Duration::from_secs(2),
        };
        let id = fetch_cloud_identity(&cfg).unwrap().unwrap();
        assert_eq!(id.provider, "azure");
        assert_eq!(
            id.instance_id.as_deref(),
            Some("02aab8a4-74ef-476e-8182-f6d2ba4166a6")
        );
        assert_eq!(
            id.account_id.as_deref(),
            Some("8d10da13-8125-4ba9-a717-bf7490507b3d")
        );
        assert_eq!(id.resource_group.as_deref(), Some("web-rg"));
        assert_eq!(id.scaling_group.as_deref(), Some("web-vmss"));
        assert_eq!(id.region.as_deref(), Some("westeurope"));
        assert_eq!(id.instance_type.as_deref(), Some("Standard_D2s_v3"));
        assert_eq!(id.tags.get("team").map(String::as_str), Some("payments"));
        assert_eq!(id.interfaces[0].private_ips, vec!["10.1.0.4"]);
        assert_eq!(id.subnet_id.as_deref(), Some("10.1.0.0/24"));
        assert_eq!(
            id.image_id.as_deref(),
            Some("Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest")
        );
        assert!(s.requests().iter().all(|r| r.contains("Metadata: true")));
    }
}
