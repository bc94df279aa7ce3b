//! Triage profiles: a declarative TOML list of what to take from a host's filesystem.
//!
//! The format is in the spirit of UAC's artifact files: each `[[artifact]]` names paths or
//! globs, whether to copy, hash or only list what they match, size limits and excludes. The
//! shipped profiles (`triage`, `minimal`) live in `agent/profiles/` and are built into the
//! agent; users add their own as files (`--profile-file`, or `STATE/profiles/NAME.toml`).
//!
//! ```toml
//! name = "mine"                      # what `--profile` calls it
//! description = "web server triage"
//! max_file_bytes = 104857600         # per file (default 100 MiB); larger files are listed
//! max_total_bytes = 4294967296       # all copied content (default 4 GiB)
//! max_depth = 12                     # directory levels below a matched directory
//! max_entries = 200000               # entries walked before the walk stops (recorded)
//! events_window_secs = 3600          # flight recorder past each collection carries; 0: none
//!
//! [[artifact]]
//! description = "nginx logs"
//! paths = ["/var/log/nginx", "%user_home%/.bash_history"]
//! action = "copy"                    # copy (default) | hash | list
//! exclude = ["**/*.gz"]              # matched against the whole path; `**` crosses `/`
//! max_file_bytes = 1048576           # overrides the profile's
//! max_total_bytes = 1073741824       # all this artifact copies
//! newest_first = true                # copy by mtime, newest first: a cap drops the oldest
//! ```
//!
//! Paths are absolute inside the collected root; `*`, `?` and `[...]` match within one
//! component, `**` is allowed only as the last component (everything below), and a path that
//! names a directory means everything below it. `%user_home%` at the start expands to every
//! home directory: those in the root's `/etc/passwd`, `/root`, and every directory under
//! `/home` (see [`super::homes`]). `.` and `..` are refused.

use serde::Deserialize;

/// The profiles built into the agent: (name, TOML).
pub const BUILTIN: &[(&str, &str)] = &[
    ("triage", include_str!("../../../profiles/triage.toml")),
    ("minimal", include_str!("../../../profiles/minimal.toml")),
    // A last-breath collection's writable layer (`capture::disk::plan_writable_layer`).
    (
        "writable-layer",
        include_str!("../../../profiles/writable-layer.toml"),
    ),
];

pub const USER_HOME: &str = "%user_home%";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("cannot read profile file {path}: {error}")]
    Read { path: String, error: std::io::Error },
}

/// What to do with a matched file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Its content becomes an item (and it is listed in the bodyfile and index).
    #[default]
    Copy,
    /// Its SHA-256 goes into the index; the content is not kept.
    Hash,
    /// Only its metadata: bodyfile and index.
    List,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Copy => "copy",
            Action::Hash => "hash",
            Action::List => "list",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    max_file_bytes: Option<u64>,
    max_total_bytes: Option<u64>,
    max_depth: Option<usize>,
    max_entries: Option<usize>,
    events_window_secs: Option<u64>,
    #[serde(default)]
    artifact: Vec<RawArtifact>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    #[serde(default)]
    description: String,
    paths: Vec<String>,
    #[serde(default)]
    action: Action,
    #[serde(default)]
    exclude: Vec<String>,
    max_file_bytes: Option<u64>,
    max_depth: Option<usize>,
    max_total_bytes: Option<u64>,
    #[serde(default)]
    newest_first: bool,
}

/// A path pattern split into components, checked for safety.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// Starts at every user's home directory rather than at `/`.
    pub user_home: bool,
    /// Components below `/` (or the home directory); the last may be `**`.
    pub components: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Artifact {
    pub description: String,
    pub patterns: Vec<PathPattern>,
    pub action: Action,
    pub exclude: Vec<Vec<u8>>,
    pub max_file_bytes: u64,
    pub max_depth: usize,
    /// All this artifact copies, in bytes (besides the profile's own cap).
    pub max_total_bytes: Option<u64>,
    /// Copy the most recently modified files first, so that a cap leaves out the oldest
    /// (journals, rotated logs).
    pub newest_first: bool,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub max_total_bytes: u64,
    pub max_entries: usize,
    /// How much of the flight recorder's past a collection with this profile carries, in
    /// seconds (0: none); `None`: the agent's `journal_window_secs`.
    pub events_window_secs: Option<u64>,
    pub artifacts: Vec<Artifact>,
}

const DEFAULT_MAX_FILE: u64 = 100 * 1024 * 1024;
const DEFAULT_MAX_TOTAL: u64 = 4 * 1024 * 1024 * 1024;
const DEFAULT_MAX_DEPTH: usize = 12;
const DEFAULT_MAX_ENTRIES: usize = 200_000;

/// Parse and check a profile; `source_name` (a file path or `builtin:NAME`) names it in errors.
pub fn parse(text: &str, source_name: &str) -> Result<Profile, ProfileError> {
    let invalid = |message: String| ProfileError::Invalid {
        source_name: source_name.to_string(),
        message,
    };
    let raw: RawProfile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if raw.name.is_empty()
        || !raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(format!(
            "name {:?} must be letters, digits, '-' or '_'",
            raw.name
        )));
    }
    if raw.artifact.is_empty() {
        return Err(invalid(
            "no [[artifact]]: a profile must say what to collect".into(),
        ));
    }
    let max_file = raw.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE);
    let max_depth = raw.max_depth.unwrap_or(DEFAULT_MAX_DEPTH);
    let mut artifacts = Vec::new();
    for (i, a) in raw.artifact.into_iter().enumerate() {
        let what = if a.description.is_empty() {
            format!("artifact {}", i + 1)
        } else {
            format!("artifact {} ({})", i + 1, a.description)
        };
        if a.paths.is_empty() {
            return Err(invalid(format!("{what}: `paths` is empty")));
        }
        let patterns = a
            .paths
            .iter()
            .map(|p| parse_pattern(p).map_err(|e| invalid(format!("{what}: path {p:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = a
            .exclude
            .iter()
            .map(|x| {
                if x.contains('\0') {
                    Err(invalid(format!("{what}: exclude {x:?} holds a NUL byte")))
                } else {
                    Ok(x.as_bytes().to_vec())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        artifacts.push(Artifact {
            description: a.description,
            patterns,
            action: a.action,
            exclude,
            max_file_bytes: a.max_file_bytes.unwrap_or(max_file),
            max_depth: a.max_depth.unwrap_or(max_depth),
            max_total_bytes: a.max_total_bytes,
            newest_first: a.newest_first,
        });
    }
    Ok(Profile {
        name: raw.name,
        description: raw.description,
        max_total_bytes: raw.max_total_bytes.unwrap_or(DEFAULT_MAX_TOTAL),
        max_entries: raw.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES),
        events_window_secs: raw.events_window_secs,
        artifacts,
    })
}

/// Split a profile path into checked components. Refuses what could climb out of the root
/// (`..`), relative paths, NUL bytes, and `**` anywhere but at the end.
pub fn parse_pattern(p: &str) -> Result<PathPattern, String> {
    if p.contains('\0') {
        return Err("holds a NUL byte".into());
    }
    let (user_home, rest) = match p.strip_prefix(USER_HOME) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => (true, rest),
        Some(_) => return Err(format!("{USER_HOME} must be followed by '/'")),
        None if p.starts_with('/') => (false, p),
        None => {
            return Err(format!(
                "must be absolute (start with '/') or start with {USER_HOME}"
            ))
        }
    };
    if rest.contains(USER_HOME) {
        return Err(format!("{USER_HOME} is allowed only at the start"));
    }
    let mut components = Vec::new();
    for c in rest.split('/').filter(|c| !c.is_empty()) {
        match c {
            "." | ".." => return Err(format!("component {c:?} is not allowed")),
            _ => components.push(c.as_bytes().to_vec()),
        }
    }
    if let Some(pos) = components.iter().position(|c| c.as_slice() == b"**") {
        if pos + 1 != components.len() {
            return Err("`**` is allowed only as the last component".into());
        }
    }
    if components
        .iter()
        .any(|c| c.windows(2).any(|w| w == b"**") && c.as_slice() != b"**")
    {
        return Err("`**` must be a whole component (`/dir/**`)".into());
    }
    Ok(PathPattern {
        user_home,
        components,
    })
}

/// A shipped profile by name.
pub fn builtin(name: &str) -> Option<Result<Profile, ProfileError>> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| parse(text, &format!("builtin:{n}")))
}

/// Load a profile file.
pub fn load_file(path: &std::path::Path) -> Result<Profile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|error| ProfileError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse(&text, &path.display().to_string())
}

/// Find a profile by name: the shipped ones, then `DIR/NAME.toml` in each directory.
pub fn find(name: &str, dirs: &[std::path::PathBuf]) -> Option<Result<Profile, ProfileError>> {
    if let Some(p) = builtin(name) {
        return Some(p);
    }
    // A name is a file stem, never a path.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    dirs.iter()
        .map(|d| d.join(format!("{name}.toml")))
        .find(|p| p.is_file())
        .map(|p| load_file(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_parse() {
        for (name, _) in BUILTIN {
            let p = builtin(name).unwrap().unwrap();
            assert_eq!(&p.name, name);
            assert!(!p.artifacts.is_empty());
        }
        let triage = builtin("triage").unwrap().unwrap();
        let all: Vec<String> = triage
            .artifacts
            .iter()
            .flat_map(|a| a.patterns.iter())
            .map(|p| String::from_utf8_lossy(&p.components.join(&b'/')).into_owned())
            .collect();
        for want in [
            "var/log",
            "etc/passwd",
            "etc/sudoers",
            "etc/ld.so.preload",
            "tmp",
        ] {
            assert!(
                all.iter().any(|p| p == want),
                "triage lacks {want}: {all:?}"
            );
        }
        // Histories and SSH keys of every user.
        assert!(triage
            .artifacts
            .iter()
            .flat_map(|a| &a.patterns)
            .any(|p| p.user_home && p.components == [b"*_history".to_vec()]));
        let tmp = triage
            .artifacts
            .iter()
            .find(|a| a.patterns.iter().any(|p| p.components == [b"tmp".to_vec()]))
            .unwrap();
        assert_eq!(tmp.action, Action::List, "/tmp is listed, not copied");
    }

    #[test]
    fn a_full_profile_parses_with_defaults_and_overrides() {
        let p = parse(
            r#"
name = "web"
max_file_bytes = 10
[[artifact]]
paths = ["/var/log/nginx", "%user_home%/.ssh/**"]
exclude = ["**/*.gz"]
[[artifact]]
paths = ["/srv/*/uploads"]
action = "hash"
max_file_bytes = 99
"#,
            "test",
        )
        .unwrap();
        assert_eq!(p.name, "web");
        assert_eq!(p.artifacts[0].action, Action::Copy);
        assert_eq!(p.artifacts[0].max_file_bytes, 10);
        assert_eq!(p.artifacts[1].max_file_bytes, 99);
        assert_eq!(p.artifacts[1].action, Action::Hash);
        assert_eq!(
            p.artifacts[0].patterns[1],
            PathPattern {
                user_home: true,
                components: vec![b".ssh".to_vec(), b"**".to_vec()]
            }
        );
        assert_eq!(p.max_total_bytes, DEFAULT_MAX_TOTAL);
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "var/log",
            "/var/../etc/shadow",
            "/var/./log",
            "%user_home%/../../etc",
            "%user_homex",
            "/a/**/b",
            "/a/x**",
            "/etc/%user_home%",
            "/a\0b",
        ] {
            assert!(parse_pattern(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_pattern("//var//log/").unwrap().components,
            vec![b"var".to_vec(), b"log".to_vec()]
        );
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let e = parse(
            "name = \"x\"\n[[artifact]]\npaths = [\"/etc\"]\nactoin = \"copy\"\n",
            "my.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("my.toml") && e.contains("actoin"), "{e}");
        let e = parse(
            "name = \"x\"\n[[artifact]]\npaths = [\"/etc\"]\naction = \"steal\"\n",
            "my.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("steal"), "{e}");
        let e = parse("name = \"x\"\n", "my.toml").unwrap_err().to_string();
        assert!(e.contains("no [[artifact]]"), "{e}");
        let e = parse("name = \"../x\"\n[[artifact]]\npaths=[\"/\"]\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("name"), "{e}");
        let e = parse("name = \"x\"\n[[artifact]]\npaths = [\"/a/../b\"]\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"..\""), "{e}");
    }

    #[test]
    fn find_looks_in_directories_by_stem_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("mine.toml"),
            "name = \"mine\"\n[[artifact]]\npaths = [\"/etc/hosts\"]\n",
        )
        .unwrap();
        let dirs = vec![d.path().to_path_buf()];
        assert_eq!(find("mine", &dirs).unwrap().unwrap().name, "mine");
        assert!(find("../mine", &dirs).is_none());
        assert!(find("absent", &dirs).is_none());
        assert_eq!(find("minimal", &dirs).unwrap().unwrap().name, "minimal");
    }
}
