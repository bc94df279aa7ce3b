//! Stand-ins for the three metadata services on loopback, in their real wire formats (the
//! EC2 session token included), and with the troubles a hostile or broken service has.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::find;
use super::Provider;

/// What goes wrong with the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    None,
    /// Accepts, reads, never answers.
    Hang,
    /// Answers everything with bytes that are not the format.
    Garbage,
    /// EC2: the token request is refused (IMDS off).
    Refuse,
    /// EC2: no IMDSv2 (the PUT is not allowed); plain GETs answer.
    NoToken,
    /// EC2: tags are not exposed in the metadata.
    NoTags,
    /// EC2: some paths answer 500.
    ServerErrors,
}

pub struct StandIn {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    pub fn aws(t: Trouble) -> StandIn {
        Self::with_trouble(Provider::Aws, t)
    }
    pub fn gcp(t: Trouble) -> StandIn {
        Self::with_trouble(Provider::Gcp, t)
    }
    pub fn azure(t: Trouble) -> StandIn {
        Self::with_trouble(Provider::Azure, t)
    }

    pub fn with_trouble(p: Provider, trouble: Trouble) -> StandIn {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let url = format!(
            "http://{}",
            l.local_addr().unwrap_or_else(|e| panic!("addr: {e}"))
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes(p));
        let s = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (s, routes) = (s.clone(), routes.clone());
                std::thread::spawn(move || serve(c, p, trouble, &routes, &s));
            }
        });
        StandIn { url, seen }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn serve(
    mut c: TcpStream,
    p: Provider,
    trouble: Trouble,
    routes: &BTreeMap<String, String>,
    seen: &Mutex<Vec<String>>,
) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while find(&req, b"\r\n\r\n").is_none() {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let req = String::from_utf8_lossy(&req).to_string();
    if let Ok(mut s) = seen.lock() {
        s.push(req.clone());
    }
    let (status, body) = answer(&req, p, trouble, routes);
    if trouble == Trouble::Hang {
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(&body);
}

fn answer(
    req: &str,
    p: Provider,
    trouble: Trouble,
    routes: &BTreeMap<String, String>,
) -> (u16, Vec<u8>) {
    if trouble == Trouble::Garbage {
        return (200, b"\xff\xfe{\"compute\": [\x00".to_vec());
    }
    let mut words = req.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let has = |h: &str| req.lines().any(|l| l.eq_ignore_ascii_case(h));
    match p {
        Provider::Aws => {
            if method == "PUT" && path == "/latest/api/token" {
                return match trouble {
                    Trouble::Refuse => (403, Vec::new()),
                    Trouble::NoToken => (405, Vec::new()),
                    _ if has("X-aws-ec2-metadata-token-ttl-seconds: 21600") => {
                        (200, b"TOKEN-123".to_vec())
                    }
                    _ => (400, Vec::new()),
                };
            }
            if trouble != Trouble::NoToken && !has("X-aws-ec2-metadata-token: TOKEN-123") {
                return (401, Vec::new());
            }
            if trouble == Trouble::NoTags && path.starts_with("/latest/meta-data/tags/") {
                return (404, Vec::new());
            }
            if trouble == Trouble::ServerErrors
                && (path.ends_with("/subnet-id") || path.ends_with("/iam/info"))
            {
                return (500, Vec::new());
            }
        }
        Provider::Gcp if !has("Metadata-Flavor: Google") => return (403, Vec::new()),
        Provider::Azure if !has("Metadata: true") => return (400, Vec::new()),
        _ => {}
    }
    match routes.get(path) {
        Some(b) if method == "GET" => (200, b.clone().into_bytes()),
        _ => (404, Vec::new()),
    }
}

fn routes(p: Provider) -> BTreeMap<String, String> {
    let mut r = BTreeMap::new();
    let mut add = |k: &str, v: &str| {
        r.insert(k.to_string(), v.to_string());
    };
    match p {
        Provider::Aws => {
            add(
                "/latest/dynamic/instance-identity/document",
                r#"{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1b","imageId":"ami-0abc","instanceId":"i-0123456789abcdef0","instanceType":"m5.large","region":"eu-west-1"}"#,
            );
            let md = "/latest/meta-data";
            add(&format!("{md}/mac"), "0e:00:00:00:00:01");
            // The primary interface listed second: it must still come first.
            add(
                &format!("{md}/network/interfaces/macs/"),
                "0e:00:00:00:00:02/\n0e:00:00:00:00:01/",
            );
            for (mac, eni, ips, public, sgs) in [
                (
                    "0e:00:00:00:00:01",
                    "eni-0primary",
                    "10.0.1.7\n10.0.1.8",
                    Some("203.0.113.7"),
                    "sg-0c3\nsg-0c4",
                ),
                (
                    "0e:00:00:00:00:02",
                    "eni-0second",
                    "10.0.2.9",
                    None,
                    "sg-0c5",
                ),
            ] {
                let b = format!("{md}/network/interfaces/macs/{mac}");
                add(&format!("{b}/interface-id"), eni);
                add(&format!("{b}/vpc-id"), "vpc-0a1");
                add(
                    &format!("{b}/subnet-id"),
                    if eni == "eni-0primary" {
                        "subnet-0b2"
                    } else {
                        "subnet-0b9"
                    },
                );
                add(&format!("{b}/local-ipv4s"), ips);
                if let Some(p) = public {
                    add(&format!("{b}/public-ipv4s"), p);
                }
                add(&format!("{b}/security-group-ids"), sgs);
            }
            add(
                &format!("{md}/iam/info"),
                r#"{"Code":"Success","InstanceProfileArn":"arn:aws:iam::123456789012:instance-profile/web","InstanceProfileId":"AIPAEXAMPLE"}"#,
            );
            add(
                &format!("{md}/tags/instance"),
                "Name\naws:autoscaling:groupName\nteam",
            );
            add(&format!("{md}/tags/instance/Name"), "web-7");
            add(
                &format!("{md}/tags/instance/aws:autoscaling:groupName"),
                "web-prod",
            );
            add(&format!("{md}/tags/instance/team"), "payments");
            add(
                &format!("{md}/autoscaling/target-lifecycle-state"),
                "InService",
            );
        }
        Provider::Gcp => {
            let b = "/computeMetadata/v1";
            add(&format!("{b}/instance/id"), "4520031799277581759");
            add(&format!("{b}/project/project-id"), "acme-prod");
            add(
                &format!("{b}/instance/zone"),
                "projects/123456/zones/us-central1-a",
            );
            add(
                &format!("{b}/instance/machine-type"),
                "projects/123456/machineTypes/e2-medium",
            );
            add(&format!("{b}/instance/name"), "web-3");
            add(
                &format!("{b}/instance/image"),
                "projects/debian-cloud/global/images/debian-12-bookworm-v20240110",
            );
            add(
                &format!("{b}/instance/service-accounts/default/email"),
                "web@acme-prod.iam.gserviceaccount.com",
            );
            add(
                &format!("{b}/instance/attributes/created-by"),
                "projects/123456/regions/us-central1/instanceGroupManagers/web",
            );
            add(&format!("{b}/instance/tags"), r#"["http-server","web"]"#);
            add(
                &format!("{b}/instance/network-interfaces/?recursive=true"),
                r#"[{"accessConfigs":[{"externalIp":"198.51.100.3","type":"ONE_TO_ONE_NAT"}],"ip":"10.128.0.3","mac":"42:01:0a:80:00:03","network":"projects/123456/networks/prod","subnetwork":"projects/123456/regions/us-central1/subnetworks/prod-us"}]"#,
            );
        }
        Provider::Azure => {
            add(
                "/metadata/instance?api-version=2021-02-01",
                r#"{"compute":{"azEnvironment":"AzurePublicCloud","location":"westeurope","name":"web-vmss_2","resourceGroupName":"web-rg","subscriptionId":"8d10da13-8125-4ba9-a717-bf7490507b3d","vmId":"02aab8a4-74ef-476e-8182-f6d2ba4166a6","vmScaleSetName":"web-vmss","vmSize":"Standard_D2s_v3","zone":"1","storageProfile":{"imageReference":{"id":"","offer":"0001-com-ubuntu-server-jammy","publisher":"Canonical","sku":"22_04-lts-gen2","version":"latest"}},"tagsList":[{"name":"team","value":"payments"}]},"network":{"interface":[{"ipv4":{"ipAddress":[{"privateIpAddress":"10.1.0.4","publicIpAddress":""}],"subnet":[{"address":"10.1.0.0","prefix":"24"}]},"ipv6":{"ipAddress":[]},"macAddress":"000D3AF806EC"}]}}"#,
            );
        }
    }
    r
}
