//! `cargo xtask tidy`: the source tree keeps its shape (in the spirit of rust-analyzer's tidy
//! tests). It reads the tree, runs nothing, and reports:
//!
//! 1. **floors** — in a crate with a ```` ```floors <crate-dir> ```` block in ARCHITECTURE.md
//!    (one line a floor, top first, the crate's top-level modules), a module importing one on a
//!    higher floor, an import cycle between top-level modules, a module on no floor (or on
//!    two), a floor naming no module. An import is a `crate::NAME` path, a `super::` path that
//!    climbs out of a top-level module, and in binaries (`bin` = `src/bin/*`, `main` =
//!    `src/main.rs`) a `LIB::NAME` path. `lib.rs`, comments, strings and `#[cfg(test)]` items
//!    are not looked at.
//! 2. **long-file** — a `src/**/*.rs` file longer than [`MAX_LINES`] before its trailing test
//!    module, without a `//! Long file: <why>` line in its first 20 lines.
//! 3. **crate-deps** — a dependency ([`FORBIDDEN`]) in `Cargo.toml` (`[dependencies]`,
//!    `[build-dependencies]`, their `[target.…]` forms; not dev-dependencies) or a `LIB::` path
//!    in the sources.
//!
//! What it does not see: an import through a re-export in `lib.rs` (`crate::Thing` where
//! lib.rs has `pub use a::Thing`) is not an edge to `a`, and `crate::x` counts as module `x`
//! even where lib.rs also re-exports an item called `x`. `cargo xtask tidy --imports DIR`
//! prints the edges it sees.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use floors::{check_floors, imports};
use rust::{cfg_test_at, code, is_ident, is_punct, is_sep, lex, skip_group, Code, Tok};

mod floors;
mod rust;

/// Lines a source file may have before its trailing test module without saying why.
pub const MAX_LINES: usize = 700;
/// How near the top the `Long file:` reason must be.
const REASON_WITHIN: usize = 20;

/// Which crates, by package name.
#[derive(Debug, Clone, Copy)]
pub enum Crates {
    Named(&'static [&'static str]),
    /// Every workspace member except these (and except the crate itself).
    AllBut(&'static [&'static str]),
}

impl Crates {
    fn contains(self, name: &str) -> bool {
        match self {
            Crates::Named(n) => n.contains(&name),
            Crates::AllBut(n) => !n.contains(&name),
        }
    }
}

impl fmt::Display for Crates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Crates::Named(n) => write!(f, "{}", n.join(" or ")),
            Crates::AllBut([]) => write!(f, "any other cairn crate"),
            Crates::AllBut(n) => write!(f, "any crate but {}", n.join(", ")),
        }
    }
}

/// A crate-dependency rule: no crate of `from` may depend on one of `to`.
#[derive(Debug, Clone, Copy)]
pub struct Forbidden {
    pub from: Crates,
    pub to: Crates,
    pub why: &'static str,
}

/// The arrows that must never exist between the workspace's crates (DESIGN.md, "Layout").
pub const FORBIDDEN: &[Forbidden] = &[
    Forbidden {
        from: Crates::Named(&["cairn-agent"]),
        to: Crates::Named(&["cairn-collector"]),
        why: "the agent and the collector never import each other",
    },
    Forbidden {
        from: Crates::Named(&["cairn-collector"]),
        to: Crates::Named(&["cairn-agent"]),
        why: "the agent and the collector never import each other",
    },
    Forbidden {
        from: Crates::Named(&["cairn-protocol"]),
        to: Crates::AllBut(&[]),
        why: "the protocol is the contract: it depends on no other cairn crate",
    },
    Forbidden {
        from: Crates::Named(&["cairn-cli"]),
        to: Crates::Named(&["cairn-collector", "cairn-agent"]),
        why: "the CLI speaks the HTTP API only",
    },
    Forbidden {
        from: Crates::AllBut(&["cairn-agent"]),
        to: Crates::Named(&["cairn-ebpf"]),
        why: "cairn-ebpf is built only into the agent",
    },
];

fn forbidden(from: &str, to: &str) -> Option<&'static Forbidden> {
    FORBIDDEN
        .iter()
        .find(|r| from != to && r.from.contains(from) && r.to.contains(to))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    Floors,
    LongFile,
    CrateDeps,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Floors => "floors",
            Rule::LongFile => "long-file",
            Rule::CrateDeps => "crate-deps",
        })
    }
}

/// One problem, at a file (relative to the tree's root) and line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub path: PathBuf,
    pub line: usize,
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}",
            self.path.display(),
            self.line,
            self.rule,
            self.message
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The workspace

/// A workspace member: its directory, package name and library crate name.
struct Member {
    dir: String,
    package: String,
    lib: String,
    manifest: toml::Table,
    manifest_text: String,
}

fn read_toml(path: &Path) -> Result<(toml::Table, String)> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table = text
        .parse::<toml::Table>()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok((table, text))
}

fn members(root: &Path) -> Result<Vec<Member>> {
    let (ws, _) = read_toml(&root.join("Cargo.toml"))?;
    let dirs = ws
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .context("Cargo.toml has no [workspace] members")?;
    let mut out = Vec::new();
    for d in dirs {
        let dir = d.as_str().context("a workspace member is not a string")?;
        if dir.contains('*') {
            bail!("tidy does not expand the workspace member glob {dir:?}: list the crates");
        }
        let (manifest, manifest_text) = read_toml(&root.join(dir).join("Cargo.toml"))?;
        let package = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
            .with_context(|| format!("{dir}/Cargo.toml has no package name"))?
            .to_string();
        let lib = manifest
            .get("lib")
            .and_then(|l| l.get("name"))
            .and_then(toml::Value::as_str)
            .map_or_else(|| package.replace('-', "_"), str::to_string);
        out.push(Member {
            dir: dir.to_string(),
            package,
            lib,
            manifest,
            manifest_text,
        });
    }
    Ok(out)
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", d.display())),
        };
        for e in rd {
            let e = e?;
            let ty = e.file_type()?;
            let p = e.path();
            if ty.is_dir() {
                stack.push(p);
            } else if ty.is_file() && p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn rel(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root).unwrap_or(p).to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Sources

/// A non-test source file of a crate.
struct Source {
    /// Relative to the crate's `src/`.
    in_src: PathBuf,
    /// Relative to the tree's root.
    path: PathBuf,
    text: String,
    code: Code,
}

/// The crate's `src/**/*.rs` without the files only tests compile (`#[cfg(test)] mod x;`
/// children and `#![cfg(test)]` files).
fn sources(root: &Path, src: &Path) -> Result<Vec<Source>> {
    let mut all = Vec::new();
    for f in rust_files(src)? {
        let text =
            fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let code = code(&text);
        all.push(Source {
            in_src: rel(src, &f),
            path: rel(root, &f),
            text,
            code,
        });
    }
    // A test-only child NAME of `d/mod.rs` (or lib.rs, main.rs) is `d/NAME.rs` or `d/NAME/`;
    // of `d/x.rs` it is `d/x/NAME.rs` or `d/x/NAME/`.
    let mut test_paths: Vec<PathBuf> = Vec::new();
    for s in &all {
        let dir = s.in_src.parent().unwrap_or(Path::new(""));
        let stem = s.in_src.file_stem().and_then(|x| x.to_str()).unwrap_or("");
        let owner = if matches!(stem, "mod" | "lib" | "main") {
            dir.to_path_buf()
        } else {
            dir.join(stem)
        };
        for c in &s.code.test_children {
            test_paths.push(owner.join(format!("{c}.rs")));
            test_paths.push(owner.join(c));
        }
    }
    all.retain(|s| !s.code.test_only && !test_paths.iter().any(|t| s.in_src.starts_with(t)));
    Ok(all)
}

/// The top-level module a source belongs to (`bin` for `src/bin/*`, `main` for `src/main.rs`),
/// and its depth below the crate root; `None` for `lib.rs`.
fn module_of(s: &Source) -> Option<(String, usize)> {
    let comps: Vec<String> = s
        .in_src
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let first = comps.first()?;
    if comps.len() == 1 {
        let stem = first.strip_suffix(".rs").unwrap_or(first);
        return (stem != "lib").then(|| (stem.to_string(), 1));
    }
    let depth = comps.len() - usize::from(comps.last().is_some_and(|l| l == "mod.rs"));
    Some((first.clone(), depth))
}

// ---------------------------------------------------------------------------------------------
// Rule 2: long files

/// Lines before a trailing `#[cfg(test)] mod … { … }` that ends the file (all when none).
fn lines_before_tests(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let Some(k) = lines.iter().rposition(|l| l.trim_end() == "#[cfg(test)]") else {
        return lines.len();
    };
    let ts = lex(&lines[k..].join("\n"));
    let Some((mut j, _)) = cfg_test_at(&ts, 0) else {
        return lines.len();
    };
    while is_punct(ts.get(j), '#') {
        j = skip_group(&ts, j + 1);
    }
    j += usize::from(is_ident(ts.get(j), "pub"));
    let module = is_ident(ts.get(j), "mod") && is_punct(ts.get(j + 2), '{');
    if module && skip_group(&ts, j + 2) == ts.len() {
        k
    } else {
        lines.len()
    }
}

fn has_long_reason(text: &str) -> bool {
    text.lines().take(REASON_WITHIN).any(|l| {
        let t = l.trim_start();
        ["//! Long file:", "// Long file:"]
            .iter()
            .any(|p| t.strip_prefix(p).is_some_and(|why| !why.trim().is_empty()))
    })
}

fn check_long_files(srcs: &[Vec<Source>], out: &mut Vec<Finding>) {
    for s in srcs.iter().flatten() {
        let n = lines_before_tests(&s.text);
        if n > MAX_LINES && !has_long_reason(&s.text) {
            out.push(Finding {
                path: s.path.clone(),
                line: 1,
                rule: Rule::LongFile,
                message: format!(
                    "{n} lines (a trailing test module not counted), more than {MAX_LINES}, and no `//! Long file: <why>` in its first {REASON_WITHIN} lines: split it, or say why it is long"
                ),
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 3: crate dependencies

/// `[dependencies]`, `[build-dependencies]` and their `[target.…]` forms, by section name.
fn dependency_tables(manifest: &toml::Table) -> Vec<(String, &toml::Table)> {
    let mut out = Vec::new();
    for kind in ["dependencies", "build-dependencies"] {
        if let Some(t) = manifest.get(kind).and_then(toml::Value::as_table) {
            out.push((kind.to_string(), t));
        }
        for (cfg, t) in manifest
            .get("target")
            .and_then(toml::Value::as_table)
            .into_iter()
            .flatten()
        {
            if let Some(t) = t.get(kind).and_then(toml::Value::as_table) {
                out.push((format!("target.{cfg}.{kind}"), t));
            }
        }
    }
    out
}

/// The line of `key` in `[section]` of a manifest (1 when it cannot be told).
fn manifest_line(text: &str, section: &str, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("[{section}]"))
        .unwrap_or(0);
    let is_key = |l: &&str| {
        let t = l.trim_start();
        t.strip_prefix(key)
            .is_some_and(|r| r.starts_with([' ', '=', '.']))
            || t.trim() == format!("[{section}.{key}]")
    };
    lines[start..]
        .iter()
        .position(is_key)
        .map(|p| start + p + 1)
        .or_else(|| lines.iter().position(is_key).map(|p| p + 1))
        .unwrap_or(1)
}

fn check_crate_deps(members: &[Member], srcs: &[Vec<Source>], out: &mut Vec<Finding>) {
    let mut finding = |path: PathBuf, line: usize, what: String, r: &Forbidden| {
        out.push(Finding {
            path,
            line,
            rule: Rule::CrateDeps,
            message: format!(
                "{what}: forbidden by the rule `{} must not depend on {}` ({})",
                r.from, r.to, r.why
            ),
        })
    };
    for (m, srcs) in members.iter().zip(srcs) {
        for (section, table) in dependency_tables(&m.manifest) {
            for (key, v) in table {
                let name = v
                    .get("package")
                    .and_then(toml::Value::as_str)
                    .unwrap_or(key);
                if !members.iter().any(|o| o.package == name) {
                    continue;
                }
                if let Some(r) = forbidden(&m.package, name) {
                    let path = Path::new(&m.dir).join("Cargo.toml");
                    let line = manifest_line(&m.manifest_text, &section, key);
                    let what = format!("{} depends on {name} ([{section}])", m.package);
                    finding(path, line, what, r);
                }
            }
        }
        for s in srcs {
            let mut seen = BTreeSet::new();
            for (i, t) in s.code.ts.iter().enumerate() {
                let Tok::Ident(w) = &t.tok else { continue };
                let Some(o) = members
                    .iter()
                    .find(|o| &o.lib == w && o.package != m.package)
                else {
                    continue;
                };
                let starts_path =
                    is_sep(s.code.ts.get(i + 1)) && !(i > 0 && is_sep(s.code.ts.get(i - 1)));
                if !starts_path || !seen.insert(&o.package) {
                    continue;
                }
                if let Some(r) = forbidden(&m.package, &o.package) {
                    let what = format!("{} uses `{}::` (crate {})", m.package, o.lib, o.package);
                    finding(s.path.clone(), t.line, what, r);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// Every finding in the tree at `root` (a workspace with ARCHITECTURE.md), sorted.
pub fn check(root: &Path) -> Result<Vec<Finding>> {
    let members = members(root)?;
    let srcs = members
        .iter()
        .map(|m| sources(root, &root.join(&m.dir).join("src")))
        .collect::<Result<Vec<_>>>()?;
    let md_path = Path::new("ARCHITECTURE.md");
    let md = fs::read_to_string(root.join(md_path)).unwrap_or_default();
    let mut out = Vec::new();
    check_floors(&md, md_path, &members, &srcs, &mut out);
    check_long_files(&srcs, &mut out);
    check_crate_deps(&members, &srcs, &mut out);
    out.sort();
    out.dedup();
    Ok(out)
}

/// `cargo xtask tidy`: prints the findings; an error when there are any. With `imports_of`
/// (a crate directory), prints what each of its top-level modules imports instead, which is
/// what a floors block is written from.
pub fn run(root: &Path, imports_of: Option<&str>) -> Result<()> {
    if let Some(dir) = imports_of {
        let members = members(root)?;
        let m = members
            .iter()
            .find(|m| m.dir == dir)
            .with_context(|| format!("{dir} is not a workspace member directory"))?;
        let srcs = sources(root, &root.join(dir).join("src"))?;
        for (from, uses) in imports(&srcs, &m.lib) {
            let to: BTreeSet<&str> = uses.iter().map(|u| u.0.as_str()).collect();
            let to: Vec<&str> = to.into_iter().collect();
            println!("{from:<20} → {}", to.join(" "));
        }
        return Ok(());
    }
    let findings = check(root)?;
    for f in &findings {
        println!("{f}");
    }
    if findings.is_empty() {
        println!("tidy: no findings");
        return Ok(());
    }
    let count = |r: Rule| findings.iter().filter(|f| f.rule == r).count();
    bail!(
        "tidy: {} findings ({} floors, {} long-file, {} crate-deps)",
        findings.len(),
        count(Rule::Floors),
        count(Rule::LongFile),
        count(Rule::CrateDeps)
    )
}

#[cfg(test)]
mod tests {
    use super::rust::{scan, Root};
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn lines(n: usize) -> String {
        (0..n)
            .map(|i| format!("const C{i}: u32 = {i};\n"))
            .collect()
    }

    /// A small workspace shaped like cairn's; with `plant`, one of each kind of finding.
    fn fake_tree(plant: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let p = |planted: &str| {
            if plant {
                planted.to_string()
            } else {
                String::new()
            }
        };
        write(
            root,
            "Cargo.toml",
            "[workspace]\nmembers = [\"server\", \"protocol\", \"agent\", \"cli\"]\n",
        );
        write(
            root,
            "ARCHITECTURE.md",
            &format!(
                "# fake\n\n```floors server\nbin\napi\ningest parse\nstorage clock{}\n```\n\n\
                 ```text\nnot floors\n```\n",
                p(" ghost")
            ),
        );
        // The collector: floors, a binary, comments, strings and tests that must not count.
        write(
            root,
            "server/Cargo.toml",
            &format!(
                "[package]\nname = \"cairn-collector\"\n\n[lib]\nname = \"cairn_collector\"\n\n\
                 [dependencies]\ncairn-protocol = {{ path = \"../protocol\" }}\n{}\n\
                 [dev-dependencies]\ncairn-agent = {{ path = \"../agent\" }}\n",
                p("cairn-agent = { path = \"../agent\" }")
            ),
        );
        write(
            root,
            "server/src/lib.rs",
            "pub mod api;\npub mod clock;\npub mod ingest;\npub mod parse;\npub mod storage;\n\
             pub use crate::api::serve;\n",
        );
        write(
            root,
            "server/src/bin/cairn-collector.rs",
            "use cairn_collector::api::serve;\nfn main() { cairn_collector::storage::open(); }\n",
        );
        write(
            root,
            "server/src/api.rs",
            "//! The API; crate::bin is named in a doc comment only.\n\
             use crate::{ingest, parse::{Parsed, Other}};\n\
             pub fn serve() { let _ = \"crate::bin::x\"; let _ = 'a'; }\n",
        );
        write(
            root,
            "server/src/ingest/mod.rs",
            "mod frames;\npub use frames::Frame;\nuse crate::parse;\n\
             #[cfg(test)]\nmod helpers;\n",
        );
        write(
            root,
            "server/src/ingest/frames.rs",
            "use super::super::storage::Blob;\nuse super::Frame as _;\npub struct Frame;\n",
        );
        // Test-only: may reach anywhere.
        write(root, "server/src/ingest/helpers.rs", "use crate::api;\n");
        write(
            root,
            "server/src/parse.rs",
            &format!(
                "pub struct Parsed;\npub fn p() {{ crate::storage::open(); }}\n{}\n",
                p("use crate::ingest::Frame;")
            ),
        );
        write(
            root,
            "server/src/storage.rs",
            "pub fn open() {}\npub struct Blob;\n// use crate::api;\n/* crate::api::serve() */\n\
             const S: &str = r#\"crate::api\"#;\n\
             #[cfg(test)]\nmod tests {\n    use crate::api;\n}\n",
        );
        write(
            root,
            "server/src/clock.rs",
            &format!("pub fn now() {{}}\n{}\n", p("use crate::api::serve;")),
        );
        if plant {
            write(root, "server/src/extra.rs", "pub fn x() {}\n");
        }
        // The protocol: no floors block; long files with and without a reason.
        write(
            root,
            "protocol/Cargo.toml",
            "[package]\nname = \"cairn-protocol\"\n\n[dependencies]\nserde = \"1\"\n",
        );
        write(root, "protocol/src/lib.rs", "pub mod tables;\n");
        write(
            root,
            "protocol/src/tables.rs",
            &format!(
                "//! Tables.\n//! Long file: generated tables\n{}",
                lines(800)
            ),
        );
        write(
            root,
            "protocol/src/tested.rs",
            &format!(
                "{}#[cfg(test)]\nmod tests {{\n{}}}\n",
                lines(690),
                lines(50)
            ),
        );
        if plant {
            write(root, "protocol/src/long.rs", &lines(701));
        }
        write(
            root,
            "agent/Cargo.toml",
            "[package]\nname = \"cairn-agent\"\n\n[dependencies]\ncairn-protocol = \"*\"\n",
        );
        write(root, "agent/src/lib.rs", "pub use cairn_protocol::x;\n");
        write(
            root,
            "cli/Cargo.toml",
            "[package]\nname = \"cairn-cli\"\n\n[dependencies]\ncairn-protocol = \"*\"\n",
        );
        write(
            root,
            "cli/src/lib.rs",
            &format!(
                "// cairn_collector::api is named in a comment only\n{}\n",
                p("use cairn_collector::api;")
            ),
        );
        dir
    }

    #[test]
    fn a_clean_tree_has_no_findings() {
        let dir = fake_tree(false);
        let found = check(dir.path()).unwrap();
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn each_planted_problem_is_found_with_its_message() {
        let dir = fake_tree(true);
        let found = check(dir.path()).unwrap();
        let text: Vec<String> = found.iter().map(|f| f.to_string()).collect();
        let expect = [
            "ARCHITECTURE.md:7: [floors] the floors of server name `ghost`, which is not a \
             top-level module of it",
            "cli/src/lib.rs:2: [crate-deps] cairn-cli uses `cairn_collector::` (crate \
             cairn-collector): forbidden by the rule `cairn-cli must not depend on \
             cairn-collector or cairn-agent` (the CLI speaks the HTTP API only)",
            "protocol/src/long.rs:1: [long-file] 701 lines (a trailing test module not \
             counted), more than 700, and no `//! Long file: <why>` in its first 20 lines",
            "server/Cargo.toml:9: [crate-deps] cairn-collector depends on cairn-agent \
             ([dependencies]): forbidden by the rule `cairn-collector must not depend on \
             cairn-agent` (the agent and the collector never import each other)",
            "server/src/clock.rs:2: [floors] `clock` (floor 1 of 4) imports `api` (floor 3 of \
             4), a higher floor: a module uses only its own floor and the ones below",
            "server/src/extra.rs:1: [floors] module `extra` of server is on no floor: place it \
             in the `floors server` block of ARCHITECTURE.md",
            "server/src/ingest/mod.rs:3: [floors] import cycle between top-level modules of \
             server: ingest → parse → ingest (`ingest` imports `parse` at \
             server/src/ingest/mod.rs:3; `parse` imports `ingest` at server/src/parse.rs:3)",
        ];
        assert_eq!(found.len(), expect.len(), "{text:#?}");
        for (got, want) in text.iter().zip(expect) {
            assert!(got.starts_with(want), "\n got: {got}\nwant: {want}…");
        }
    }

    #[test]
    fn paths_name_modules_only_in_code() {
        let ts = code(
            "let s = \"crate::a\"; // crate::b\n/* crate::c /* nested */ crate::d */\n\
             let r = r#\"crate::e\"#; let c = '\\''; let b = b'x'; fn f<'a>(x: &'a str) {}\n\
             use crate::{g, h::{i, j}, self};\ncrate::k::run();\npub(crate) fn l() {}\n",
        )
        .ts;
        let names: Vec<String> = scan(&ts, Root::Lib { depth: 1 })
            .into_iter()
            .map(|u| u.0)
            .collect();
        assert_eq!(names, ["g", "h", "self", "k"]);
        let lines: Vec<usize> = scan(&ts, Root::Lib { depth: 1 })
            .into_iter()
            .map(|u| u.1)
            .collect();
        assert_eq!(lines, [4, 4, 4, 5]);
    }

    #[test]
    fn super_paths_count_when_they_reach_the_crate_root() {
        let src = "use super::near;\nuse super::super::far;\n\
                   mod inner { use super::super::super::inner_far; }\n";
        let names = |depth| -> Vec<String> {
            scan(&code(src).ts, Root::Lib { depth })
                .into_iter()
                .map(|u| u.0)
                .collect()
        };
        assert_eq!(names(1), ["near"]);
        assert_eq!(names(2), ["far", "inner_far"]);
        let bin = scan(
            &code("use cairn_x::{a, b};\nuse crate::c;\n").ts,
            Root::Bin { lib: "cairn_x" },
        );
        assert_eq!(bin.len(), 2);
    }

    #[test]
    fn test_items_are_left_out() {
        let c = code(
            "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n\
             #[cfg(test)]\n#[path = \"x.rs\"]\npub(crate) mod helpers;\n\
             #[cfg(test)]\nuse crate::d;\nuse crate::e;\n",
        );
        let names: Vec<String> = scan(&c.ts, Root::Lib { depth: 1 })
            .into_iter()
            .map(|u| u.0)
            .collect();
        assert_eq!(names, ["a", "e"]);
        assert_eq!(c.test_children, ["helpers"]);
        assert!(code("#![cfg(test)]\nuse crate::a;\n").test_only);
    }

    #[test]
    fn only_a_trailing_test_module_is_not_counted() {
        let tail = "#[cfg(test)]\nmod tests {\n    fn t() { let _ = \"}\"; }\n}\n";
        assert_eq!(lines_before_tests(&format!("{}{tail}", lines(3))), 3);
        let not_last = format!("{}{tail}fn after() {{}}\n", lines(3));
        assert_eq!(lines_before_tests(&not_last), 8);
        assert!(has_long_reason(
            "//! Doc.\n// Long file: one state machine\n"
        ));
        assert!(!has_long_reason("//! Long file:\n"));
        assert!(!has_long_reason(&format!(
            "{}// Long file: late\n",
            lines(20)
        )));
    }

    #[test]
    fn floors_blocks_are_read_top_first() {
        let md = "x\n```floors a\ntop\n\nmid one\nlow\n```\n````floors b\nonly\n````\n";
        type Floors = Vec<(usize, Vec<String>)>;
        let got: Vec<(String, usize, Floors)> = floors::parse_floors(md)
            .into_iter()
            .map(|b| (b.crate_dir, b.line, b.floors))
            .collect();
        let f = |line: usize, names: &[&str]| (line, names.iter().map(|n| n.to_string()).collect());
        assert_eq!(
            got,
            [
                (
                    "a".to_string(),
                    2,
                    vec![f(3, &["top"]), f(5, &["mid", "one"]), f(6, &["low"])]
                ),
                ("b".to_string(), 8, vec![f(9, &["only"])]),
            ]
        );
    }

    fn real_tree() -> Vec<Finding> {
        check(&crate::procs::repo_root()).unwrap()
    }

    /// The whole workspace stands on its floors.
    #[test]
    fn tidy_source_tree() {
        let found = real_tree();
        let text: Vec<String> = found.iter().map(|f| f.to_string()).collect();
        assert!(found.is_empty(), "cargo xtask tidy:\n{}", text.join("\n"));
    }

    /// Meanwhile everything else is held to all three rules, and every crate to the crate
    /// rules.
    #[test]
    fn tidy_source_tree_outside_the_crates_being_restructured() {
        let moving = ["collector-server", "agent"];
        let found: Vec<String> = real_tree()
            .into_iter()
            .filter(|f| {
                let in_moving = moving.iter().any(|m| {
                    f.path.starts_with(m)
                        || (f.path == Path::new("ARCHITECTURE.md")
                            && f.message.contains(&format!(" of {m} ")))
                });
                f.rule == Rule::CrateDeps || !in_moving
            })
            .map(|f| f.to_string())
            .collect();
        assert!(found.is_empty(), "cargo xtask tidy:\n{}", found.join("\n"));
    }
}
