//! `processes.json`: every process with its identity, credentials, command line, executable
//! (and its hash), namespaces, container, open files and memory map.
//!
//! Read straight from `/proc/PID/*`: the files are simple and reading them directly lets every
//! field distinguish "the process exited meanwhile" (not a failure) from "not allowed" (an
//! error on that field). Executables are hashed through `/proc/PID/exe`, which opens the very
//! file the process runs, even after it was deleted or replaced on disk.
//!
//! Long file: one document's reader (identity, credentials, command line, exe hash,
//! namespaces, files, maps) in under 560 lines; the rest are its unit tests.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{artifact, is_gone, put, Errors, VolatileOptions};
use crate::capture::Artifact;
use crate::identity::{container_from_cgroup, pod_uid_from_cgroup};
use cairn_protocol::rfc3339;

/// A process holding a socket open, found through its `/proc/PID/fd` links.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SocketOwner {
    /// Process id (in the namespace of `proc_root`).
    pub pid: i32,
    /// Its command name.
    pub comm: String,
    /// The descriptor number through which it holds the socket.
    pub fd: u32,
}

/// What the process pass hands on to the network pass.
pub(super) struct ProcessesOutput {
    pub artifact: Artifact,
    /// Socket inode → the processes holding it.
    pub socket_owners: HashMap<u64, Vec<SocketOwner>>,
    /// Each network namespace seen (`net:[4026531840]`) and the lowest pid in it, pid 1's first.
    pub net_namespaces: Vec<(String, i32)>,
}

/// `PF_KTHREAD` in the `flags` field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Debug, Default, Serialize)]
struct Ids {
    real: Option<u32>,
    effective: Option<u32>,
    saved: Option<u32>,
    fs: Option<u32>,
}

#[derive(Debug, Serialize)]
struct MapEntry {
    start: String,
    end: String,
    perms: String,
    offset: String,
    dev: String,
    inode: u64,
    path: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct ProcessRecord {
    pid: i32,
    ppid: Option<i32>,
    comm: Option<String>,
    state: Option<String>,
    /// The process exited while it was being read; the fields read until then are kept.
    vanished: bool,
    kernel_thread: bool,
    uid: Ids,
    gid: Ids,
    groups: Vec<u32>,
    /// Pid in each nested pid namespace, outermost first (`NSpid`).
    nspid: Vec<i32>,
    cap_effective: Option<String>,
    seccomp: Option<u32>,
    threads: Option<u64>,
    start_time: Option<String>,
    start_ticks: Option<u64>,
    cmdline: Vec<String>,
    /// The command line was not valid UTF-8 and was converted lossily.
    cmdline_lossy: bool,
    environ: Vec<String>,
    environ_truncated: bool,
    environ_lossy: bool,
    exe: Option<String>,
    exe_deleted: bool,
    exe_sha256: Option<String>,
    cwd: Option<String>,
    root: Option<String>,
    namespaces: BTreeMap<String, String>,
    cgroup: Vec<String>,
    container_id: Option<String>,
    container_runtime: Option<String>,
    pod_uid: Option<String>,
    fds: BTreeMap<u32, String>,
    maps: Vec<MapEntry>,
}

#[derive(Debug, Clone, Serialize)]
struct Executable {
    sha256: String,
    /// The first path it was seen under.
    path: String,
    dev: u64,
    inode: u64,
    size: u64,
}

struct Ctx<'a> {
    opts: &'a VolatileOptions,
    boot_time: Option<u64>,
    clk_tck: Option<u64>,
    /// (st_dev, st_ino) of the opened executable → hash or error, so each binary is read once.
    hashes: HashMap<(u64, u64), Result<String, String>>,
    executables: Vec<Executable>,
    buf: Vec<u8>,
    errors: Errors,
}

pub(super) fn collect(opts: &VolatileOptions) -> ProcessesOutput {
    let collected_at = rfc3339::now();
    let mut errors = Errors::default();
    let boot_time = boot_time(&opts.proc_root)
        .map_err(|e| errors.push("boot time (/proc/stat btime)", e))
        .ok();
    let clk_tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0);
    let mut ctx = Ctx {
        opts,
        boot_time,
        clk_tck,
        hashes: HashMap::new(),
        executables: Vec::new(),
        buf: vec![0u8; 256 * 1024],
        errors,
    };

    let mut pids: Vec<i32> = match fs::read_dir(&opts.proc_root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .collect(),
        Err(e) => {
            ctx.errors
                .push(format!("list {}", opts.proc_root.display()), e);
            Vec::new()
        }
    };
    pids.sort_unstable();

    let records: Vec<ProcessRecord> = pids
        .iter()
        .map(|&pid| read_process(&mut ctx, pid))
        .collect();

    let mut socket_owners: HashMap<u64, Vec<SocketOwner>> = HashMap::new();
    let mut net_namespaces: Vec<(String, i32)> = Vec::new();
    for p in &records {
        for (fd, target) in &p.fds {
            if let Some(inode) = socket_inode(target) {
                socket_owners.entry(inode).or_default().push(SocketOwner {
                    pid: p.pid,
                    comm: p.comm.clone().unwrap_or_default(),
                    fd: *fd,
                });
            }
        }
        if let Some(ns) = p.namespaces.get("net") {
            if !net_namespaces.iter().any(|(n, _)| n == ns) {
                net_namespaces.push((ns.clone(), p.pid));
            }
        }
    }

    let mut body = Map::new();
    let Ctx {
        mut errors,
        executables,
        ..
    } = ctx;
    body.insert(
        "boot_time_unix".into(),
        boot_time.map(Value::from).unwrap_or(Value::Null),
    );
    body.insert(
        "clk_tck".into(),
        clk_tck.map(Value::from).unwrap_or(Value::Null),
    );
    body.insert("process_count".into(), Value::from(records.len()));
    let vanished = records.iter().filter(|p| p.vanished).count();
    body.insert("vanished_count".into(), Value::from(vanished));
    put(&mut body, &mut errors, "executables", &executables);
    put(&mut body, &mut errors, "processes", &records);
    ProcessesOutput {
        artifact: artifact("processes.json", collected_at, body, errors, false),
        socket_owners,
        net_namespaces,
    }
}

/// `socket:[12345]` → 12345.
pub(super) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Boot time (Unix seconds) from the `btime` line of `/proc/stat`.
pub(super) fn boot_time(proc_root: &Path) -> io::Result<u64> {
    let stat = fs::read_to_string(proc_root.join("stat"))?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime line"))
}

/// Reads one process's files, classifying each failure.
struct ProcReader {
    dir: PathBuf,
    pid: i32,
    vanished: bool,
    /// Kernel threads and zombies have no exe, cwd, fds…: their absence is not an error.
    absent_ok: bool,
}

impl ProcReader {
    fn take<T>(&mut self, what: &str, r: io::Result<T>, errors: &mut Errors) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if is_gone(&e) => {
                if fs::symlink_metadata(&self.dir).is_err() {
                    self.vanished = true;
                } else if !self.absent_ok {
                    errors.push(format!("process {} {what}", self.pid), e);
                }
                None
            }
            Err(e) => {
                errors.push(format!("process {} {what}", self.pid), e);
                None
            }
        }
    }
}

fn link_text(p: &Path) -> io::Result<String> {
    Ok(fs::read_link(p)?.to_string_lossy().into_owned())
}

fn read_process(ctx: &mut Ctx<'_>, pid: i32) -> ProcessRecord {
    let dir = ctx.opts.proc_root.join(pid.to_string());
    let mut p = ProcessRecord {
        pid,
        ..Default::default()
    };
    let mut r = ProcReader {
        dir: dir.clone(),
        pid,
        vanished: false,
        absent_ok: false,
    };
    let errors = &mut ctx.errors;

    // After each step: stop reading a process that has exited.
    macro_rules! gone {
        () => {
            if r.vanished {
                p.vanished = true;
                return p;
            }
        };
    }

    if let Some(stat) = r.take("stat", fs::read_to_string(dir.join("stat")), errors) {
        if let Some(s) = parse_stat(&stat) {
            p.comm = Some(s.comm);
            p.state = Some(s.state.clone());
            p.ppid = Some(s.ppid);
            p.kernel_thread = s.flags & PF_KTHREAD != 0;
            p.threads = Some(s.num_threads);
            p.start_ticks = Some(s.starttime);
            if let (Some(bt), Some(tck)) = (ctx.boot_time, ctx.clk_tck) {
                let nanos = i128::from(bt) * 1_000_000_000
                    + i128::from(s.starttime) * 1_000_000_000 / i128::from(tck);
                p.start_time = rfc3339::from_unix_ns(nanos);
            }
            r.absent_ok = p.kernel_thread || s.state == "Z" || s.state == "X";
        } else {
            errors.push(format!("process {pid} stat"), "unparsable /proc/PID/stat");
        }
    }
    gone!();

    if let Some(status) = r.take("status", fs::read_to_string(dir.join("status")), errors) {
        apply_status(&mut p, &status);
    }
    gone!();

    if let Some(bytes) = r.take("cmdline", fs::read(dir.join("cmdline")), errors) {
        (p.cmdline, p.cmdline_lossy) = split_nul(&bytes);
    }
    gone!();

    let max = ctx.opts.max_environ_bytes;
    let environ = File::open(dir.join("environ")).and_then(|f| {
        let mut v = Vec::new();
        f.take(max as u64 + 1).read_to_end(&mut v)?;
        Ok(v)
    });
    if let Some(mut bytes) = r.take("environ", environ, errors) {
        if bytes.len() > max {
            bytes.truncate(max);
            p.environ_truncated = true;
        }
        (p.environ, p.environ_lossy) = split_nul(&bytes);
    }
    gone!();

    if let Some(exe) = r.take("exe", link_text(&dir.join("exe")), errors) {
        p.exe_deleted = exe.ends_with(" (deleted)");
        p.exe = Some(exe);
    }
    gone!();
    if ctx.opts.hash_executables && p.exe.is_some() {
        let exe_path = p.exe.clone().unwrap_or_default();
        let hashed = hash_exe(
            &dir.join("exe"),
            &exe_path,
            &mut ctx.hashes,
            &mut ctx.executables,
            &mut ctx.buf,
        );
        match hashed {
            Ok(Some(h)) => p.exe_sha256 = Some(h),
            Ok(None) => {}
            Err(e) => {
                r.take::<()>("exe hash", Err(e), errors);
            }
        }
    }
    gone!();

    p.cwd = r.take("cwd", link_text(&dir.join("cwd")), errors);
    gone!();
    p.root = r.take("root", link_text(&dir.join("root")), errors);
    gone!();

    if let Some(rd) = r.take("ns", fs::read_dir(dir.join("ns")), errors) {
        // One error for the directory, not one per namespace, when the links are refused.
        let mut refused: Option<(usize, io::Error)> = None;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match link_text(&e.path()) {
                Ok(t) => {
                    p.namespaces.insert(name, t);
                }
                Err(e) if is_gone(&e) => {
                    r.take::<()>("ns", Err(e), errors);
                }
                Err(e) => refused = Some((refused.map_or(0, |(n, _)| n) + 1, e)),
            }
        }
        if let Some((n, e)) = refused {
            errors.push(format!("process {pid} ns ({n} links)"), e);
        }
    }
    gone!();

    if let Some(cg) = r.take("cgroup", fs::read_to_string(dir.join("cgroup")), errors) {
        p.cgroup = cg.lines().map(str::to_string).collect();
        if let Some(c) = p.cgroup.iter().find_map(|l| container_from_cgroup(l)) {
            p.container_id = Some(c.id);
            p.container_runtime = Some(c.runtime.to_string());
        }
        p.pod_uid = p.cgroup.iter().find_map(|l| pod_uid_from_cgroup(l));
    }
    gone!();

    if let Some(rd) = r.take("fd", fs::read_dir(dir.join("fd")), errors) {
        let mut refused: Option<(usize, io::Error)> = None;
        for e in rd.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            match link_text(&e.path()) {
                Ok(t) => {
                    p.fds.insert(fd, t);
                }
                // Closed between listing and reading: nothing to record.
                Err(e) if is_gone(&e) => {}
                Err(e) => refused = Some((refused.map_or(0, |(n, _)| n) + 1, e)),
            }
        }
        if let Some((n, e)) = refused {
            errors.push(format!("process {pid} fd ({n} links)"), e);
        }
    }
    gone!();

    if let Some(maps) = r.take("maps", fs::read_to_string(dir.join("maps")), errors) {
        p.maps = maps.lines().filter_map(parse_map_line).collect();
    }
    p.vanished = r.vanished;
    p
}

/// Hash the file behind `/proc/PID/exe` once per (device, inode).
fn hash_exe(
    link: &Path,
    shown_path: &str,
    cache: &mut HashMap<(u64, u64), Result<String, String>>,
    executables: &mut Vec<Executable>,
    buf: &mut [u8],
) -> io::Result<Option<String>> {
    let mut f = File::open(link)?;
    let md = f.metadata()?;
    let key = (md.dev(), md.ino());
    if let Some(cached) = cache.get(&key) {
        // A failure was reported for the first process running this file.
        return Ok(cached.clone().ok());
    }
    let mut h = Sha256::new();
    let res = loop {
        match f.read(buf) {
            Ok(0) => break Ok(hex::encode(h.finalize())),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    match res {
        Ok(hash) => {
            cache.insert(key, Ok(hash.clone()));
            executables.push(Executable {
                sha256: hash.clone(),
                path: shown_path.to_string(),
                dev: key.0,
                inode: key.1,
                size: md.len(),
            });
            Ok(Some(hash))
        }
        Err(e) => {
            cache.insert(key, Err(e.to_string()));
            Err(e)
        }
    }
}

struct Stat {
    comm: String,
    state: String,
    ppid: i32,
    flags: u64,
    num_threads: u64,
    starttime: u64,
}

/// `/proc/PID/stat`; the command name sits in parentheses and may itself hold `)` and spaces.
fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let f: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    Some(Stat {
        comm,
        state: f.first()?.to_string(),
        ppid: f.get(1)?.parse().ok()?,
        flags: f.get(6)?.parse().ok()?,
        num_threads: f.get(17)?.parse().ok()?,
        starttime: f.get(19)?.parse().ok()?,
    })
}

fn apply_status(p: &mut ProcessRecord, status: &str) {
    let nums = |v: &str| -> Vec<u32> {
        v.split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    let ids = |v: &str| {
        let n = nums(v);
        Ids {
            real: n.first().copied(),
            effective: n.get(1).copied(),
            saved: n.get(2).copied(),
            fs: n.get(3).copied(),
        }
    };
    for line in status.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Uid" => p.uid = ids(v),
            "Gid" => p.gid = ids(v),
            "Groups" => p.groups = nums(v),
            "NSpid" => {
                p.nspid = v
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            }
            "CapEff" => p.cap_effective = Some(v.to_string()),
            "Seccomp" => p.seccomp = v.parse().ok(),
            "Threads" => p.threads = v.parse().ok().or(p.threads),
            "PPid" if p.ppid.is_none() => p.ppid = v.parse().ok(),
            "Name" if p.comm.is_none() => p.comm = Some(v.to_string()),
            _ => {}
        }
    }
}

/// NUL-separated strings (`cmdline`, `environ`), and whether any was not valid UTF-8.
fn split_nul(bytes: &[u8]) -> (Vec<String>, bool) {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return (Vec::new(), false);
    }
    let mut lossy = false;
    let parts = bytes
        .split(|b| *b == 0)
        .map(|part| match std::str::from_utf8(part) {
            Ok(s) => s.to_string(),
            Err(_) => {
                lossy = true;
                String::from_utf8_lossy(part).into_owned()
            }
        })
        .collect();
    (parts, lossy)
}

/// One line of `/proc/PID/maps`: `start-end perms offset dev inode   path`.
fn parse_map_line(line: &str) -> Option<MapEntry> {
    let (f, path) = super::split_fields(line, 5);
    let (start, end) = f.first()?.split_once('-')?;
    // The path is everything after the padding; it may contain spaces.
    let path = path.trim_end();
    Some(MapEntry {
        start: start.to_string(),
        end: end.to_string(),
        perms: f.get(1)?.to_string(),
        offset: f.get(2)?.to_string(),
        dev: f.get(3)?.to_string(),
        inode: f.get(4)?.parse().ok()?,
        path: (!path.is_empty()).then(|| path.to_string()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn processes(opts: &VolatileOptions) -> Value {
        let out = collect(opts);
        serde_json::from_slice(&out.artifact.bytes).unwrap()
    }

    #[test]
    fn child_process_appears_with_parent_cmdline_and_exe_hash() {
        use std::os::unix::process::CommandExt;
        let marker = format!("cairn-test-{}", uuid::Uuid::new_v4());
        // The marker as argv[0] and in the environment: sleep ignores both.
        let mut child = Command::new("/bin/sleep")
            .arg0(&marker)
            .arg("30")
            .env("CAIRN_MARKER", &marker)
            .spawn()
            .unwrap();
        let doc = processes(&VolatileOptions::default());
        child.kill().unwrap();
        child.wait().unwrap();

        let procs = doc["processes"].as_array().unwrap();
        let pids: Vec<i64> = procs.iter().map(|p| p["pid"].as_i64().unwrap()).collect();
        assert!(pids.windows(2).all(|w| w[0] < w[1]), "sorted by pid");
        let me = std::process::id() as i64;

        let sleep = procs
            .iter()
            .find(|p| p["pid"].as_i64() == Some(child.id() as i64))
            .unwrap();
        assert_eq!(sleep["ppid"].as_i64(), Some(me));
        assert_eq!(sleep["cmdline"], serde_json::json!([marker, "30"]));
        let env = sleep["environ"].as_array().unwrap();
        assert!(env
            .iter()
            .any(|e| e.as_str() == Some(&format!("CAIRN_MARKER={marker}"))));
        let real = fs::canonicalize("/bin/sleep").unwrap();
        assert_eq!(sleep["exe"].as_str(), Some(real.to_str().unwrap()));
        let expected = hex::encode(Sha256::digest(fs::read(&real).unwrap()));
        assert_eq!(sleep["exe_sha256"].as_str(), Some(expected.as_str()));
        assert_eq!(sleep["exe_deleted"], false);
        assert_eq!(sleep["vanished"], false);
        assert!(sleep["start_time"].as_str().unwrap().ends_with('Z'));
        assert!(sleep["namespaces"]["pid"]
            .as_str()
            .unwrap()
            .starts_with("pid:["));
        assert!(sleep["maps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["path"].as_str() == Some(real.to_str().unwrap())));

        // Our own process: the test binary with our fds.
        let us = procs
            .iter()
            .find(|p| p["pid"].as_i64() == Some(me))
            .unwrap();
        assert_eq!(
            us["uid"]["effective"].as_u64(),
            Some(nix::unistd::geteuid().as_raw() as u64)
        );
        assert!(us["fds"].as_object().unwrap().contains_key("0"));
        // Each binary hashed once.
        let exes = doc["executables"].as_array().unwrap();
        let mut keys: Vec<(u64, u64)> = exes
            .iter()
            .map(|e| (e["dev"].as_u64().unwrap(), e["inode"].as_u64().unwrap()))
            .collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }

    #[test]
    fn deleted_executable_is_flagged_and_still_hashed() {
        let dir = std::env::temp_dir().join(format!("cairn-del-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("sleepcopy");
        fs::copy("/bin/sleep", &copy).unwrap();
        let mut child = Command::new(&copy).arg("30").spawn().unwrap();
        // Wait until the exec happened, then delete the file.
        for _ in 0..100 {
            let exe = fs::read_link(format!("/proc/{}/exe", child.id())).unwrap_or_default();
            if exe == copy {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        fs::remove_file(&copy).unwrap();
        let doc = processes(&VolatileOptions::default());
        child.kill().unwrap();
        child.wait().unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let p = doc["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"].as_i64() == Some(child.id() as i64))
            .unwrap()
            .clone();
        assert_eq!(p["exe_deleted"], true);
        assert!(p["exe"].as_str().unwrap().ends_with(" (deleted)"));
        let expected = hex::encode(Sha256::digest(fs::read("/bin/sleep").unwrap()));
        assert_eq!(p["exe_sha256"].as_str(), Some(expected.as_str()));
    }

    #[test]
    fn kernel_threads_have_no_exe_and_no_error() {
        let doc = processes(&VolatileOptions::default());
        let kthreads: Vec<&Value> = doc["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kernel_thread"] == true)
            .collect();
        assert!(!kthreads.is_empty());
        for k in &kthreads {
            assert!(k["exe"].is_null());
            assert!(k["exe_sha256"].is_null());
        }
        let errs = doc["errors"].as_array().unwrap();
        for k in kthreads {
            let prefix = format!("process {} ", k["pid"]);
            assert!(
                !errs
                    .iter()
                    .any(|e| e["what"].as_str().unwrap().starts_with(&prefix)),
                "{errs:?}"
            );
        }
    }

    #[test]
    fn short_lived_processes_during_collection_do_not_fail_it() {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let spawner = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                if let Ok(mut c) = Command::new("/bin/true").spawn() {
                    let _ = c.wait();
                    n += 1;
                }
            }
            n
        });
        let opts = VolatileOptions::default();
        for _ in 0..3 {
            let arts = super::super::collect(&opts);
            assert_eq!(arts.len(), 6);
            let doc: Value = serde_json::from_slice(&arts[1].bytes).unwrap();
            assert!(doc["process_count"].as_u64().unwrap() > 1);
            // Vanished processes are not errors.
            for e in doc["errors"].as_array().unwrap() {
                let err = e["error"].as_str().unwrap();
                assert!(
                    !err.contains("No such file") && !err.contains("No such process"),
                    "{e}"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(spawner.join().unwrap() > 0);
    }

    #[test]
    fn vanished_process_is_recorded_not_failed() {
        // A pid directory that disappears: read a pid that does not exist.
        let mut ctx = Ctx {
            opts: &VolatileOptions::default(),
            boot_time: None,
            clk_tck: None,
            hashes: HashMap::new(),
            executables: Vec::new(),
            buf: vec![0; 4096],
            errors: Errors::default(),
        };
        let p = read_process(&mut ctx, i32::MAX);
        assert!(p.vanished);
        assert!(ctx.errors.0.is_empty());
    }

    #[test]
    fn parsers() {
        let s =
            parse_stat("42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 3 0 12345 0 0")
                .unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(
            (s.state.as_str(), s.ppid, s.num_threads, s.starttime),
            ("S", 1, 3, 12345)
        );
        let m = parse_map_line("7f00-7f10 r-xp 00001000 08:01 1234    /usr/lib/my lib.so").unwrap();
        assert_eq!((m.start.as_str(), m.inode), ("7f00", 1234));
        assert_eq!(m.path.as_deref(), Some("/usr/lib/my lib.so"));
        assert!(parse_map_line("7f00-7f10 rw-p 00000000 00:00 0 ")
            .unwrap()
            .path
            .is_none());
        assert_eq!(
            split_nul(b"a\0b\xff\0"),
            (vec!["a".into(), "b\u{fffd}".into()], true)
        );
        assert_eq!(socket_inode("socket:[99]"), Some(99));
        assert_eq!(socket_inode("pipe:[99]"), None);
    }
}
