//! Freeze, thaw and kill: a container through its cgroup v2 (`cgroup.freeze`, `cgroup.kill`),
//! a process tree outside a cgroup of its own by signals (SIGSTOP, SIGCONT, SIGKILL).
//!
//! A frozen process keeps its memory and its sockets: it can still be captured
//! (`/proc/PID/mem`), which is why freezing comes before deciding to kill.

use super::ContainError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Most processes one tree or cgroup action reaches.
pub const MAX_PIDS: usize = 4096;
/// Rounds of "signal the tree, look again" before the tree is declared still growing.
const MAX_ROUNDS: usize = 16;
/// How long a state change (frozen, stopped, gone) is waited for.
pub const WAIT: Duration = Duration::from_secs(5);

fn cg_err(dir: &Path, detail: String) -> ContainError {
    ContainError::Cgroup {
        path: dir.to_path_buf(),
        detail,
    }
}

fn write_knob(dir: &Path, knob: &str, value: &str) -> Result<(), ContainError> {
    std::fs::write(dir.join(knob), value)
        .map_err(|e| cg_err(dir, format!("cannot write {value} to {knob}: {e}")))
}

/// `frozen` from the cgroup's `cgroup.events`.
pub fn is_frozen(dir: &Path) -> Result<bool, ContainError> {
    let ev = std::fs::read_to_string(dir.join("cgroup.events"))
        .map_err(|e| cg_err(dir, format!("cannot read cgroup.events: {e}")))?;
    Ok(ev.lines().any(|l| l.trim() == "frozen 1"))
}

fn wait_until(
    what: String,
    wait: Duration,
    mut done: impl FnMut() -> Result<bool, ContainError>,
) -> Result<(), ContainError> {
    let end = Instant::now() + wait;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(ContainError::Timeout { what, wait });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every process of the cgroup and its descendants (bounded).
pub fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut dirs = 0;
    while let Some(d) = stack.pop() {
        dirs += 1;
        if dirs > MAX_PIDS || pids.len() >= MAX_PIDS {
            break;
        }
        if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    pids.into_iter().take(MAX_PIDS).collect()
}

/// Freezes the cgroup and waits until the kernel says it is frozen.
pub fn freeze_cgroup(dir: &Path, wait: Duration) -> Result<Vec<u32>, ContainError> {
    write_knob(dir, "cgroup.freeze", "1")?;
    wait_until(format!("{} to freeze", dir.display()), wait, || {
        is_frozen(dir)
    })?;
    Ok(cgroup_pids(dir))
}

/// Thaws the cgroup and waits until the kernel says it is no longer frozen.
pub fn thaw_cgroup(dir: &Path, wait: Duration) -> Result<Vec<u32>, ContainError> {
    write_knob(dir, "cgroup.freeze", "0")?;
    wait_until(format!("{} to thaw", dir.display()), wait, || {
        is_frozen(dir).map(|f| !f)
    })?;
    Ok(cgroup_pids(dir))
}

/// Kills every process of the cgroup subtree (`cgroup.kill`, one atomic kernel walk that
/// also catches processes forking meanwhile) and waits until it is empty.
pub fn kill_cgroup(dir: &Path, wait: Duration) -> Result<Vec<u32>, ContainError> {
    let pids = cgroup_pids(dir);
    write_knob(dir, "cgroup.kill", "1")?;
    wait_until(format!("{} to empty", dir.display()), wait, || {
        Ok(cgroup_pids(dir).is_empty())
    })?;
    Ok(pids)
}

/// `stat` fields after the command name (field 3, the state, is index 0).
fn stat_fields(proc_root: &Path, pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The process's start time (clock ticks after boot): with the pid, it names one process
/// even after the pid is reused.
pub fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    stat_fields(proc_root, pid)?.get(19)?.parse().ok()
}

fn state(proc_root: &Path, pid: u32) -> Option<char> {
    stat_fields(proc_root, pid)?.first()?.chars().next()
}

fn ppid(proc_root: &Path, pid: u32) -> Option<u32> {
    stat_fields(proc_root, pid)?.get(1)?.parse().ok()
}

/// Direct children of `pid`, from every thread's `children` file; `None` when the kernel has
/// no such file (CONFIG_PROC_CHILDREN off).
fn children(proc_root: &Path, pid: u32) -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for t in tasks.flatten().take(MAX_PIDS) {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            any = true;
            out.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    any.then_some(out)
}

/// `pid` and its descendants, parents before children (bounded).
pub fn tree(proc_root: &Path, pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut seen = BTreeSet::from([pid]);
    let mut i = 0;
    while i < out.len() && out.len() < MAX_PIDS {
        let p = out[i];
        i += 1;
        let kids = match children(proc_root, p) {
            Some(k) => k,
            // Without `children` files: every process whose parent is in the tree.
            None => return crate::capture::memory::targets::tree(proc_root, pid),
        };
        for k in kids {
            if seen.insert(k) && out.len() < MAX_PIDS {
                out.push(k);
            }
        }
    }
    out
}

/// Refuses a tree the agent itself belongs to (its own process or an ancestor), pid 1 and
/// kernel threads.
pub fn refuse_self(proc_root: &Path, pid: u32) -> Result<(), ContainError> {
    if pid <= 1 {
        return Err(ContainError::Refused(
            "process 0 and 1 are the host itself; name a container instead".into(),
        ));
    }
    let flags: u64 = stat_fields(proc_root, pid)
        .and_then(|f| f.get(6).and_then(|v| v.parse().ok()))
        .ok_or_else(|| ContainError::NotFound(format!("process {pid} does not exist")))?;
    if flags & 0x0020_0000 != 0 {
        return Err(ContainError::Refused(format!(
            "process {pid} is a kernel thread"
        )));
    }
    let me = std::process::id();
    let mut at = me;
    for _ in 0..MAX_PIDS {
        if at == pid {
            return Err(ContainError::Refused(format!(
                "process {pid} is this agent or one of its ancestors: the agent never freezes or kills itself"
            )));
        }
        match ppid(proc_root, at) {
            Some(p) if p > 0 && p != at => at = p,
            _ => break,
        }
    }
    Ok(())
}

fn signal(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), sig).is_ok())
}

fn gone_or(proc_root: &Path, pid: u32, want: impl Fn(char) -> bool) -> bool {
    match state(proc_root, pid) {
        None | Some('Z') | Some('X') => true,
        Some(s) => want(s),
    }
}

/// SIGSTOP to the tree, parents first, again until a walk finds no new process (a child
/// forked before its parent stopped); waits until every one is stopped.
pub fn stop_tree(proc_root: &Path, pid: u32, wait: Duration) -> Result<Vec<u32>, ContainError> {
    refuse_self(proc_root, pid)?;
    let mut reached: Vec<u32> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let new: Vec<u32> = tree(proc_root, pid)
            .into_iter()
            .filter(|p| !reached.contains(p))
            .collect();
        if new.is_empty() {
            return Ok(reached);
        }
        for p in new {
            if signal(p, Signal::SIGSTOP) {
                reached.push(p);
            }
        }
        if !reached.contains(&pid) {
            return Err(ContainError::NotFound(format!("process {pid} is gone")));
        }
        let stopped = reached.clone();
        wait_until(format!("process tree {pid} to stop"), wait, || {
            Ok(stopped
                .iter()
                .all(|p| gone_or(proc_root, *p, |s| s == 'T' || s == 't')))
        })?;
    }
    Err(ContainError::Timeout {
        what: format!("process tree {pid} to stop growing ({MAX_ROUNDS} rounds)"),
        wait,
    })
}

/// SIGCONT to the tree.
pub fn continue_tree(proc_root: &Path, pid: u32) -> Result<Vec<u32>, ContainError> {
    refuse_self(proc_root, pid)?;
    let pids: Vec<u32> = tree(proc_root, pid)
        .into_iter()
        .filter(|p| signal(*p, Signal::SIGCONT))
        .collect();
    if pids.is_empty() {
        return Err(ContainError::NotFound(format!("process {pid} is gone")));
    }
    Ok(pids)
}

/// Stops the tree (so nothing forks meanwhile), then SIGKILL to every process of it; waits
/// until each is gone or a zombie.
pub fn kill_tree(proc_root: &Path, pid: u32, wait: Duration) -> Result<Vec<u32>, ContainError> {
    let pids = stop_tree(proc_root, pid, wait)?;
    for p in &pids {
        signal(*p, Signal::SIGKILL);
    }
    wait_until(format!("process tree {pid} to die"), wait, || {
        Ok(pids.iter().all(|p| gone_or(proc_root, *p, |_| false)))
    })?;
    Ok(pids)
}

/// Whether every listed process still alive is stopped.
pub fn all_stopped(proc_root: &Path, pids: &[u32]) -> bool {
    pids.iter()
        .all(|p| gone_or(proc_root, *p, |s| s == 'T' || s == 't'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_and_its_ancestors_are_refused() {
        let proc_root = Path::new("/proc");
        let me = std::process::id();
        assert!(matches!(
            refuse_self(proc_root, me),
            Err(ContainError::Refused(_))
        ));
        let parent = ppid(proc_root, me).unwrap();
        if parent > 1 {
            assert!(matches!(
                refuse_self(proc_root, parent),
                Err(ContainError::Refused(_))
            ));
        }
        assert!(matches!(
            refuse_self(proc_root, 1),
            Err(ContainError::Refused(_))
        ));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(refuse_self(proc_root, child.id()).is_ok());
        assert_eq!(tree(proc_root, child.id()), vec![child.id()]);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
