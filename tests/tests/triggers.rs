//! Detection systems start collections themselves: a GuardDuty EC2 finding (EventBridge), an
//! EKS finding (the bare finding) and a falcosidekick alert each start exactly one collection
//! on the agent they are about; repeats start none; unknown hosts get 404 and malformed
//! bodies 400 naming the field.
//!
//! Two agents on one collector: "EC2" answers its instance id from a fake instance metadata
//! service on loopback (the agent's `metadata_url`); "node" has another instance id and runs a
//! pod: a process in a `kubepods…/cri-containerd-ID.scope` cgroup, with the pod name in
//! `HOSTNAME` and its namespace in a service-account mount of its own mount namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_harness::*;
use serde_json::{json, Value};

/// The harness's IMDSv2 stand-in answering for one instance; it serves until the process ends.
fn fake_imds(instance_id: &str) -> String {
    cairn_harness::imds::Imds::start(cairn_harness::imds::Instance {
        instance_id: instance_id.into(),
        account_id: "123456789012".into(),
        region: "eu-west-1".into(),
        vpc_id: "vpc-99999999".into(),
        subnet_id: "subnet-99999999".into(),
        private_ip: "10.0.1.17".into(),
        asg: None,
        name: "ip-10-0-1-17".into(),
    })
    .unwrap()
    .url
}

fn agent_with_identity(
    collector: &Collector,
    work: &Path,
    instance: &str,
    containers: bool,
) -> Agent {
    // Two agents of one machine (one machine id) are two hosts only when asked.
    let mut agent = Agent::enroll_with(collector, work, &["--new-identity"]).unwrap();
    set_agent_option(&agent.state, "metadata", "\"always\"").unwrap();
    set_agent_option(
        &agent.state,
        "metadata_url",
        &format!("\"{}\"", fake_imds(instance)),
    )
    .unwrap();
    set_agent_option(&agent.state, "heartbeat_secs", "1").unwrap();
    set_agent_option(&agent.state, "report_containers", &containers.to_string()).unwrap();
    agent.run().unwrap();
    agent
}

/// A process that looks like a container of a Kubernetes pod; removed on drop.
struct FakePod {
    child: std::process::Child,
    cgroups: Vec<PathBuf>,
}

impl Drop for FakePod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn cgroup2_mount() -> PathBuf {
    let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    m.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

fn fake_pod(container_id: &str, pod_uid: &str, name: &str, namespace: &str) -> FakePod {
    let root = cgroup2_mount();
    let uid_ = pod_uid.replace('-', "_");
    let mut cgroups = Vec::new();
    let mut dir = root.clone();
    for part in [
        "kubepods.slice".to_string(),
        "kubepods-besteffort.slice".to_string(),
        format!("kubepods-besteffort-pod{uid_}.slice"),
        format!("cri-containerd-{container_id}.scope"),
    ] {
        dir = dir.join(part);
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            cgroups.push(dir.clone());
        }
    }
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && \
         echo {namespace} > /run/secrets/kubernetes.io/serviceaccount/namespace && read go && exec sleep 600"
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("HOSTNAME", name)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    FakePod { child, cgroups }
}

/// POST a JSON body with a token; (HTTP status, JSON answer).
fn post(collector: &Collector, token: &str, path: &str, body: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(&collector.init.ca_cert)
        .args([
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data-binary", body])
        .arg(format!("{}{path}", collector.api_url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json_part, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(json_part).unwrap_or(Value::Null),
    )
}

fn get_status(collector: &Collector, token: &str, path: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&collector.init.ca_cert)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{}{path}", collector.api_url()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn collections_of(collector: &Collector, host: &str) -> Vec<Value> {
    collector
        .api_get(&format!("/api/v1/collections?host={host}"))
        .unwrap()["collections"]
        .as_array()
        .cloned()
        .unwrap()
}

fn trigger_details(collector: &Collector, collection: &str) -> Value {
    let log = collector
        .api_get(&format!("/api/v1/collections/{collection}/custody"))
        .unwrap();
    log["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "trigger_received")
        .unwrap()["details"]
        .clone()
}

const EC2: &str = "i-0a1b2c3d4e5f60718";
const NODE: &str = "i-0f9e8d7c6b5a40312";
const CONTAINER: &str = "4c01db0b339c0b5a0d0a3b2e1f5c7d9e8a6b4c2d0e1f3a5b7c9d1e3f5a7b9c1d";
const POD: &str = "payments-api-7d4b9c6f5-x2kqp";

fn eventbridge_ec2_finding(instance: &str) -> Value {
    // The EventBridge event GuardDuty emits, as in the GuardDuty user guide's sample findings.
    json!({
        "version": "0", "id": "c8c4daa7-a20c-2f03-0070-b7393dd542ad", "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty", "account": "123456789012", "time": "2026-11-29T10:00:00Z",
        "region": "eu-west-1", "resources": [],
        "detail": {
            "schemaVersion": "2.0", "accountId": "123456789012", "region": "eu-west-1", "partition": "aws",
            "id": "16afba5c5c43e07c9e3e5e2e544e95df", "arn": "arn:aws:guardduty:eu-west-1:123456789012:detector/12abc34d567e8fa901bc2d34e56789f0/finding/16afba5c5c43e07c9e3e5e2e544e95df",
            "type": "CryptoCurrency:EC2/BitcoinTool.B!DNS",
            "resource": {
                "resourceType": "Instance",
                "instanceDetails": {
                    "instanceId": instance, "instanceType": "m6i.large", "launchTime": "2026-11-29T08:00:00Z",
                    "platform": null, "availabilityZone": "eu-west-1a", "imageId": "ami-0abcdef1234567890",
                    "networkInterfaces": [{"privateIpAddress": "10.0.1.17", "subnetId": "subnet-99999999", "vpcId": "vpc-99999999"}],
                    "tags": [{"key": "Name", "value": "payments-api-1"}]
                }
            },
            "service": {
                "serviceName": "guardduty", "detectorId": "12abc34d567e8fa901bc2d34e56789f0",
                "action": {"actionType": "DNS_REQUEST", "dnsRequestAction": {"domain": "pool.minexmr.com", "protocol": "UDP", "blocked": false}},
                "resourceRole": "TARGET", "eventFirstSeen": "2026-11-29T09:58:00.000Z", "eventLastSeen": "2026-11-29T09:59:30.000Z",
                "archived": false, "count": 4
            },
            "severity": 8, "createdAt": "2026-11-29T09:59:40.123Z", "updatedAt": "2026-11-29T09:59:40.123Z",
            "title": "EC2 instance is querying a domain name associated with Bitcoin activity.",
            "description": "EC2 instance i-0a1b2c3d4e5f60718 is querying a domain name that is associated with Bitcoin-related activity."
        }
    })
}

fn eks_finding() -> Value {
    // A bare GuardDuty finding (as GetFindings returns it) from EKS audit logs.
    json!({
        "schemaVersion": "2.0", "accountId": "123456789012", "region": "eu-west-1", "partition": "aws",
        "id": "4ec4b2b1b5d0e36a8c0a1f3c52e7a9f1", "arn": "arn:aws:guardduty:eu-west-1:123456789012:detector/12abc34d567e8fa901bc2d34e56789f0/finding/4ec4b2b1b5d0e36a8c0a1f3c52e7a9f1",
        "type": "Execution:Kubernetes/ExecInKubeSystemPod",
        "resource": {
            "resourceType": "EKSCluster",
            "eksClusterDetails": {"name": "prod", "arn": "arn:aws:eks:eu-west-1:123456789012:cluster/prod", "vpcId": "vpc-99999999", "status": "ACTIVE", "createdAt": 1.7e9},
            "kubernetesDetails": {
                "kubernetesUserDetails": {"username": "arn:aws:sts::123456789012:assumed-role/dev/alice", "uid": "aws-iam-authenticator:123456789012:AROAEXAMPLE", "groups": ["system:authenticated"]},
                "kubernetesWorkloadDetails": {"name": POD, "type": "pods", "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "namespace": "payments",
                    "containers": [{"name": "api", "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments-api:1.4.2", "imagePrefix": "", "securityContext": {"privileged": false}}]}
            }
        },
        "service": {"serviceName": "guardduty", "detectorId": "12abc34d567e8fa901bc2d34e56789f0", "action": {"actionType": "KUBERNETES_API_CALL",
            "kubernetesApiCallAction": {"requestUri": "/api/v1/namespaces/payments/pods/payments-api-7d4b9c6f5-x2kqp/exec?command=sh", "verb": "create", "statusCode": 101}},
            "resourceRole": "TARGET", "eventFirstSeen": "2026-11-29T10:01:00.000Z", "eventLastSeen": "2026-11-29T10:01:00.000Z", "archived": false, "count": 1},
        "severity": 5, "createdAt": "2026-11-29T10:01:10.000Z", "updatedAt": "2026-11-29T10:01:10.000Z",
        "title": "Kubernetes client executed a command inside a pod.",
        "description": "A command was executed inside a pod in the payments namespace."
    })
}

fn falcosidekick_body() -> Value {
    // What falcosidekick's webhook output posts: Falco's JSON output.
    json!({
        "uuid": "2b0b4f5e-7d3a-4c1f-9e2a-8f6b5c4d3e2f",
        "output": "10:02:13.746609046: Notice A shell was spawned in a container with an attached terminal (evt_type=execve user=root user_uid=0 process=sh proc_exepath=/bin/dash parent=runc command=sh -i terminal=34816 container_id=4c01db0b339c container_name=api k8s_ns=payments k8s_pod_name=payments-api-7d4b9c6f5-x2kqp)",
        "priority": "Notice",
        "rule": "Terminal shell in container",
        "time": "2026-11-29T10:02:13.746609046Z",
        "output_fields": {
            "container.id": &CONTAINER[..12], "container.image.repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments-api",
            "container.name": "api", "evt.time": 1795946533746609046u64, "evt.type": "execve",
            "k8s.ns.name": "payments", "k8s.pod.name": POD, "proc.cmdline": "sh -i", "proc.exepath": "/bin/dash",
            "proc.name": "sh", "proc.pid": 4242, "proc.pname": "runc", "proc.tty": 34816, "user.loginuid": -1, "user.name": "root", "user.uid": 0
        },
        "source": "syscall", "tags": ["container", "maturity_stable", "mitre_execution", "shell", "T1059"],
        "hostname": "ip-10-0-1-18"
    })
}

#[test]
fn guardduty_and_falco_alerts_start_one_collection_on_the_right_agent() {
    let work = workdir("triggers").unwrap();
    let _pod = fake_pod(
        CONTAINER,
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        POD,
        "payments",
    );
    let collector = Collector::start(work.path()).unwrap();
    let _ec2 = agent_with_identity(&collector, work.path(), EC2, false);
    let _node = agent_with_identity(&collector, work.path(), NODE, true);

    // Both agents connected with their instance ids, and the node reports the pod.
    let hosts = wait_for(
        "both identities and the pod in `cairn hosts`",
        Duration::from_secs(60),
        || {
            let hosts = collector.hosts()?;
            let by_instance = |i: &str| {
                hosts
                    .iter()
                    .find(|h| h["instance_id"] == i && h["connected"] == true)
                    .cloned()
            };
            let (Some(a), Some(b)) = (by_instance(EC2), by_instance(NODE)) else {
                return Ok(None);
            };
            let pod_seen = b["status"]["containers"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["id"] == CONTAINER && c["pod_name"] == POD && c["pod_namespace"] == "payments"
                })
            });
            Ok(pod_seen.then_some((s(&a, "id")?, s(&b, "id")?)))
        },
    )
    .unwrap();
    let (ec2, node) = hosts;

    let mut cmd = Command::new(bin("cairn-collector").unwrap());
    cmd.args(["token", "api", "--data"])
        .arg(&collector.data)
        .args(["--name", "guardduty-eventbridge", "--role", "trigger"]);
    let out = run(cmd, Duration::from_secs(30)).unwrap().ok().unwrap();
    let token = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("cairn_api_"))
        .unwrap()
        .to_string();
    // The trigger role can trigger and nothing else.
    assert_eq!(get_status(&collector, &token, "/api/v1/hosts"), 403);
    assert_eq!(get_status(&collector, &token, "/api/v1/timeline"), 403);

    // GuardDuty EC2 finding via EventBridge → one collection on the EC2 agent. High severity
    // maps to memory, but an EC2 finding names no process: a triage, and the answer says so.
    let finding = eventbridge_ec2_finding(EC2).to_string();
    let (code, v) = post(&collector, &token, "/api/v1/triggers/guardduty", &finding);
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["host_id"], ec2.as_str(), "{v}");
    assert_eq!(v["profile"], "triage", "{v}");
    assert!(
        s(&v, "profile_note").unwrap().contains("names no process"),
        "{v}"
    );
    let gd_collection = s(&v, "id").unwrap();
    // The same finding again (GuardDuty re-sends it as its count grows): no new collection.
    let (code, again) = post(&collector, &token, "/api/v1/triggers/guardduty", &finding);
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["id"], gd_collection.as_str());
    let on_ec2 = collections_of(&collector, &ec2);
    assert_eq!(on_ec2.len(), 1, "{on_ec2:?}");
    assert_eq!(on_ec2[0]["id"], gd_collection.as_str());
    assert!(s(&on_ec2[0], "reason")
        .unwrap()
        .contains("CryptoCurrency:EC2/BitcoinTool.B!DNS"));
    // The agent received it (accepted, or already finished).
    wait_for(
        "the EC2 agent to accept the command",
        Duration::from_secs(30),
        || {
            let c = collector.show(&gd_collection)?;
            Ok((c["status"] != "requested").then_some(()))
        },
    )
    .unwrap();

    // The EKS finding (bare) names a pod: the node that runs it.
    let (code, v) = post(
        &collector,
        &token,
        "/api/v1/triggers/guardduty",
        &eks_finding().to_string(),
    );
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["host_id"], node.as_str(), "{v}");
    assert_eq!(v["profile"], "memory", "medium severity maps to memory");
    assert_eq!(
        trigger_details(&collector, &s(&v, "id").unwrap())["container_id"],
        CONTAINER
    );
    let (code, v2) = post(
        &collector,
        &token,
        "/api/v1/triggers/guardduty",
        &eks_finding().to_string(),
    );
    assert_eq!((code, &v2["id"]), (200, &v["id"]), "{v2}");

    // falcosidekick: the 12-character container id resolves to the node; pid and the full
    // container id go to the capture.
    let (code, v) = post(
        &collector,
        &token,
        "/api/v1/triggers/falco",
        &falcosidekick_body().to_string(),
    );
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["host_id"], node.as_str(), "{v}");
    assert_eq!(
        v["matched_by"],
        format!("container id \"{}\"", &CONTAINER[..12])
    );
    let details = trigger_details(&collector, &s(&v, "id").unwrap());
    assert_eq!(details["pid"], 4242);
    assert_eq!(details["container_id"], CONTAINER);
    assert_eq!(details["alert_source"], "falco");
    let (code, _) = post(
        &collector,
        &token,
        "/api/v1/triggers/falco",
        &falcosidekick_body().to_string(),
    );
    assert_eq!(
        code, 200,
        "a repeat of the alert within the window starts nothing"
    );

    assert_eq!(collections_of(&collector, &ec2).len(), 1);
    assert_eq!(collections_of(&collector, &node).len(), 2);

    // Unknown instance: 404 saying what was looked for.
    let (code, v) = post(
        &collector,
        &token,
        "/api/v1/triggers/guardduty",
        &eventbridge_ec2_finding("i-0000000000deadbee").to_string(),
    );
    assert_eq!(code, 404, "{v}");
    assert!(
        s(&v, "error")
            .unwrap()
            .contains("instance id \"i-0000000000deadbee\""),
        "{v}"
    );

    // Malformed: 400 naming the field.
    let mut bad = eventbridge_ec2_finding(EC2);
    bad["detail"]["severity"] = json!("HIGH");
    let (code, v) = post(
        &collector,
        &token,
        "/api/v1/triggers/guardduty",
        &bad.to_string(),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        s(&v, "error").unwrap().contains("\"detail.severity\""),
        "{v}"
    );
    let mut bad = falcosidekick_body();
    bad.as_object_mut().unwrap().remove("rule");
    let (code, v) = post(
        &collector,
        &token,
        "/api/v1/triggers/falco",
        &bad.to_string(),
    );
    assert_eq!(code, 400, "{v}");
    assert!(s(&v, "error").unwrap().contains("\"rule\""), "{v}");
    let (code, v) = post(
        &collector,
        &token,
        "/api/v1/triggers/generic",
        "{\"host\": \"x\", \"reason\": ",
    );
    assert_eq!(code, 400, "{v}");
    // Nothing more was started by any of these.
    assert_eq!(
        collections_of(&collector, &ec2).len() + collections_of(&collector, &node).len(),
        3
    );

    // The list pages: walked one row at a time by its `next` cursor, it is the whole list,
    // in the same order, each row once; the last page has no cursor; an unknown one is 404.
    let whole: Vec<String> = collector.api_get("/api/v1/collections").unwrap()["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| s(c, "id").unwrap())
        .collect();
    assert_eq!(whole.len(), 3, "{whole:?}");
    let mut walked = Vec::new();
    let mut path = "/api/v1/collections?limit=1".to_string();
    loop {
        let page = collector.api_get(&path).unwrap();
        let rows = page["collections"].as_array().unwrap();
        walked.extend(rows.iter().map(|c| s(c, "id").unwrap()));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/collections?limit=1&before={next}"),
            None => break,
        }
        assert!(walked.len() <= 3, "paging does not end: {walked:?}");
    }
    // The third page is full too, so a fourth (empty, no cursor) ends the walk.
    assert_eq!(walked, whole);
    let last = collector
        .api_get(&format!("/api/v1/collections?before={}", whole[2]))
        .unwrap();
    assert_eq!(last["collections"].as_array().unwrap().len(), 0, "{last}");
    assert!(last["next"].is_null(), "{last}");
    assert_eq!(
        get_status(
            &collector,
            &collector.init.admin_token,
            "/api/v1/collections?before=nope"
        ),
        404
    );
}
