//! EC2's instance metadata service, IMDSv2 first: a session token from `PUT
//! /latest/api/token`, then the identity document and the `meta-data` tree with it. IMDSv1 (a
//! plain GET) is the fallback when the PUT is not answered (older endpoints, or a hop limit
//! of 1 seen from a container) and is itself a finding: `imdsv1_open`.

use std::collections::BTreeMap;

use cairn_protocol::manifest::{CloudIdentity, CloudInterface};

use super::http::HttpError;
use super::{clean, lines, Session, MAX_ADDRESSES, MAX_INTERFACES, MAX_TAGS};

const DOC: &str = "/latest/dynamic/instance-identity/document";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

pub(super) fn fetch(s: &Session) -> Result<CloudIdentity, String> {
    let token = match s.request(
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
    ) {
        Ok((200, body)) => Some(
            String::from_utf8(body)
                .ok()
                .and_then(|t| clean(&t))
                .ok_or("IMDS session token is not printable text")?,
        ),
        // 403: IMDS is switched off for this instance; nothing else will work.
        Ok((403, _)) => return Err("IMDS token request refused (403)".to_string()),
        Ok(_) | Err(HttpError::NoAnswer(_)) => None,
        Err(e) => return Err(e.to_string()),
    };
    let hdr: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| vec![(TOKEN_HEADER, t)])
        .unwrap_or_default();
    let doc = match s.request("GET", DOC, &hdr).map_err(|e| e.to_string())? {
        (200, body) => body,
        (status, _) => return Err(format!("{DOC}: HTTP status {status}")),
    };
    let mut id = parse_identity_document(&doc)?;
    id.imdsv1_open = Some(match token {
        None => true,
        Some(_) => matches!(s.request("GET", DOC, &[]), Ok((200, _))),
    });
    let mut unavailable = Vec::new();
    let md = |path: &str, unavailable: &mut Vec<String>| -> Option<String> {
        match s.text(&format!("/latest/meta-data/{path}"), &hdr) {
            Ok(v) => v,
            Err(e) => {
                unavailable.push(e);
                None
            }
        }
    };
    if id.image_id.is_none() {
        id.image_id = md("ami-id", &mut unavailable).and_then(|v| clean(&v));
    }
    let primary_mac = md("mac", &mut unavailable).and_then(|v| clean(&v));
    let macs = md("network/interfaces/macs/", &mut unavailable)
        .map(|v| lines(&v, MAX_INTERFACES))
        .unwrap_or_default();
    for mac in macs {
        let mac = mac.trim_end_matches('/').to_string();
        if !mac.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            unavailable.push(format!("network interface {mac:?}: not a MAC address"));
            continue;
        }
        let base = format!("network/interfaces/macs/{mac}");
        let one = |k: &str, u: &mut Vec<String>| md(&format!("{base}/{k}"), u);
        let list = |k: &str, u: &mut Vec<String>| {
            one(k, u)
                .map(|v| lines(&v, MAX_ADDRESSES))
                .unwrap_or_default()
        };
        let nic = CloudInterface {
            id: one("interface-id", &mut unavailable).and_then(|v| clean(&v)),
            network_id: one("vpc-id", &mut unavailable).and_then(|v| clean(&v)),
            subnet_id: one("subnet-id", &mut unavailable).and_then(|v| clean(&v)),
            private_ips: list("local-ipv4s", &mut unavailable),
            public_ips: list("public-ipv4s", &mut unavailable),
            security_groups: list("security-group-ids", &mut unavailable),
            mac: Some(mac.clone()),
        };
        if primary_mac.as_deref() == Some(mac.as_str()) {
            id.network_id = nic.network_id.clone();
            id.subnet_id = nic.subnet_id.clone();
            id.security_groups = nic.security_groups.clone();
            id.interfaces.insert(0, nic);
        } else {
            id.interfaces.push(nic);
        }
    }
    // No instance profile is a 404, not a gap.
    match s.text("/latest/meta-data/iam/info", &hdr) {
        Ok(Some(info)) => match serde_json::from_str::<serde_json::Value>(&info) {
            Ok(v) => {
                id.instance_profile = v
                    .get("InstanceProfileArn")
                    .and_then(|a| a.as_str())
                    .and_then(clean)
            }
            Err(e) => unavailable.push(format!("iam/info: not JSON: {e}")),
        },
        Ok(None) => {}
        Err(e) => unavailable.push(e),
    }
    id.tags = tags(s, &hdr, &mut unavailable);
    id.scaling_group = id.tags.get("aws:autoscaling:groupName").cloned();
    id.instance_name = id.tags.get("Name").cloned();
    match s.text("/latest/meta-data/autoscaling/target-lifecycle-state", &hdr) {
        Ok(v) => id.lifecycle_state = v.and_then(|v| clean(&v)),
        Err(e) => unavailable.push(e),
    }
    id.unavailable = unavailable;
    Ok(id)
}

/// The instance's tags: a 404 on the listing means tags are not exposed in the metadata
/// (the instance's `InstanceMetadataTags` is off), said so rather than taken for "no tags".
fn tags(
    s: &Session,
    hdr: &[(&str, &str)],
    unavailable: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let keys = match s.text("/latest/meta-data/tags/instance", hdr) {
        Ok(Some(v)) => lines(&v, MAX_TAGS),
        Ok(None) => {
            unavailable.push(
                "tags: not exposed by the metadata service (turn on instance metadata tags: \
                 aws ec2 modify-instance-metadata-options --instance-metadata-tags enabled)"
                    .to_string(),
            );
            return out;
        }
        Err(e) => {
            unavailable.push(e);
            return out;
        }
    };
    for key in keys {
        // IMDS exposes only keys of letters, digits and `+ - = . , _ : @`; anything else
        // cannot be a path segment and is not asked for.
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-=.,_:@".contains(c))
        {
            unavailable.push(format!("tag {key:?}: not a key IMDS can serve"));
            continue;
        }
        match s.text(&format!("/latest/meta-data/tags/instance/{key}"), hdr) {
            Ok(Some(v)) => {
                // An empty value is a tag all the same.
                out.insert(key, clean(&v).unwrap_or_default());
            }
            Ok(None) => {}
            Err(e) => unavailable.push(e),
        }
    }
    out
}

pub(super) fn parse_identity_document(body: &[u8]) -> Result<CloudIdentity, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("instance identity document is not JSON: {e}"))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).and_then(clean);
    let id = CloudIdentity {
        provider: "aws".to_string(),
        instance_id: field("instanceId"),
        region: field("region"),
        availability_zone: field("availabilityZone"),
        account_id: field("accountId"),
        instance_type: field("instanceType"),
        image_id: field("imageId"),
        ..Default::default()
    };
    if id.instance_id.is_none() {
        return Err("instance identity document has no instanceId".to_string());
    }
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::stand_in::{StandIn, Trouble};
    use super::super::{fetch_cloud_identity, MetadataConfig, MetadataMode, Provider};
    use std::time::Duration;

    fn aws(url: String) -> MetadataConfig {
        MetadataConfig {
            mode: MetadataMode::Always,
            provider: Some(Provider::Aws),
            url,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn imdsv2_gives_the_whole_context() {
        let s = StandIn::aws(Trouble::None);
        let id = fetch_cloud_identity(&aws(s.url())).unwrap().unwrap();
        assert_eq!(id.provider, "aws");
        assert_eq!(id.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(id.account_id.as_deref(), Some("123456789012"));
        assert_eq!(id.region.as_deref(), Some("eu-west-1"));
        assert_eq!(id.availability_zone.as_deref(), Some("eu-west-1b"));
        assert_eq!(id.instance_type.as_deref(), Some("m5.large"));
        assert_eq!(id.image_id.as_deref(), Some("ami-0abc"));
        assert_eq!(id.network_id.as_deref(), Some("vpc-0a1"));
        assert_eq!(id.subnet_id.as_deref(), Some("subnet-0b2"));
        assert_eq!(id.security_groups, vec!["sg-0c3", "sg-0c4"]);
        assert_eq!(id.interfaces.len(), 2);
        assert_eq!(id.interfaces[0].id.as_deref(), Some("eni-0primary"));
        assert_eq!(id.interfaces[0].private_ips, vec!["10.0.1.7", "10.0.1.8"]);
        assert_eq!(id.interfaces[0].public_ips, vec!["203.0.113.7"]);
        assert_eq!(id.interfaces[1].id.as_deref(), Some("eni-0second"));
        assert_eq!(
            id.instance_profile.as_deref(),
            Some("arn:aws:iam::123456789012:instance-profile/web")
        );
        assert_eq!(id.scaling_group.as_deref(), Some("web-prod"));
        assert_eq!(id.instance_name.as_deref(), Some("web-7"));
        assert_eq!(id.tags.get("team").map(String::as_str), Some("payments"));
        assert_eq!(id.lifecycle_state.as_deref(), Some("InService"));
        // The stand-in refuses token-less requests: IMDSv1 is closed.
        assert_eq!(id.imdsv1_open, Some(false));
        assert!(id.unavailable.is_empty(), "{:?}", id.unavailable);
        // Every request after the PUT carried the session token.
        let seen = s.requests();
        assert!(seen[0].starts_with("PUT /latest/api/token "), "{seen:?}");
        let unsigned: Vec<_> = seen[1..]
            .iter()
            .filter(|r| !r.contains("X-aws-ec2-metadata-token: TOKEN-123"))
            .collect();
        // Only the deliberate IMDSv1 probe goes without it.
        assert_eq!(unsigned.len(), 1, "{unsigned:?}");
    }

    #[test]
    fn imdsv1_only_is_reported_open() {
        let s = StandIn::aws(Trouble::NoToken);
        let id = fetch_cloud_identity(&aws(s.url())).unwrap().unwrap();
        assert_eq!(id.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(id.imdsv1_open, Some(true));
    }

    #[test]
    fn tags_off_and_failing_paths_are_said_not_hidden() {
        let s = StandIn::aws(Trouble::NoTags);
        let id = fetch_cloud_identity(&aws(s.url())).unwrap().unwrap();
        assert!(id.tags.is_empty());
        assert_eq!(id.scaling_group, None);
        assert!(
            id.unavailable
                .iter()
                .any(|u| u.starts_with("tags: not exposed")),
            "{:?}",
            id.unavailable
        );
        let s = StandIn::aws(Trouble::ServerErrors);
        let id = fetch_cloud_identity(&aws(s.url())).unwrap().unwrap();
        assert_eq!(id.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert!(
            id.unavailable.iter().any(|u| u.contains("HTTP status 500")),
            "{:?}",
            id.unavailable
        );
    }

    #[test]
    fn a_refused_token_is_an_error() {
        let s = StandIn::aws(Trouble::Refuse);
        let e = fetch_cloud_identity(&aws(s.url())).unwrap_err();
        assert!(e.contains("403"), "{e}");
    }
}
