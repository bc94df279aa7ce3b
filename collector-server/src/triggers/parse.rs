//! Alert bodies → one [`Alert`]: a plain JSON request, an AWS GuardDuty finding (the
//! EventBridge event or the bare finding) and a Falco alert as falcosidekick posts it.
//!
//! Each format is read into typed structs through `serde_path_to_error`, so a malformed body
//! is answered with the path of the field that is wrong (`detail.resource.resourceType`).

use serde::Deserialize;
use serde_json::{Map, Value};

/// What to look for to find the host an alert is about, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// An agent id, hostname, instance id or machine id (the plain request's `host`).
    Any(String),
    InstanceId(String),
    Hostname(String),
    /// A full container id or a prefix of at least 12 characters.
    ContainerId(String),
    /// A pod by name (or, for a workload that is not a pod, its pods' name prefix).
    Pod {
        name: String,
        namespace: Option<String>,
        prefix: bool,
    },
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Any(h) => write!(
                f,
                "host {h:?} (agent id, hostname, instance id or machine id)"
            ),
            Lookup::InstanceId(i) => write!(f, "instance id {i:?}"),
            Lookup::Hostname(h) => write!(f, "hostname {h:?}"),
            Lookup::ContainerId(c) => write!(f, "container id {c:?}"),
            Lookup::Pod {
                name,
                namespace,
                prefix,
            } => write!(
                f,
                "pod {}{name:?}{}",
                if *prefix { "of workload " } else { "" },
                namespace
                    .as_ref()
                    .map(|n| format!(" in namespace {n:?}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// An alert, whatever format it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `generic`, `guardduty` or `falco`.
    pub source: &'static str,
    /// The finding type or rule name, for the profile mapping.
    pub rule: String,
    /// Severity or priority as the source says it, lower-cased (`high`, `critical`, …).
    pub severity: String,
    /// Why: goes into the collection's reason and custody log.
    pub reason: String,
    /// Alerts with the same key inside the dedup window start one collection.
    pub dedup_key: String,
    pub lookups: Vec<Lookup>,
    /// A profile the request names itself (plain requests only).
    pub profile: Option<String>,
    pub pid: Option<u32>,
    pub container_id: Option<String>,
    pub paths: Vec<String>,
}

impl Alert {
    /// Whether the alert is about a container or a pod (its memory can then be captured).
    pub fn names_container(&self) -> bool {
        self.container_id.is_some()
            || self
                .lookups
                .iter()
                .any(|l| matches!(l, Lookup::ContainerId(_) | Lookup::Pod { .. }))
    }
}

/// A body that could not be read: the field at fault (empty for the body itself) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", if field.is_empty() { format!("malformed JSON: {message}") } else { format!("malformed JSON: field \"{field}\": {message}") })]
pub struct BadAlert {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> BadAlert {
    BadAlert {
        field: field.to_string(),
        message: message.into(),
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: Value, prefix: &str) -> Result<T, BadAlert> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let mut path: Vec<String> = [prefix.to_string(), e.path().to_string()]
            .into_iter()
            .filter(|p| !p.is_empty() && p != ".")
            .collect();
        let message = e.into_inner().to_string();
        // serde names a missing field in the message, at its parent's path: name the field.
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            path.push(missing.to_string());
        }
        bad(&path.join("."), message)
    })
}

fn parse_value(body: &[u8]) -> Result<Value, BadAlert> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad("", e.to_string()))?;
    if !v.is_object() {
        return Err(bad("", "the body must be a JSON object"));
    }
    Ok(v)
}

// ---- plain JSON ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generic {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    container_id: Option<String>,
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    reason: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    dedup_key: Option<String>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    paths: Vec<String>,
}

/// `POST /api/v1/triggers/generic`: `{"host"|"instance_id"|"hostname"|"container_id"|"pod",
/// "reason", "profile"?, "severity"?, "rule"?, "dedup_key"?, "pid"?, "paths"?}`.
pub fn generic(body: &[u8]) -> Result<Alert, BadAlert> {
    let g: Generic = typed(parse_value(body)?, "")?;
    if g.reason.trim().is_empty() {
        return Err(bad("reason", "must say why evidence is collected"));
    }
    let mut lookups = Vec::new();
    if let Some(c) = &g.container_id {
        lookups.push(Lookup::ContainerId(c.to_ascii_lowercase()));
    }
    if let Some(p) = &g.pod {
        lookups.push(Lookup::Pod {
            name: p.clone(),
            namespace: g.namespace.clone(),
            prefix: false,
        });
    }
    if let Some(i) = &g.instance_id {
        lookups.push(Lookup::InstanceId(i.clone()));
    }
    if let Some(h) = &g.hostname {
        lookups.push(Lookup::Hostname(h.clone()));
    }
    if let Some(h) = &g.host {
        lookups.push(Lookup::Any(h.clone()));
    }
    if lookups.is_empty() {
        return Err(bad(
            "host",
            "name the host: one of host, instance_id, hostname, container_id or pod",
        ));
    }
    let rule = g.rule.clone().unwrap_or_default();
    let dedup_key = g
        .dedup_key
        .clone()
        .unwrap_or_else(|| format!("{:?}|{rule}|{}", lookups, g.reason));
    Ok(Alert {
        source: "generic",
        rule,
        severity: g.severity.unwrap_or_default().to_ascii_lowercase(),
        reason: g.reason,
        dedup_key: format!("generic:{dedup_key}"),
        lookups,
        profile: g.profile,
        pid: g.pid,
        container_id: g.container_id,
        paths: g.paths,
    })
}

// ---- GuardDuty ----

#[derive(Deserialize)]
struct EventBridge {
    #[serde(rename = "detail-type")]
    detail_type: String,
    detail: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Finding {
    id: String,
    #[serde(rename = "type")]
    finding_type: String,
    severity: f64,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    resource: Resource,
    #[serde(default)]
    service: Option<Service>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    resource_type: String,
    #[serde(default)]
    instance_details: Option<InstanceDetails>,
    #[serde(default)]
    kubernetes_details: Option<KubernetesDetails>,
    #[serde(default)]
    container_details: Option<ContainerDetails>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceDetails {
    #[serde(default)]
    instance_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubernetesDetails {
    #[serde(default)]
    kubernetes_workload_details: Option<Workload>,
}

#[derive(Deserialize)]
struct Workload {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct ContainerDetails {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Service {
    #[serde(default)]
    runtime_details: Option<RuntimeDetails>,
}

#[derive(Deserialize)]
struct RuntimeDetails {
    #[serde(default)]
    process: Option<RuntimeProcess>,
}

#[derive(Deserialize)]
struct RuntimeProcess {
    #[serde(default)]
    pid: Option<u32>,
}

/// GuardDuty's severity bands (0.1-3.9 low, 4.0-6.9 medium, 7.0-8.9 high, 9.0+ critical).
pub fn guardduty_band(severity: f64) -> &'static str {
    if severity >= 9.0 {
        "critical"
    } else if severity >= 7.0 {
        "high"
    } else if severity >= 4.0 {
        "medium"
    } else {
        "low"
    }
}

/// `POST /api/v1/triggers/guardduty`: an EventBridge event (`detail-type: "GuardDuty
/// Finding"`, the finding in `detail`) or the bare finding.
pub fn guardduty(body: &[u8]) -> Result<Alert, BadAlert> {
    let v = parse_value(body)?;
    let (finding, prefix): (Value, &str) = if v.get("detail-type").is_some() {
        let eb: EventBridge = typed(v, "")?;
        if eb.detail_type != "GuardDuty Finding" {
            return Err(bad(
                "detail-type",
                format!(
                    "is {:?}; only \"GuardDuty Finding\" events start collections",
                    eb.detail_type
                ),
            ));
        }
        (eb.detail, "detail")
    } else {
        (v, "")
    };
    let f: Finding = typed(finding, prefix)?;
    let field = |p: &str| {
        if prefix.is_empty() {
            p.to_string()
        } else {
            format!("{prefix}.{p}")
        }
    };
    if !(0.0..=10.0).contains(&f.severity) {
        return Err(bad(
            &field("severity"),
            format!("{} is outside 0-10", f.severity),
        ));
    }
    let mut lookups = Vec::new();
    let mut container_id = None;
    if let Some(c) = f
        .resource
        .container_details
        .as_ref()
        .and_then(|c| c.id.clone())
    {
        container_id = Some(c.clone());
        lookups.push(Lookup::ContainerId(c.to_ascii_lowercase()));
    }
    if let Some(w) = f
        .resource
        .kubernetes_details
        .as_ref()
        .and_then(|k| k.kubernetes_workload_details.as_ref())
    {
        let is_pod = w
            .kind
            .as_deref()
            .is_none_or(|k| k.eq_ignore_ascii_case("pods") || k.eq_ignore_ascii_case("pod"));
        lookups.push(Lookup::Pod {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            prefix: !is_pod,
        });
    }
    if let Some(i) = f
        .resource
        .instance_details
        .as_ref()
        .and_then(|d| d.instance_id.clone())
    {
        lookups.push(Lookup::InstanceId(i));
    }
    if lookups.is_empty() {
        let missing = if f.resource.resource_type == "Instance" {
            "resource.instanceDetails.instanceId"
        } else {
            "resource.kubernetesDetails.kubernetesWorkloadDetails"
        };
        return Err(bad(
            &field(missing),
            format!(
                "a {} finding without an instance or workload names no host to collect from",
                f.resource.resource_type
            ),
        ));
    }
    let band = guardduty_band(f.severity);
    let reason = format!(
        "GuardDuty {} ({} {:.1}): {}{}",
        f.finding_type,
        band,
        f.severity,
        f.title.as_deref().unwrap_or(""),
        match (&f.account_id, &f.region) {
            (Some(a), Some(r)) => format!(" [account {a}, {r}, finding {}]", f.id),
            _ => format!(" [finding {}]", f.id),
        }
    );
    Ok(Alert {
        source: "guardduty",
        rule: f.finding_type,
        severity: band.to_string(),
        reason,
        dedup_key: format!("guardduty:{}", f.id),
        lookups,
        profile: None,
        pid: f
            .service
            .and_then(|s| s.runtime_details)
            .and_then(|r| r.process)
            .and_then(|p| p.pid),
        container_id,
        paths: Vec::new(),
    })
}

// ---- Falco ----

#[derive(Deserialize)]
struct Falco {
    rule: String,
    priority: String,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    output_fields: Map<String, Value>,
}

pub const FALCO_PRIORITIES: &[&str] = &[
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
];

/// `POST /api/v1/triggers/falco`: falcosidekick's webhook body.
pub fn falco(body: &[u8]) -> Result<Alert, BadAlert> {
    let f: Falco = typed(parse_value(body)?, "")?;
    let priority = f.priority.to_ascii_lowercase();
    let priority = if priority == "info" {
        "informational".to_string()
    } else {
        priority
    };
    if !FALCO_PRIORITIES.contains(&priority.as_str()) {
        return Err(bad(
            "priority",
            format!(
                "{:?} is not a Falco priority ({})",
                f.priority,
                FALCO_PRIORITIES.join(", ")
            ),
        ));
    }
    let field_str = |k: &str| {
        f.output_fields
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut lookups = Vec::new();
    let container = field_str("container.id").filter(|c| c != "host");
    if let Some(c) = &container {
        if c.len() < 12 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(
                "output_fields.container.id",
                format!("{c:?} is neither `host` nor a container id of at least 12 hex digits"),
            ));
        }
        lookups.push(Lookup::ContainerId(c.to_ascii_lowercase()));
    }
    if let Some(pod) = field_str("k8s.pod.name") {
        lookups.push(Lookup::Pod {
            name: pod,
            namespace: field_str("k8s.ns.name"),
            prefix: false,
        });
    }
    if let Some(h) = f.hostname.clone().filter(|h| !h.is_empty()) {
        lookups.push(Lookup::Hostname(h));
    }
    if lookups.is_empty() {
        return Err(bad("hostname", "the alert names no host, container or pod"));
    }
    let pid = match f.output_fields.get("proc.pid") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u32::try_from(p).ok()),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    if f.output_fields
        .get("proc.pid")
        .is_some_and(|p| !p.is_null())
        && pid.is_none()
    {
        return Err(bad("output_fields.proc.pid", "is not a process id"));
    }
    let reason = format!(
        "Falco {} ({}): {}",
        f.rule,
        f.priority,
        f.output.as_deref().unwrap_or("").trim()
    );
    Ok(Alert {
        source: "falco",
        dedup_key: format!(
            "falco:{}|{}|{}",
            f.rule,
            f.hostname.as_deref().unwrap_or(""),
            container.as_deref().unwrap_or("host")
        ),
        rule: f.rule,
        severity: priority,
        reason,
        lookups,
        profile: None,
        pid,
        container_id: container,
        paths: Vec::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn guardduty_eventbridge_and_bare() {
        let body = serde_json::json!({
            "version": "0", "id": "c8c4daa7-a20c-2f03-0070-b7393dd542ad", "detail-type": "GuardDuty Finding",
            "source": "aws.guardduty", "account": "123456789012", "time": "2026-11-29T10:00:00Z", "region": "eu-west-1",
            "resources": [], "detail": {"schemaVersion": "2.0", "accountId": "123456789012", "region": "eu-west-1",
            "id": "16afba5c5c43e07c9e3e5e2e544e95df", "type": "CryptoCurrency:EC2/BitcoinTool.B!DNS", "severity": 8,
            "title": "EC2 instance is querying a domain name associated with Bitcoin activity.",
            "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": "i-99999999"}}}
        });
        let a = guardduty(body.to_string().as_bytes()).unwrap();
        assert_eq!(a.lookups, vec![Lookup::InstanceId("i-99999999".into())]);
        assert_eq!(a.severity, "high");
        assert_eq!(a.dedup_key, "guardduty:16afba5c5c43e07c9e3e5e2e544e95df");
        let bare = guardduty(body["detail"].to_string().as_bytes()).unwrap();
        assert_eq!(bare.lookups, a.lookups);
        let mut wrong = body.clone();
        wrong["detail"]["resource"] = serde_json::json!({"instanceDetails": {}});
        let e = guardduty(wrong.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, "detail.resource.resourceType", "{e}");
        wrong["detail"]["resource"] =
            serde_json::json!({"resourceType": "Instance", "instanceDetails": {}});
        let e = guardduty(wrong.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, "detail.resource.instanceDetails.instanceId", "{e}");
        wrong["detail-type"] = serde_json::json!("AWS API Call via CloudTrail");
        assert_eq!(
            guardduty(wrong.to_string().as_bytes()).unwrap_err().field,
            "detail-type"
        );
        let e = guardduty(b"{\"detail-type\": \"GuardDuty Finding\", \"detail\": {\"id\": 5}}")
            .unwrap_err();
        assert_eq!(e.field, "detail.id", "{e}");
        assert_eq!(guardduty(b"{not json").unwrap_err().field, "");
    }

    #[test]
    fn falco_fields() {
        let body = br#"{"output":"16:31:56.746609046: Warning A shell was spawned in a container (user=root container_id=4c01db0b339c)","priority":"Warning","rule":"Terminal shell in container","time":"2026-11-29T10:00:00.746609046Z","output_fields":{"container.id":"4c01db0b339c","container.image.repository":"nginx","evt.time":1795946400746609046,"k8s.ns.name":"payments","k8s.pod.name":"web-7d4b9c-x2kqp","proc.cmdline":"sh -c uptime","proc.pid":4242,"user.name":"root"},"hostname":"ip-10-0-1-17","source":"syscall","tags":["container","shell"]}"#;
        let a = falco(body).unwrap();
        assert_eq!(a.lookups[0], Lookup::ContainerId("4c01db0b339c".into()));
        assert_eq!(a.pid, Some(4242));
        assert_eq!(a.severity, "warning");
        assert_eq!(
            a.dedup_key,
            "falco:Terminal shell in container|ip-10-0-1-17|4c01db0b339c"
        );
        let bad_prio = String::from_utf8_lossy(body).replace("\"Warning\"", "\"Loud\"");
        assert_eq!(falco(bad_prio.as_bytes()).unwrap_err().field, "priority");
        let no_fields = br#"{"rule":"x","priority":"Critical"}"#;
        assert_eq!(falco(no_fields).unwrap_err().field, "output_fields");
        let host_only = br#"{"rule":"x","priority":"Critical","hostname":"n1","output_fields":{"container.id":"host"}}"#;
        assert_eq!(
            falco(host_only).unwrap().lookups,
            vec![Lookup::Hostname("n1".into())]
        );
    }

    #[test]
    fn generic_names_unknown_fields() {
        let e = generic(br#"{"host":"a","reason":"x","colour":"red"}"#).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        assert_eq!(generic(br#"{"reason":"x"}"#).unwrap_err().field, "host");
        let e = generic(br#"{"host":"a","reason":"x","pid":"nope"}"#).unwrap_err();
        assert_eq!(e.field, "pid");
    }
}
