//! The collector's data directory: keys, certificates, database and chunk store.
//!
//! ```text
//! DATA/ca.pem ca.key            the collector CA (key 0600)
//!      server.pem server.key    TLS certificate for QUIC and HTTPS, signed by the CA
//!      custody.key              ed25519 key that signs custody records (0600)
//!      admin.token              the first admin API token (0600), printed once by init
//!      cairn.db                 SQLite: hosts, tokens, collections, items, chunks, custody
//!      custody-heads.jsonl      every custody chain's signed head, append-only (0600)
//!      evidence.age-key         age identity evidence may be encrypted to (0600)
//!      collector.toml           optional settings (encrypt_at_rest = true)
//!      chunks/ab/abcd…          content-addressed chunk payloads
//!      scratch/                 unnamed temporary files (sealed copies the timeline reads)
//! ```

use crate::authority::Authority;
use crate::metrics::Metrics;
use crate::storage::chunk_dir::ChunkDir;
use crate::storage::head_file::HeadFile;
use crate::storage::s3::{LockMode, Retention, S3};
use crate::storage::sqlite::Sqlite;
use crate::storage::{BlobStore, HeadStore, MetadataStore, Role};
use anyhow::{bail, Context, Result};
use cairn_private_fs::write_secret;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

/// `DATA/collector.toml`: settings of a data directory, every key optional; command-line
/// flags override them.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Store new evidence chunks encrypted to `evidence.age-key`.
    pub encrypt_at_rest: bool,
    /// The metadata database, `postgres://…`; absent: `DATA/cairn.db` (SQLite).
    pub database: Option<String>,
    /// Where chunk payloads live, `s3://bucket/prefix`; absent: `DATA/chunks`.
    pub blobs: Option<String>,
    /// S3 Object Lock retention of every object written, in days (with `object_lock_mode`).
    pub object_lock_days: Option<u32>,
    /// `governance` or `compliance` (the default when days are given).
    pub object_lock_mode: Option<String>,
}

/// Where a collector keeps its metadata and its evidence bytes: the embedded default, or the
/// engines several collectors share.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    /// `postgres://…`; `None`: `DATA/cairn.db`.
    pub database: Option<String>,
    /// `s3://bucket/prefix`; `None`: `DATA/chunks` (and the head log `DATA/custody-heads.jsonl`).
    pub blobs: Option<String>,
    pub retention: Option<Retention>,
}

impl Backends {
    /// What the command line (or environment) says, else what `collector.toml` says.
    pub fn resolve(
        config: &CollectorConfig,
        database: Option<String>,
        blobs: Option<String>,
        lock_days: Option<u32>,
        lock_mode: Option<String>,
    ) -> Result<Backends> {
        let days = lock_days.or(config.object_lock_days);
        let mode = lock_mode.or_else(|| config.object_lock_mode.clone());
        let retention = match (days, mode) {
            (None, None) => None,
            (None, Some(_)) => {
                bail!("an Object Lock mode needs a retention: give --object-lock-days")
            }
            (Some(0), _) => bail!("--object-lock-days must be at least 1"),
            (Some(days), mode) => Some(Retention {
                days,
                mode: match mode {
                    None => LockMode::Compliance,
                    Some(m) => LockMode::parse(&m).ok_or_else(|| {
                        anyhow::anyhow!("Object Lock mode {m:?}: use governance or compliance")
                    })?,
                },
            }),
        };
        let b = Backends {
            database: database.or_else(|| config.database.clone()),
            blobs: blobs.or_else(|| config.blobs.clone()),
            retention,
        };
        if b.retention.is_some() && b.blobs.is_none() {
            bail!("Object Lock retention applies to an object store: give --blobs s3://…");
        }
        Ok(b)
    }

    /// What they are, for the start-up lines (never a password).
    pub fn describe(&self) -> (String, String) {
        (
            self.database
                .as_deref()
                .map(redact_url)
                .unwrap_or_else(|| "SQLite (DATA/cairn.db)".into()),
            self.blobs
                .clone()
                .unwrap_or_else(|| "chunk directory (DATA/chunks)".into()),
        )
    }
}

/// A URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The evidence key's file name in the data directory.
pub const EVIDENCE_KEY: &str = "evidence.age-key";

/// The scratch directory's name in the data directory.
pub const SCRATCH: &str = "scratch";

/// The custody head log's file name in the data directory.
pub const HEADS: &str = "custody-heads.jsonl";

#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

/// What `init` hands to the operator.
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub data_dir: String,
    pub ca_sha256: String,
    pub ca_cert: String,
    pub enrollment_token: String,
    pub enrollment_token_uses: u32,
    pub enrollment_token_expires_at: String,
    pub admin_token: String,
}

/// The blob store, and the object store when it is one (which also keeps the heads).
pub type OpenedBlobs = (Arc<dyn BlobStore>, Option<Arc<S3>>);

/// A `postgres://` (or `postgresql://`) URL's database.
fn open_database_url(url: &str) -> Result<Arc<dyn MetadataStore>> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "--database {}: give a postgres:// URL (or leave it out for the data directory's SQLite)",
            redact_url(url)
        );
    }
    let pg = crate::storage::postgres::Postgres::connect(url).map_err(|e| {
        anyhow::anyhow!(
            "--database {}: {e}; check that PostgreSQL runs there and that the user may create tables",
            redact_url(url)
        )
    })?;
    Ok(Arc::new(pg))
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    pub fn chunks(&self) -> PathBuf {
        self.path("chunks")
    }
    /// The scratch directory, made private if it is not there.
    pub fn scratch(&self) -> Result<PathBuf> {
        let p = self.path(SCRATCH);
        cairn_private_fs::create_private_dir(&p)
            .with_context(|| format!("cannot create the scratch directory {}", p.display()))?;
        Ok(p)
    }

    fn read(&self, name: &str) -> Result<String> {
        let p = self.path(name);
        fs::read_to_string(&p).with_context(|| {
            format!(
                "cannot read {} — is {} a collector data directory? Create one with `cairn-collector init --data {}`",
                p.display(),
                self.root.display(),
                self.root.display()
            )
        })
    }

    pub fn authority(&self) -> Result<Authority> {
        Authority::load(&self.read("ca.pem")?, &self.read("ca.key")?)
            .context("loading the collector CA")
    }
    pub fn ca_pem(&self) -> Result<String> {
        self.read("ca.pem")
    }
    pub fn server_cert_pem(&self) -> Result<String> {
        self.read("server.pem")
    }
    pub fn server_key_pem(&self) -> Result<String> {
        self.read("server.key")
    }
    pub fn custody_key(&self) -> Result<ed25519_dalek::SigningKey> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&self.read("custody.key")?)
            .map_err(|e| anyhow::anyhow!("custody.key is not an ed25519 PKCS#8 key: {e}"))
    }
    /// `collector.toml`, or the defaults when there is none.
    pub fn config(&self) -> Result<CollectorConfig> {
        let p = self.path("collector.toml");
        match fs::read_to_string(&p) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is not a valid collector configuration", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CollectorConfig::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    /// The evidence key (age X25519 identity), created on first use: agents encrypt offline
    /// collections to its public half, and with `--encrypt-at-rest` chunks are stored
    /// encrypted to it. Back it up: what is encrypted to it is unreadable without it.
    pub fn evidence_key(&self) -> Result<crate::crypt::EvidenceKey> {
        let p = self.path(EVIDENCE_KEY);
        match fs::read_to_string(&p) {
            Ok(text) => Ok(crate::crypt::EvidenceKey::parse(&text)
                .with_context(|| format!("{} is not an age identity", p.display()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = crate::crypt::EvidenceKey::generate();
                write_secret(&p, key.to_file_text().as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    /// 32 random bytes for QUIC stateless resets, created on first use.
    pub fn quic_reset_secret(&self) -> Result<Vec<u8>> {
        let p = self.path("quic-reset.key");
        match fs::read(&p) {
            Ok(b) if b.len() == 32 => Ok(b),
            _ => {
                let secret: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
                write_secret(&p, &secret)?;
                Ok(secret)
            }
        }
    }

    /// The TLS certificate chain and key the QUIC and HTTPS listeners present.
    pub fn server_identity(
        &self,
    ) -> Result<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )> {
        let certs = rustls_pemfile::certs(&mut self.server_cert_pem()?.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("server.pem is not a PEM certificate chain")?;
        let key = rustls_pemfile::private_key(&mut self.server_key_pem()?.as_bytes())
            .context("server.key is not a PEM private key")?
            .context("server.key holds no private key")?;
        Ok((certs, key))
    }

    /// The metadata store the backends name: PostgreSQL, or the data directory's SQLite file.
    pub fn open_meta(&self, b: &Backends) -> Result<Arc<dyn MetadataStore>> {
        match b.database.as_deref() {
            None => Ok(Arc::new(self.open_db()?)),
            Some(url) => open_database_url(url),
        }
    }

    /// The blob store the backends name, and the object store when it is one (it also keeps
    /// the custody heads).
    pub fn open_blob_store(
        &self,
        b: &Backends,
        fsync: bool,
        metrics: &Arc<Metrics>,
    ) -> Result<OpenedBlobs> {
        match b.blobs.as_deref() {
            None => Ok((Arc::new(ChunkDir::new(self.chunks(), fsync)), None)),
            Some(url) => {
                let m = metrics.clone();
                let s3 = Arc::new(S3::open(
                    url,
                    b.retention,
                    &crate::storage::s3::credentials::process_env,
                    Box::new(move |op, took, failed| m.object_store(op, took, failed)),
                )?);
                Ok((s3.clone(), Some(s3)))
            }
        }
    }

    /// The custody heads: beside the evidence (the object store, or the head log of the data
    /// directory). Heads missing while the database holds chains is refused, with the way out.
    pub fn open_head_store(
        &self,
        meta: &dyn MetadataStore,
        s3: Option<Arc<S3>>,
    ) -> Result<Arc<dyn HeadStore>> {
        let Some(s3) = s3 else {
            return Ok(Arc::new(self.open_heads(meta)?));
        };
        if s3.chains()? == 0 {
            let chains = meta.custody_tails()?.len();
            if chains > 0 {
                bail!(
                    "the object store holds no custody heads while the database holds {chains} custody chain(s): a wrong bucket or prefix, or the heads were deleted. \
                     Custody cannot prove that no records were removed. If this is a migration, run `cairn-collector migrate` (it copies the heads); \
                     if you restored on purpose, `cairn-collector custody publish-heads` publishes the database's (this trusts the database)"
                );
            }
        }
        Ok(s3)
    }

    pub fn open_db(&self) -> Result<Sqlite> {
        let p = self.path("cairn.db");
        if !p.exists() {
            bail!(
                "{} does not exist — create the data directory with `cairn-collector init --data {}`",
                p.display(),
                self.root.display()
            );
        }
        Ok(Sqlite::open(&p)?)
    }

    /// Refuse a data directory other users can read: it holds the evidence (a collected
    /// `/etc/shadow`), the CA key and the custody key. The directory and its chunk directories
    /// must be private (the fix is in the message); a file inside that others could read (an
    /// operator's `triggers.toml` written with umask 022) is made private, and said so.
    pub fn check_private(&self) -> Result<()> {
        let mut exposed = Vec::new();
        for dir in [self.root.clone(), self.chunks()] {
            if let Some(why) = cairn_private_fs::exposure(&dir)? {
                exposed.push(why);
            }
        }
        if let Ok(rd) = fs::read_dir(self.chunks()) {
            for entry in rd.flatten().filter(|e| e.path().is_dir()) {
                if let Some(why) = cairn_private_fs::exposure(&entry.path())? {
                    exposed.push(why);
                }
            }
        }
        if !exposed.is_empty() {
            let n = exposed.len();
            let first: Vec<String> = exposed.into_iter().take(3).collect();
            bail!(
                "{} holds evidence and keys, but {}{}. Fix: `chmod -R go-rwx {}` (and run the collector as the only user with access)",
                self.root.display(),
                first.join("; "),
                if n > 3 { "; …" } else { "" },
                self.root.display()
            );
        }
        for entry in fs::read_dir(&self.root)
            .with_context(|| format!("cannot read {}", self.root.display()))?
            .flatten()
        {
            let p = entry.path();
            if p.is_file() && cairn_private_fs::exposure(&p)?.is_some() {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot make {} private", p.display()))?;
                tracing::warn!(
                    "{} was readable by other users: made private (0600)",
                    p.display()
                );
            }
        }
        Ok(())
    }

    /// The custody head log. A data directory whose database holds custody chains but whose
    /// head log is gone was tampered with or restored without it: refused, with the way out.
    pub fn open_heads(&self, db: &dyn MetadataStore) -> Result<HeadFile> {
        let p = self.path(HEADS);
        if !p.exists() {
            let chains = db.custody_tails()?.len();
            if chains > 0 {
                bail!(
                    "{} is missing while the database holds {chains} custody chain(s): it was deleted, or the data directory was restored without it. \
                     Custody cannot prove that no records were removed. If you restored a backup on purpose, publish the database's heads as they are now \
                     (this trusts the database) with `cairn-collector custody publish-heads --data {}`",
                    p.display(),
                    self.root.display()
                );
            }
        }
        Ok(HeadFile::open(&p, true)?)
    }

    /// Files one collector instance shares with the others serving the same fleet: the CA
    /// (agents pin it, and the instances issue certificates with it), the server certificate,
    /// the custody key (one signer for every chain), the evidence key, the QUIC reset key (a
    /// reset from one instance is understood by an agent of another) and the settings.
    pub const PEER_FILES: &'static [&'static str] = &[
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "custody.key",
        EVIDENCE_KEY,
        "quic-reset.key",
        "admin.token",
        "collector.toml",
    ];

    /// A new data directory for one more instance of the collector at `from`: its keys and
    /// settings, copied privately. The instances must share a database and an object store
    /// (`collector.toml` or the flags): refused otherwise, as each would see only its own.
    pub fn init_peer(&self, from: &DataDir, backends: &Backends) -> Result<()> {
        if backends.database.is_none() || backends.blobs.is_none() {
            bail!(
                "several instances need a shared database and object store: give --database postgres://… and --blobs s3://… (or set them in {}/collector.toml)",
                from.root.display()
            );
        }
        if self.path("ca.key").exists() {
            bail!(
                "{} already holds a collector (ca.key exists); refusing to overwrite its keys",
                self.root.display()
            );
        }
        from.check_private()?;
        cairn_private_fs::create_private_dir(&self.root)?;
        cairn_private_fs::create_private_dir(&self.chunks())?;
        for name in Self::PEER_FILES {
            match fs::read(from.path(name)) {
                Ok(bytes) => write_secret(&self.path(name), &bytes)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && *name == "collector.toml" => {
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {}", from.path(name).display()))
                }
            }
        }
        Ok(())
    }

    /// Name the back ends in `collector.toml` (keeping what else it says), so that every
    /// command given `--data` finds them without the flags.
    pub fn record_backends(&self, b: &Backends) -> Result<()> {
        if b.database.is_none() && b.blobs.is_none() {
            return Ok(());
        }
        let p = self.path("collector.toml");
        let mut doc: toml::Table = match fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t).with_context(|| format!("{} is not TOML", p.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        if let Some(db) = &b.database {
            doc.insert("database".into(), toml::Value::String(db.clone()));
        }
        if let Some(blobs) = &b.blobs {
            doc.insert("blobs".into(), toml::Value::String(blobs.clone()));
        }
        if let Some(r) = b.retention {
            doc.insert(
                "object_lock_days".into(),
                toml::Value::Integer(i64::from(r.days)),
            );
            doc.insert(
                "object_lock_mode".into(),
                toml::Value::String(format!("{:?}", r.mode).to_ascii_lowercase()),
            );
        }
        let text = toml::to_string(&doc).context("collector.toml")?;
        write_secret(&p, text.as_bytes())?;
        Ok(())
    }

    /// Create a new data directory. Refuses to touch one that already holds a CA.
    pub fn init(&self, names: &[String], backends: &Backends) -> Result<InitReport> {
        if self.path("ca.key").exists() {
            bail!(
                "{} already holds a collector (ca.key exists); refusing to overwrite its keys",
                self.root.display()
            );
        }
        cairn_private_fs::create_private_dir(&self.root)?;
        cairn_private_fs::create_private_dir(&self.chunks())?;
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "collector".into());
        let ca = Authority::create(&hostname)?;
        let mut all_names: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            hostname,
        ];
        all_names.extend(names.iter().cloned());
        all_names.dedup();
        let server = ca.issue_server(&all_names)?;
        fs::write(self.path("ca.pem"), ca.cert_pem())
            .with_context(|| format!("cannot write {}", self.path("ca.pem").display()))?;
        write_secret(&self.path("ca.key"), ca.key_pem().as_bytes())?;
        fs::write(
            self.path("server.pem"),
            format!("{}{}", server.cert_pem, ca.cert_pem()),
        )?;
        write_secret(&self.path("server.key"), server.key_pem.as_bytes())?;

        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("cannot encode the custody key: {e}"))?;
        write_secret(&self.path("custody.key"), pem.as_bytes())?;

        let db: Arc<dyn MetadataStore> = match backends.database.as_deref() {
            None => Arc::new(Sqlite::open(&self.path("cairn.db"))?),
            Some(url) => open_database_url(url)?,
        };
        if backends.blobs.is_none() {
            HeadFile::open(&self.path(HEADS), true)?;
        }
        self.record_backends(backends)?;
        self.evidence_key()?;
        let admin = db.create_api_token("admin", Role::Admin)?;
        write_secret(&self.path("admin.token"), format!("{admin}\n").as_bytes())?;
        let uses = 100;
        let ttl = 7 * 86400;
        let (enroll, expires) = db.create_enroll_token(uses, ttl, "fleet token created by init")?;
        let ca_sha256 = crate::authority::pem_fingerprint(&ca.cert_pem())
            .context("cannot fingerprint the new CA")?;
        Ok(InitReport {
            data_dir: self.root.display().to_string(),
            ca_sha256,
            ca_cert: self.path("ca.pem").display().to_string(),
            enrollment_token: enroll,
            enrollment_token_uses: uses,
            enrollment_token_expires_at: rfc3339(expires),
            admin_token: admin,
        })
    }
}

/// A Unix time as RFC 3339, or the number when out of range.
pub fn rfc3339(unix: i64) -> String {
    cairn_protocol::rfc3339::from_unix(unix).unwrap_or_else(|| unix.to_string())
}

/// Parse `30s`, `10m`, `2h`, `7d` (or bare seconds) into seconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n: i64 = num.parse().with_context(|| {
        format!("bad duration {s:?}: use a number with s, m, h or d (30s, 10m, 2h, 7d)")
    })?;
    if n <= 0 {
        bail!("bad duration {s:?}: must be positive");
    }
    n.checked_mul(mult)
        .with_context(|| format!("bad duration {s:?}: too long"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_and_hostile_ones_are_refused() {
        assert_eq!(parse_duration("30s").unwrap(), 30);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86400);
        assert_eq!(parse_duration("45").unwrap(), 45);
        for bad in [
            "",
            "h",
            "-1h",
            "0d",
            "1.5h",
            "9223372036854775807d",
            "1y",
            "１h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
