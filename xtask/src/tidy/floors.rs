//! Rule 1 of tidy: the floors of a crate's top-level modules, as ARCHITECTURE.md writes them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use super::rust::{scan, Root};
use super::{module_of, Finding, Member, Rule, Source};

/// For each top-level module of a crate: the modules it imports, each with where (first use
/// in each file).
pub(super) type Imports = BTreeMap<String, Vec<(String, PathBuf, usize)>>;

pub(super) fn imports(srcs: &[Source], lib: &str) -> Imports {
    let modules: BTreeSet<String> = srcs.iter().filter_map(module_of).map(|m| m.0).collect();
    let mut out: Imports = modules.iter().map(|m| (m.clone(), Vec::new())).collect();
    for s in srcs {
        let Some((from, depth)) = module_of(s) else {
            continue;
        };
        let root = if from == "bin" || from == "main" {
            Root::Bin { lib }
        } else {
            Root::Lib { depth }
        };
        let mut seen = BTreeSet::new();
        for (to, line) in scan(&s.code.ts, root) {
            if to != from && modules.contains(&to) && seen.insert(to.clone()) {
                if let Some(v) = out.get_mut(&from) {
                    v.push((to, s.path.clone(), line));
                }
            }
        }
    }
    out
}

/// A ```` ```floors <crate-dir> ```` block: its floors top first, each with its line.
pub(super) struct FloorsBlock {
    pub(super) crate_dir: String,
    pub(super) line: usize,
    pub(super) floors: Vec<(usize, Vec<String>)>,
}

pub(super) fn parse_floors(md: &str) -> Vec<FloorsBlock> {
    let mut out = Vec::new();
    let mut open: Option<(String, FloorsBlock)> = None;
    for (n, l) in md.lines().enumerate() {
        let t = l.trim();
        if let Some((fence, block)) = open.as_mut() {
            if t.starts_with(fence.as_str()) && t.trim_start_matches(&fence[..1]).is_empty() {
                if let Some((_, b)) = open.take() {
                    out.push(b);
                }
            } else if !t.is_empty() {
                block
                    .floors
                    .push((n + 1, t.split_whitespace().map(str::to_string).collect()));
            }
            continue;
        }
        let fence_len = t.chars().take_while(|c| *c == '`' || *c == '~').count();
        if fence_len < 3 {
            continue;
        }
        let info: Vec<&str> = t[fence_len..].split_whitespace().collect();
        if let ["floors", dir] = info.as_slice() {
            open = Some((
                t[..fence_len].to_string(),
                FloorsBlock {
                    crate_dir: dir.to_string(),
                    line: n + 1,
                    floors: Vec::new(),
                },
            ));
        }
    }
    out
}

pub(super) fn check_floors(
    md: &str,
    md_path: &Path,
    members: &[Member],
    srcs: &[Vec<Source>],
    out: &mut Vec<Finding>,
) {
    let mut finding = |path: &Path, line: usize, message: String| {
        out.push(Finding {
            path: path.to_path_buf(),
            line,
            rule: Rule::Floors,
            message,
        })
    };
    let mut done = BTreeSet::new();
    for block in parse_floors(md) {
        let dir = &block.crate_dir;
        let Some(i) = members.iter().position(|m| &m.dir == dir) else {
            finding(
                md_path,
                block.line,
                format!("a floors block for `{dir}`, which is not a workspace member"),
            );
            continue;
        };
        if !done.insert(dir.clone()) {
            finding(
                md_path,
                block.line,
                format!("a second floors block for `{dir}`: write its floors once"),
            );
            continue;
        }
        let imports = imports(&srcs[i], &members[i].lib);
        let n = block.floors.len();
        // Floor numbers count from the bottom: 1 is the lowest.
        let mut floor_of: BTreeMap<&str, usize> = BTreeMap::new();
        for (idx, (line, names)) in block.floors.iter().enumerate() {
            for name in names {
                if floor_of.insert(name, n - idx).is_some() {
                    finding(
                        md_path,
                        *line,
                        format!("`{name}` is on two floors of {dir}: put it on one"),
                    );
                }
                if !imports.contains_key(name) {
                    finding(
                        md_path,
                        *line,
                        format!("the floors of {dir} name `{name}`, which is not a top-level module of it (no src/{name}.rs or src/{name}/)"),
                    );
                }
            }
        }
        for (from, uses) in &imports {
            let Some(&ff) = floor_of.get(from.as_str()) else {
                // Point at `src/NAME.rs` or `src/NAME/mod.rs` when there is one.
                let mine = || {
                    srcs[i]
                        .iter()
                        .filter(|s| module_of(s).is_some_and(|m| &m.0 == from))
                };
                let at = mine()
                    .find(|s| {
                        s.in_src.components().count() == 1
                            || s.in_src.ends_with(Path::new(from).join("mod.rs"))
                    })
                    .or_else(|| mine().next())
                    .map_or_else(|| PathBuf::from(dir), |s| s.path.clone());
                finding(
                    &at,
                    1,
                    format!("module `{from}` of {dir} is on no floor: place it in the `floors {dir}` block of ARCHITECTURE.md"),
                );
                continue;
            };
            for (to, path, line) in uses {
                if let Some(&tf) = floor_of.get(to.as_str()) {
                    if tf > ff {
                        finding(
                            path,
                            *line,
                            format!("`{from}` (floor {ff} of {n}) imports `{to}` (floor {tf} of {n}), a higher floor: a module uses only its own floor and the ones below (`floors {dir}` in ARCHITECTURE.md)"),
                        );
                    }
                }
            }
        }
        for (cycle, group) in cycles(&imports) {
            let (path, line) = cycle[0].1.clone();
            let names: Vec<&str> = cycle.iter().map(|c| c.0.as_str()).collect();
            let wheres: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(a, b)| {
                    format!(
                        "`{}` imports `{}` at {}:{}",
                        a.0,
                        b.0,
                        a.1 .0.display(),
                        a.1 .1
                    )
                })
                .collect();
            finding(
                &path,
                line,
                format!(
                    "import cycle between top-level modules of {dir}: {} → {} ({}){}",
                    names.join(" → "),
                    names[0],
                    wheres.join("; "),
                    if group.len() > cycle.len() {
                        format!("; all of {} reach each other", group.join(" "))
                    } else {
                        String::new()
                    }
                ),
            );
        }
    }
}

/// A cycle: (module, where it imports the next one) from the group's first module; and all the
/// modules of its group (those on some cycle with it).
type Cycle = (Vec<(String, (PathBuf, usize))>, Vec<String>);

/// The import cycles between top-level modules, one per group of modules that reach each other.
pub(super) fn cycles(imports: &Imports) -> Vec<Cycle> {
    let edge = |a: &str, b: &str| {
        imports
            .get(a)
            .and_then(|v| v.iter().find(|u| u.0 == b))
            .map(|u| (u.1.clone(), u.2))
    };
    let reach = |from: &str| -> BTreeMap<String, String> {
        // Breadth first: each module reached, with the one it was reached from.
        let mut prev = BTreeMap::new();
        let mut queue = VecDeque::from([from.to_string()]);
        while let Some(m) = queue.pop_front() {
            for (to, _, _) in imports.get(&m).into_iter().flatten() {
                if !prev.contains_key(to) {
                    prev.insert(to.clone(), m.clone());
                    queue.push_back(to.clone());
                }
            }
        }
        prev
    };
    let mut out = Vec::new();
    let mut placed = BTreeSet::new();
    for m in imports.keys() {
        if placed.contains(m) {
            continue;
        }
        let prev = reach(m);
        // The shortest way back to `m`, walked backwards from `m`.
        let mut path = vec![m.clone()];
        let mut cur = prev.get(m);
        while let Some(c) = cur.filter(|c| *c != m) {
            path.push(c.clone());
            cur = prev.get(c);
        }
        if cur.is_none() {
            continue; // `m` is on no cycle
        }
        path.reverse();
        path.rotate_right(1);
        let group: Vec<String> = prev
            .keys()
            .filter(|other| reach(other).contains_key(m))
            .cloned()
            .collect();
        placed.extend(group.iter().cloned());
        let cycle = path
            .iter()
            .zip(path.iter().cycle().skip(1))
            .map(|(a, b)| (a.clone(), edge(a, b).unwrap_or_default()))
            .collect();
        out.push((cycle, group));
    }
    out
}
