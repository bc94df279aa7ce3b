//! A stand-in for the EC2 instance metadata service on loopback, in IMDSv2's wire format (a
//! session token from `PUT /latest/api/token`, required on every GET), answering for one
//! instance whose context a test can change while agents run (a host moved to another group).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::Result;

/// Where an instance sits.
#[derive(Debug, Clone)]
pub struct Instance {
    pub instance_id: String,
    pub account_id: String,
    pub region: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub private_ip: String,
    /// `aws:autoscaling:groupName`, or none.
    pub asg: Option<String>,
    pub name: String,
}

pub struct Imds {
    pub url: String,
    instance: Arc<Mutex<Instance>>,
}

impl Imds {
    pub fn start(i: Instance) -> Result<Imds> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", l.local_addr()?);
        let instance = Arc::new(Mutex::new(i));
        let shared = instance.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(c, &shared));
            }
        });
        Ok(Imds { url, instance })
    }

    /// Change what the service says (the next agent hello reports it).
    pub fn update(&self, f: impl FnOnce(&mut Instance)) {
        if let Ok(mut i) = self.instance.lock() {
            f(&mut i);
        }
    }
}

fn routes(i: &Instance) -> BTreeMap<String, String> {
    let md = "/latest/meta-data";
    let mac = "0e:00:00:00:00:01";
    let nic = format!("{md}/network/interfaces/macs/{mac}");
    let mut r: BTreeMap<String, String> = [
        (
            "/latest/dynamic/instance-identity/document".to_string(),
            format!(
                r#"{{"accountId":"{}","availabilityZone":"{}a","imageId":"ami-0abc","instanceId":"{}","instanceType":"m5.large","region":"{}"}}"#,
                i.account_id, i.region, i.instance_id, i.region
            ),
        ),
        (format!("{md}/mac"), mac.to_string()),
        (format!("{md}/network/interfaces/macs/"), format!("{mac}/")),
        (format!("{nic}/interface-id"), "eni-0a".to_string()),
        (format!("{nic}/vpc-id"), i.vpc_id.clone()),
        (format!("{nic}/subnet-id"), i.subnet_id.clone()),
        (format!("{nic}/local-ipv4s"), i.private_ip.clone()),
        (format!("{nic}/security-group-ids"), "sg-0web".to_string()),
        (format!("{md}/tags/instance/Name"), i.name.clone()),
    ]
    .into_iter()
    .collect();
    let mut keys = vec!["Name".to_string()];
    if let Some(asg) = &i.asg {
        r.insert(
            format!("{md}/tags/instance/aws:autoscaling:groupName"),
            asg.clone(),
        );
        r.insert(
            format!("{md}/autoscaling/target-lifecycle-state"),
            "InService".into(),
        );
        keys.push("aws:autoscaling:groupName".into());
    }
    r.insert(format!("{md}/tags/instance"), keys.join("\n"));
    r
}

fn serve(mut c: TcpStream, instance: &Mutex<Instance>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if req.len() > 64 * 1024 {
            return;
        }
    }
    let req = String::from_utf8_lossy(&req).to_string();
    let mut words = req.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let has = |h: &str| req.lines().any(|l| l.eq_ignore_ascii_case(h));
    let (status, body) = if method == "PUT" && path == "/latest/api/token" {
        (200, "IMDS-TOKEN-1".to_string())
    } else if !has("X-aws-ec2-metadata-token: IMDS-TOKEN-1") {
        (401, String::new())
    } else {
        let routes = match instance.lock() {
            Ok(i) => routes(&i),
            Err(_) => BTreeMap::new(),
        };
        match routes.get(path) {
            Some(b) if method == "GET" => (200, b.clone()),
            _ => (404, String::new()),
        }
    };
    let _ = c.write_all(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}
