//! Which processes a memory capture takes: one pid, its tree, its ancestors, a container's
//! processes, or all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// pid → (ppid, first cgroup line that names a container, if any).
fn table(proc_root: &Path) -> BTreeMap<u32, (u32, String)> {
    let mut t = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return t;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue; // exited meanwhile
        };
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ppid = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        let flags: u64 = f.get(6).and_then(|v| v.parse().ok()).unwrap_or(0);
        if flags & 0x0020_0000 != 0 {
            continue; // kernel thread: no user memory
        }
        let cgroup = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        t.insert(pid, (ppid, cgroup));
    }
    t
}

/// `pid` and every process below it.
pub fn tree(proc_root: &Path, pid: u32) -> Vec<u32> {
    let t = table(proc_root);
    let mut out = BTreeSet::from([pid]);
    loop {
        let before = out.len();
        for (&p, (pp, _)) in &t {
            if out.contains(pp) {
                out.insert(p);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out.into_iter().collect()
}

/// `pid`, then its parent, grandparent… up to (not including) pid 1, which is the init of the
/// host and is only captured when asked for by pid.
pub fn with_ancestors(proc_root: &Path, pid: u32) -> Vec<u32> {
    let t = table(proc_root);
    let mut out = vec![pid];
    let mut at = pid;
    while let Some(&(pp, _)) = t.get(&at) {
        if pp <= 1 || out.contains(&pp) {
            break;
        }
        out.push(pp);
        at = pp;
    }
    out
}

/// Processes whose cgroup names the container (a full id or a prefix of at least 12
/// characters, as `docker ps` and Falco print it).
pub fn container(proc_root: &Path, id: &str) -> Result<Vec<u32>, String> {
    let id = id.trim();
    if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "container id {id:?}: give at least 12 hexadecimal characters"
        ));
    }
    let t = table(proc_root);
    Ok(t.iter()
        .filter(|(_, (_, cg))| {
            cg.lines()
                .filter_map(crate::identity::container_from_cgroup)
                .any(|c| c.id.starts_with(id))
        })
        .map(|(&p, _)| p)
        .collect())
}

/// Every user process except this agent.
pub fn all(proc_root: &Path) -> Vec<u32> {
    let me = std::process::id();
    table(proc_root).into_keys().filter(|&p| p != me).collect()
}
