//! Keys the collector is handed by its platform rather than given: a container's credentials
//! endpoint (ECS task roles, EKS Pod Identity) and a web identity token exchanged with STS
//! (EKS IAM roles for service accounts). Both expire and are fetched again before they do,
//! as the instance role's are.
//!
//! Every answer is bounded and parsed as hostile: a credentials endpoint that answers
//! garbage is an error that names it, never a panic or an unbounded read.

use std::io::Read;
use std::time::Duration;

use super::credentials::{CredentialError, Env};
use super::sigv4::Keys;

/// Largest answer read from a credentials endpoint or STS.
const MAX_ANSWER: u64 = 64 * 1024;
/// Largest web identity token file (service account tokens are ~1 KiB).
const MAX_TOKEN: u64 = 16 * 1024;

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .redirects(0)
        .build()
}

fn read_bounded(r: ureq::Response, what: &str) -> Result<String, CredentialError> {
    let mut s = String::new();
    r.into_reader()
        .take(MAX_ANSWER + 1)
        .read_to_string(&mut s)
        .map_err(|e| CredentialError(format!("{what}: reading the answer: {e}")))?;
    if s.len() as u64 > MAX_ANSWER {
        return Err(CredentialError(format!(
            "{what}: answer larger than {MAX_ANSWER} bytes"
        )));
    }
    Ok(s)
}

fn read_file_bounded(path: &str, what: &str) -> Result<String, CredentialError> {
    let f =
        std::fs::File::open(path).map_err(|e| CredentialError(format!("{what} {path}: {e}")))?;
    let mut s = String::new();
    f.take(MAX_TOKEN + 1)
        .read_to_string(&mut s)
        .map_err(|e| CredentialError(format!("{what} {path}: {e}")))?;
    if s.len() as u64 > MAX_TOKEN {
        return Err(CredentialError(format!(
            "{what} {path}: larger than {MAX_TOKEN} bytes"
        )));
    }
    Ok(s.trim().to_string())
}

fn expiry(s: Option<&str>) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s?, &time::format_description::well_known::Rfc3339).ok()
}

/// The container credentials endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS, at
/// 169.254.170.2) or `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod Identity, local tests),
/// with `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)` as the Authorization header.
pub struct Container {
    url: String,
    token: Option<String>,
    token_file: Option<String>,
}

impl Container {
    pub fn from_env(env: &Env) -> Result<Option<Container>, CredentialError> {
        let url = if let Some(rel) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            format!("http://169.254.170.2{rel}")
        } else if let Some(full) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            check_full_uri(&full)?;
            full
        } else {
            return Ok(None);
        };
        Ok(Some(Container {
            url,
            token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            token_file: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        }))
    }

    pub fn keys(&self) -> Result<(Keys, Option<time::OffsetDateTime>), CredentialError> {
        let what = format!("container credentials {}", self.url);
        let mut req = agent().get(&self.url);
        // The file is read at every fetch: EKS rotates it.
        let token = match &self.token_file {
            Some(f) => Some(read_file_bounded(
                f,
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            )?),
            None => self.token.clone(),
        };
        if let Some(t) = token.filter(|t| !t.contains(['\r', '\n'])) {
            req = req.set("Authorization", &t);
        }
        let r = req
            .call()
            .map_err(|e| CredentialError(format!("{what}: {e}")))?;
        let body = read_bounded(r, &what)?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            access_key_id: String,
            secret_access_key: String,
            token: Option<String>,
            expiration: Option<String>,
        }
        let a: Answer =
            serde_json::from_str(&body).map_err(|e| CredentialError(format!("{what}: {e}")))?;
        Ok((
            Keys {
                access_key_id: a.access_key_id,
                secret_access_key: a.secret_access_key,
                session_token: a.token,
            },
            expiry(a.expiration.as_deref()),
        ))
    }
}

/// As the AWS SDKs do: a full URI over plain HTTP only to a loopback or the container
/// endpoints' link-local addresses, so a misconfiguration cannot send the token elsewhere in
/// clear.
fn check_full_uri(url: &str) -> Result<(), CredentialError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let refuse = || {
        CredentialError(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {url:?}: plain http only to a loopback address or 169.254.170.2/.23; use https"
        ))
    };
    let authority = url
        .strip_prefix("http://")
        .and_then(|r| r.split(['/', '?', '#']).next())
        .ok_or_else(refuse)?;
    // `user@host` would send the request to `host`, whatever the text before the `@` says.
    if authority.contains('@') {
        return Err(refuse());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority),
    };
    // An address, not a name: `127.0.0.1.example` is a name that resolves anywhere.
    let allowed = host == "localhost"
        || match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                ip.is_loopback()
                    || ip == std::net::IpAddr::from([169, 254, 170, 2])
                    || ip == std::net::IpAddr::from([169, 254, 170, 23])
                    || ip == std::net::IpAddr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23])
            }
            Err(_) => false,
        };
    if allowed {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// A web identity token exchanged with STS `AssumeRoleWithWebIdentity`: `AWS_ROLE_ARN`,
/// `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_SESSION_NAME` (EKS IRSA sets them), the STS
/// endpoint `AWS_ENDPOINT_URL_STS` or the region's.
pub struct WebIdentity {
    role_arn: String,
    token_file: String,
    session_name: String,
    sts: String,
}

impl WebIdentity {
    pub fn from_env(env: &Env, region: Option<&str>) -> Option<WebIdentity> {
        let role_arn = env("AWS_ROLE_ARN")?;
        let token_file = env("AWS_WEB_IDENTITY_TOKEN_FILE")?;
        let sts = env("AWS_ENDPOINT_URL_STS").unwrap_or_else(|| match region {
            Some(r) => format!("https://sts.{r}.amazonaws.com"),
            None => "https://sts.amazonaws.com".to_string(),
        });
        Some(WebIdentity {
            role_arn,
            token_file,
            session_name: env("AWS_ROLE_SESSION_NAME")
                .unwrap_or_else(|| "cairn-collector".to_string()),
            sts: sts.trim_end_matches('/').to_string(),
        })
    }

    pub fn keys(&self) -> Result<(Keys, Option<time::OffsetDateTime>), CredentialError> {
        let what = format!("STS AssumeRoleWithWebIdentity at {}", self.sts);
        // The file is read at every exchange: the kubelet rotates the token.
        let token = read_file_bounded(&self.token_file, "AWS_WEB_IDENTITY_TOKEN_FILE")?;
        let r = agent().post(&format!("{}/", self.sts)).send_form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &self.role_arn),
            ("RoleSessionName", &self.session_name),
            ("WebIdentityToken", &token),
        ]);
        let body = match r {
            Ok(r) => read_bounded(r, &what)?,
            Err(ureq::Error::Status(status, r)) => {
                let text = read_bounded(r, &what).unwrap_or_default();
                let code = super::client::xml_values(&text, "Code")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                return Err(CredentialError(format!("{what}: HTTP {status} {code}")));
            }
            Err(e) => return Err(CredentialError(format!("{what}: {e}"))),
        };
        let one = |tag: &str| {
            super::client::xml_values(&body, tag)
                .into_iter()
                .next()
                .filter(|v| !v.is_empty())
        };
        match (
            one("AccessKeyId"),
            one("SecretAccessKey"),
            one("SessionToken"),
        ) {
            (Some(id), Some(secret), Some(token)) => Ok((
                Keys {
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token: Some(token),
                },
                expiry(one("Expiration").as_deref()),
            )),
            _ => Err(CredentialError(format!(
                "{what}: the answer has no AccessKeyId, SecretAccessKey and SessionToken"
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::stand_in::Seen;
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A server answering every request with `status` and `body`, and what it saw.
    fn serve(status: u16, body: &'static str) -> (String, Arc<Mutex<Vec<Seen>>>) {
        super::super::stand_in::serve(Box::new(move |_| (status, body.into())))
    }

    fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn container_credentials_with_a_rotating_token_file() {
        let (url, seen) = serve(
            200,
            r#"{"AccessKeyId":"ASIACONTAINER","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"2030-01-01T00:00:00Z"}"#,
        );
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("token");
        std::fs::write(&tf, "pod-identity-token-1\n").unwrap();
        let env = env_of(vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{url}/v1/credentials"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                tf.display().to_string(),
            ),
        ]);
        let c = Container::from_env(&env).unwrap().unwrap();
        let (k, exp) = c.keys().unwrap();
        assert_eq!(k.access_key_id, "ASIACONTAINER");
        assert_eq!(k.session_token.as_deref(), Some("tok"));
        assert!(exp.is_some());
        std::fs::write(&tf, "pod-identity-token-2\n").unwrap();
        c.keys().unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("GET", "/v1/credentials")
        );
        assert_eq!(
            seen[0].header("authorization"),
            Some("pod-identity-token-1")
        );
        assert_eq!(
            seen[1].header("authorization"),
            Some("pod-identity-token-2"),
            "the file is read again"
        );
    }

    #[test]
    fn a_full_uri_over_plain_http_must_stay_local() {
        for bad in [
            "http://10.0.0.7/creds",
            "http://evil.example/x",
            "http://127.0.0.1@evil.example/creds",
            "http://127.0.0.1.evil.example/creds",
            "http://169.254.170.2:80@10.0.0.7/creds",
            "ftp://127.0.0.1/",
        ] {
            let env = env_of(vec![(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                bad.to_string(),
            )]);
            assert!(Container::from_env(&env).is_err(), "{bad}");
        }
        for ok in [
            "http://127.0.0.1:8080/creds",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "https://creds.example/x",
        ] {
            let env = env_of(vec![("AWS_CONTAINER_CREDENTIALS_FULL_URI", ok.to_string())]);
            assert!(Container::from_env(&env).unwrap().is_some(), "{ok}");
        }
        assert!(Container::from_env(&env_of(vec![])).unwrap().is_none());
    }

    #[test]
    fn garbage_from_a_credentials_endpoint_is_an_error() {
        let (url, _) = serve(200, "{\"AccessKeyId\": 7}");
        let env = env_of(vec![("AWS_CONTAINER_CREDENTIALS_FULL_URI", url)]);
        let e = Container::from_env(&env)
            .unwrap()
            .unwrap()
            .keys()
            .unwrap_err();
        assert!(e.0.contains("container credentials"), "{e}");
    }

    #[test]
    fn a_web_identity_token_is_exchanged_with_sts() {
        let (url, seen) = serve(
            200,
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
             <AccessKeyId>ASIAWEBID</AccessKeyId><SecretAccessKey>wsecret</SecretAccessKey>\
             <SessionToken>wtoken</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration>\
             </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
        );
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("token");
        std::fs::write(&tf, "eyJhbGciOiJSUzI1NiJ9.service-account\n").unwrap();
        let env = env_of(vec![
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/cairn-collector".into(),
            ),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", tf.display().to_string()),
            ("AWS_ENDPOINT_URL_STS", url),
        ]);
        let w = WebIdentity::from_env(&env, Some("eu-west-1")).unwrap();
        let (k, exp) = w.keys().unwrap();
        assert_eq!(k.access_key_id, "ASIAWEBID");
        assert_eq!(k.session_token.as_deref(), Some("wtoken"));
        assert!(exp.is_some());
        let req = seen.lock().unwrap()[0].clone();
        assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/"));
        let form = String::from_utf8_lossy(&req.body).to_string();
        assert!(form.contains("Action=AssumeRoleWithWebIdentity"), "{form}");
        assert!(form.contains("RoleSessionName=cairn-collector"), "{form}");
        assert!(
            form.contains("WebIdentityToken=eyJhbGciOiJSUzI1NiJ9.service-account"),
            "{form}"
        );
        // The region's endpoint when none is given.
        let env = env_of(vec![
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent".into()),
        ]);
        let w = WebIdentity::from_env(&env, Some("eu-west-1")).unwrap();
        assert_eq!(w.sts, "https://sts.eu-west-1.amazonaws.com");
        assert!(w
            .keys()
            .unwrap_err()
            .0
            .contains("AWS_WEB_IDENTITY_TOKEN_FILE"));
    }

    #[test]
    fn an_sts_refusal_names_its_code() {
        let (url, _) = serve(
            403,
            "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>",
        );
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("token");
        std::fs::write(&tf, "t").unwrap();
        let env = env_of(vec![
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", tf.display().to_string()),
            ("AWS_ENDPOINT_URL_STS", url),
        ]);
        let e = WebIdentity::from_env(&env, None)
            .unwrap()
            .keys()
            .unwrap_err();
        assert!(e.0.contains("HTTP 403 AccessDenied"), "{e}");
    }

    #[test]
    fn the_chain_takes_web_identity_then_container_then_the_instance_role() {
        use super::super::credentials::{load_profile, Credentials, Source};
        let (sts, _) = serve(
            200,
            "<Credentials><AccessKeyId>A1</AccessKeyId><SecretAccessKey>S1</SecretAccessKey><SessionToken>T1</SessionToken></Credentials>",
        );
        let (ecs, _) = serve(200, r#"{"AccessKeyId":"A2","SecretAccessKey":"S2"}"#);
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("token");
        std::fs::write(&tf, "t").unwrap();
        let both = env_of(vec![
            ("HOME", "/nonexistent".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", tf.display().to_string()),
            ("AWS_ENDPOINT_URL_STS", sts),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ecs.clone()),
        ]);
        let c = Credentials::resolve(&both, &load_profile(&both)).unwrap();
        assert_eq!(c.source(), Source::WebIdentity);
        assert_eq!(c.keys().access_key_id, "A1");
        let container = env_of(vec![
            ("HOME", "/nonexistent".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ecs),
        ]);
        let c = Credentials::resolve(&container, &load_profile(&container)).unwrap();
        assert_eq!(c.source(), Source::Container);
        assert_eq!(c.keys().access_key_id, "A2");
    }
}
