//! Where the object store's keys, region and endpoint come from, in the order the AWS tools
//! use: the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`), then the shared
//! files (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, profile `AWS_PROFILE`), then a web
//! identity token (EKS IRSA: `AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`), then the container
//! credentials endpoint (ECS task role, EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_*`), then
//! the EC2 instance role through IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, off with
//! `AWS_EC2_METADATA_DISABLED=true`). All but the first two expire: they are fetched again
//! five minutes before ([`super::federated`] for the first two of those).

use super::sigv4::Keys;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Looks up variables: the process environment, or a map in tests.
pub type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[derive(Debug, thiserror::Error)]
#[error("object store credentials: {0}")]
pub struct CredentialError(pub String);

/// Where keys came from, for `/healthz` and the start-up line (never the keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Environment,
    Profile,
    WebIdentity,
    Container,
    InstanceRole,
}

/// A profile's settings from the shared config and credentials files.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub values: HashMap<String, String>,
}

impl Profile {
    fn get(&self, k: &str) -> Option<String> {
        self.values.get(k).cloned().filter(|v| !v.is_empty())
    }
}

/// The INI sections of an AWS shared file: `[name]` (credentials) or `[profile name]` (config;
/// `[default]` in both). Lines that are not `key = value` are skipped, as the CLI does.
fn parse_ini(text: &str, profile: &str, config_file: bool) -> Profile {
    let mut values = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            let name = if config_file && section != "default" {
                section.strip_prefix("profile ").map(str::trim)
            } else {
                Some(section)
            };
            inside = name == Some(profile);
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                values.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    Profile { values }
}

fn home_file(env: &Env, var: &str, default: &str) -> Option<PathBuf> {
    env(var)
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(default)))
}

/// The named profile (`AWS_PROFILE`, else `default`), merged from both shared files.
pub fn load_profile(env: &Env) -> Profile {
    let name = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let mut merged = Profile::default();
    for (var, default, config) in [
        ("AWS_CONFIG_FILE", ".aws/config", true),
        ("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials", false),
    ] {
        // Bounded read: these files are small; a huge one is not a profile.
        if let Some(text) = home_file(env, var, default)
            .and_then(|p| std::fs::read(p).ok())
            .filter(|b| b.len() <= 1 << 20)
            .and_then(|b| String::from_utf8(b).ok())
        {
            merged.values.extend(parse_ini(&text, &name, config).values);
        }
    }
    merged
}

pub fn region(env: &Env, profile: &Profile) -> Option<String> {
    env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile.get("region"))
}

pub fn endpoint(env: &Env, profile: &Profile) -> Option<String> {
    env("AWS_ENDPOINT_URL_S3")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| profile.get("endpoint_url"))
}

/// Keys from the environment or the profile, when either has them.
pub fn static_keys(env: &Env, profile: &Profile) -> Option<(Keys, Source)> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Some((
            Keys {
                access_key_id: id,
                secret_access_key: secret,
                session_token: env("AWS_SESSION_TOKEN"),
            },
            Source::Environment,
        ));
    }
    match (
        profile.get("aws_access_key_id"),
        profile.get("aws_secret_access_key"),
    ) {
        (Some(id), Some(secret)) => Some((
            Keys {
                access_key_id: id,
                secret_access_key: secret,
                session_token: profile.get("aws_session_token"),
            },
            Source::Profile,
        )),
        _ => None,
    }
}

/// The EC2 instance metadata service (IMDSv2: a session token first).
pub struct Imds {
    endpoint: String,
    agent: ureq::Agent,
}

const IMDS_MAX_BODY: u64 = 64 * 1024;

impl Imds {
    pub fn from_env(env: &Env) -> Option<Imds> {
        if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| "http://169.254.169.254".into());
        Some(Imds {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(2))
                .build(),
        })
    }

    fn token(&self) -> Result<String, CredentialError> {
        let r = self
            .agent
            .put(&format!("{}/latest/api/token", self.endpoint))
            .set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .call()
            .map_err(|e| CredentialError(format!("IMDSv2 token from {}: {e}", self.endpoint)))?;
        read_small(r)
    }

    fn get(&self, token: &str, path: &str) -> Result<String, CredentialError> {
        let r = self
            .agent
            .get(&format!("{}/latest/{path}", self.endpoint))
            .set("X-aws-ec2-metadata-token", token)
            .call()
            .map_err(|e| CredentialError(format!("IMDS {path}: {e}")))?;
        read_small(r)
    }

    /// The region the instance runs in.
    pub fn region(&self) -> Result<String, CredentialError> {
        let token = self.token()?;
        Ok(self
            .get(&token, "meta-data/placement/region")?
            .trim()
            .to_string())
    }

    /// The instance role's keys and how long they last.
    pub fn role_keys(&self) -> Result<(Keys, Option<time::OffsetDateTime>), CredentialError> {
        let token = self.token()?;
        let roles = self.get(&token, "meta-data/iam/security-credentials/")?;
        let role = roles
            .lines()
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| CredentialError("the instance has no IAM role".into()))?;
        let body = self.get(
            &token,
            &format!(
                "meta-data/iam/security-credentials/{}",
                super::sigv4::uri_encode(role, false)
            ),
        )?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct RoleKeys {
            access_key_id: String,
            secret_access_key: String,
            token: Option<String>,
            expiration: Option<String>,
        }
        let k: RoleKeys = serde_json::from_str(&body)
            .map_err(|e| CredentialError(format!("IMDS role {role:?}: {e}")))?;
        let expires = k.expiration.and_then(|e| {
            time::OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339).ok()
        });
        Ok((
            Keys {
                access_key_id: k.access_key_id,
                secret_access_key: k.secret_access_key,
                session_token: k.token,
            },
            expires,
        ))
    }
}

fn read_small(r: ureq::Response) -> Result<String, CredentialError> {
    use std::io::Read;
    let mut s = String::new();
    r.into_reader()
        .take(IMDS_MAX_BODY)
        .read_to_string(&mut s)
        .map_err(|e| CredentialError(format!("IMDS answer: {e}")))?;
    Ok(s)
}

/// Where keys that expire are fetched again from.
enum Refresher {
    WebIdentity(super::federated::WebIdentity),
    Container(super::federated::Container),
    Imds(Imds),
}

impl Refresher {
    fn keys(&self) -> Result<(Keys, Option<time::OffsetDateTime>), CredentialError> {
        match self {
            Refresher::WebIdentity(w) => w.keys(),
            Refresher::Container(c) => c.keys(),
            Refresher::Imds(i) => i.role_keys(),
        }
    }
}

/// The keys requests are signed with now: fixed, or fetched and refreshed before they expire.
pub struct Credentials {
    source: Source,
    refresher: Option<Refresher>,
    current: Mutex<(Keys, Option<Instant>)>,
}

/// Fetch instance-role keys again this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

impl Credentials {
    pub fn fixed(keys: Keys, source: Source) -> Credentials {
        Credentials {
            source,
            refresher: None,
            current: Mutex::new((keys, None)),
        }
    }

    pub fn resolve(env: &Env, profile: &Profile) -> Result<Credentials, CredentialError> {
        if let Some((keys, source)) = static_keys(env, profile) {
            return Ok(Credentials::fixed(keys, source));
        }
        let (refresher, source) = if let Some(w) =
            super::federated::WebIdentity::from_env(env, region(env, profile).as_deref())
        {
            (Refresher::WebIdentity(w), Source::WebIdentity)
        } else if let Some(c) = super::federated::Container::from_env(env)? {
            (Refresher::Container(c), Source::Container)
        } else {
            let imds = Imds::from_env(env).ok_or_else(|| {
                    CredentialError(
                        "none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile in ~/.aws/credentials (AWS_PROFILE), a web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), a container credentials endpoint, or run on EC2 with an instance role".into(),
                    )
                })?;
            (Refresher::Imds(imds), Source::InstanceRole)
        };
        let (keys, expires) = refresher.keys().map_err(|e| {
            CredentialError(format!(
                "none in the environment or the shared files, and the {} failed: {}",
                match source {
                    Source::WebIdentity => "web identity exchange",
                    Source::Container => "container credentials endpoint",
                    _ => "instance role",
                },
                e.0
            ))
        })?;
        Ok(Credentials {
            source,
            refresher: Some(refresher),
            current: Mutex::new((keys, refresh_at(expires))),
        })
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The keys to sign with now; keys that expire are fetched again when close to expiry
    /// (and kept when the fetch fails: they may still be valid).
    pub fn keys(&self) -> Keys {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(r), Some(at)) = (&self.refresher, cur.1) {
            if Instant::now() >= at {
                match r.keys() {
                    Ok((k, exp)) => *cur = (k, refresh_at(exp)),
                    Err(e) => {
                        tracing::warn!("{:?} keys not refreshed: {e}", self.source);
                        cur.1 = Some(Instant::now() + Duration::from_secs(30));
                    }
                }
            }
        }
        cur.0.clone()
    }
}

fn refresh_at(expires: Option<time::OffsetDateTime>) -> Option<Instant> {
    let left = expires? - time::OffsetDateTime::now_utc();
    let left = Duration::try_from(left).unwrap_or_default();
    Some(Instant::now() + left.saturating_sub(REFRESH_BEFORE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn environment_wins_then_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\
             [ir]\naws_access_key_id = IR\naws_secret_access_key = irsecret\naws_session_token = tok\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n[profile ir]\nregion = us-east-2\nendpoint_url = http://127.0.0.1:3900\n",
        )
        .unwrap();
        let (c, f) = (creds.to_str().unwrap(), config.to_str().unwrap());
        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", c),
            ("AWS_CONFIG_FILE", f),
            ("AWS_PROFILE", "ir"),
        ]);
        let p = load_profile(&env);
        let (k, src) = static_keys(&env, &p).unwrap();
        assert_eq!((k.access_key_id.as_str(), src), ("IR", Source::Profile));
        assert_eq!(k.session_token.as_deref(), Some("tok"));
        assert_eq!(region(&env, &p).as_deref(), Some("us-east-2"));
        assert_eq!(endpoint(&env, &p).as_deref(), Some("http://127.0.0.1:3900"));

        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", c),
            ("AWS_CONFIG_FILE", f),
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_REGION", "ap-south-1"),
        ]);
        let p = load_profile(&env);
        let (k, src) = static_keys(&env, &p).unwrap();
        assert_eq!(
            (k.access_key_id.as_str(), src),
            ("ENV", Source::Environment)
        );
        assert_eq!(region(&env, &p).as_deref(), Some("ap-south-1"));
    }

    /// A loopback IMDSv2 that wants its token on every read.
    fn fake_imds() -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut token_ok = false;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    token_ok |= h
                        .to_ascii_lowercase()
                        .starts_with("x-aws-ec2-metadata-token: t0k");
                }
                let body = if line.starts_with("PUT /latest/api/token") {
                    "t0k".to_string()
                } else if !token_ok {
                    "unauthorized".to_string()
                } else if line.contains("security-credentials/ ") {
                    "web-role\n".to_string()
                } else {
                    r#"{"Code":"Success","AccessKeyId":"ASIAROLE","SecretAccessKey":"rolesecret","Token":"session","Expiration":"2099-01-01T00:00:00Z"}"#.to_string()
                };
                seen.push(line.trim().to_string());
                let mut s = s;
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (addr, t)
    }

    #[test]
    fn instance_role_keys_come_from_imdsv2() {
        let (addr, t) = fake_imds();
        let env = env_of(&[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", addr.as_str()),
            ("HOME", "/nonexistent"),
        ]);
        let c = Credentials::resolve(&env, &load_profile(&env)).unwrap();
        assert_eq!(c.source(), Source::InstanceRole);
        let k = c.keys();
        assert_eq!(k.access_key_id, "ASIAROLE");
        assert_eq!(k.session_token.as_deref(), Some("session"));
        let seen = t.join().unwrap();
        assert_eq!(seen[0], "PUT /latest/api/token HTTP/1.1");
        assert!(
            seen[2].contains("security-credentials/web-role"),
            "{seen:?}"
        );
    }

    #[test]
    fn no_keys_anywhere_says_where_it_looked() {
        let env = env_of(&[
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", "/nonexistent"),
        ]);
        let e = Credentials::resolve(&env, &load_profile(&env))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID") && e.contains("instance role"),
            "{e}"
        );
    }
}
