//! A process core: an ELF core file that gdb and lldb open, planned from `/proc/PID` and the
//! threads' registers, then streamed from `/proc/PID/mem`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::elf::{self, FileMapping, LoadRange, ProcessInfo};
use super::files::{self, FileCache};
use super::maps::{self, Mapping};
use super::stream::{MemorySource, Piece, PieceReader, SharedReport};
use super::threads;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("process {pid} does not exist (or has exited)")]
    Gone { pid: u32 },
    #[error("process {pid} is a kernel thread: it has no user memory to capture")]
    KernelThread { pid: u32 },
    #[error("process {pid} is this agent itself; it is not captured")]
    SelfCapture { pid: u32 },
    #[error("process {pid}: cannot read {what}: {source}")]
    Proc {
        pid: u32,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Threads(#[from] threads::ThreadsError),
    #[error("process cores are written for x86_64 only; this agent runs on {0}")]
    Arch(&'static str),
}

/// `/proc/PID/mem`, read by virtual address.
pub struct ProcessMemory {
    file: File,
    dir: PathBuf,
}

impl MemorySource for ProcessMemory {
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read_at(buf, at)
    }

    fn gone(&self) -> Option<String> {
        // Reads give 0 bytes once the process's memory is released; it is a zombie or gone.
        let stat = std::fs::read_to_string(self.dir.join("stat")).ok();
        let state = stat
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .and_then(|(_, r)| r.split_whitespace().next());
        match state {
            None => Some("process exited during capture".into()),
            Some("Z") | Some("X") => Some("process exited during capture (zombie)".into()),
            _ => None,
        }
    }
}

/// A core decided on: what the manifest says about it, and its bytes to come.
pub struct PlannedCore {
    pub pid: u32,
    pub comm: String,
    pub details: Map<String, Value>,
    pub reader: PieceReader<ProcessMemory>,
    pub report: SharedReport,
    pub len: u64,
}

fn stat_fields(proc_dir: &Path, pid: u32) -> Result<(String, Vec<String>), CoreError> {
    let stat =
        std::fs::read_to_string(proc_dir.join("stat")).map_err(|e| gone_or(pid, "stat", e))?;
    let open = stat.find('(').unwrap_or(0);
    let close = stat.rfind(')').unwrap_or(stat.len());
    let comm = stat.get(open + 1..close).unwrap_or("").to_string();
    let rest = stat
        .get(close + 1..)
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok((comm, rest))
}

fn gone_or(pid: u32, what: &'static str, e: std::io::Error) -> CoreError {
    if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
        CoreError::Gone { pid }
    } else {
        CoreError::Proc {
            pid,
            what,
            source: e,
        }
    }
}

fn status_ids(status: &str, key: &str) -> (u32, u32) {
    let v: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
    )
}

fn flags_of(m: &Mapping) -> u32 {
    let mut f = 0;
    if m.read {
        f |= elf::PF_R;
    }
    if m.write {
        f |= elf::PF_W;
    }
    if m.exec {
        f |= elf::PF_X;
    }
    f
}

/// Stops the threads for their registers, reads the maps and lays out the core.
pub fn plan(proc_root: &Path, pid: u32, cache: &mut FileCache) -> Result<PlannedCore, CoreError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(CoreError::Arch(std::env::consts::ARCH));
    }
    if pid == std::process::id() {
        return Err(CoreError::SelfCapture { pid });
    }
    let dir = proc_root.join(pid.to_string());
    let (comm, st) = stat_fields(&dir, pid)?;
    let field = |i: usize| st.get(i).map(String::as_str).unwrap_or("0");
    let flags: u64 = field(6).parse().unwrap_or(0);
    if flags & 0x0020_0000 != 0 {
        return Err(CoreError::KernelThread { pid });
    }
    let status =
        std::fs::read_to_string(dir.join("status")).map_err(|e| gone_or(pid, "status", e))?;
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let psargs: Vec<u8> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(&cmdline)
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    let info = ProcessInfo {
        pid,
        ppid: field(1).parse().unwrap_or(0),
        pgrp: field(2).parse().unwrap_or(0),
        sid: field(3).parse().unwrap_or(0),
        uid: status_ids(&status, "Uid:").0,
        gid: status_ids(&status, "Gid:").0,
        state: field(0).bytes().next().unwrap_or(b'R'),
        nice: field(16).parse().unwrap_or(0),
        flags,
        comm: comm.as_bytes().to_vec(),
        psargs,
    };
    let mem = File::open(dir.join("mem")).map_err(|e| gone_or(pid, "mem", e))?;

    let stopped = threads::stop_and_read(proc_root, pid)?;
    // The maps after the registers, so every stack pointer falls in a listed mapping.
    let maps = maps::read(proc_root, pid).map_err(|e| gone_or(pid, "maps", e))?;
    if maps.is_empty() {
        return Err(CoreError::KernelThread { pid });
    }
    let auxv = std::fs::read(dir.join("auxv")).map_err(|e| gone_or(pid, "auxv", e))?;

    let mut loads = Vec::new();
    let mut listed = Vec::new();
    let mut skipped_bytes = 0u64;
    for m in &maps {
        let mut entry = json!({
            "start": format!("{:#x}", m.start),
            "end": format!("{:#x}", m.end),
            "perms": m.perms(),
            "offset": format!("{:#x}", m.offset),
            "path": m.path,
        });
        match m.skip_reason() {
            Some(why) => {
                skipped_bytes += m.len();
                entry["skipped"] = why.into();
            }
            None => loads.push(LoadRange {
                vaddr: m.start,
                len: m.len(),
                flags: flags_of(m),
            }),
        }
        listed.push(entry);
    }
    let file_maps: Vec<FileMapping> = maps
        .iter()
        .filter(|m| m.is_file())
        .map(|m| FileMapping {
            start: m.start,
            end: m.end,
            offset: m.offset,
            name: m.path.as_bytes().to_vec(),
        })
        .collect();
    let notes = elf::notes(&info, &stopped.threads, &auxv, &file_maps);
    let layout = elf::layout(&notes, &loads);

    let mut pieces = vec![Piece::Bytes(layout.head.clone())];
    let mut at = layout.head.len() as u64;
    for s in &layout.segments {
        if s.file_offset > at {
            pieces.push(Piece::Zeros(s.file_offset - at));
        }
        pieces.push(Piece::Source {
            at: s.vaddr,
            addr: s.vaddr,
            len: s.len,
            hash_slot: None,
        });
        at = s.file_offset + s.len;
    }
    let mapped_files = files::identify(proc_root, pid, &maps, cache);
    let exe = std::fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .ok();

    let mut details = Map::new();
    details.insert("format".into(), "elf-core".into());
    details.insert("comm".into(), comm.clone().into());
    details.insert("ppid".into(), info.ppid.into());
    details.insert("uid".into(), info.uid.into());
    details.insert("exe".into(), exe.into());
    details.insert(
        "cmdline".into(),
        cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| Value::String(String::from_utf8_lossy(a).into_owned()))
            .collect::<Vec<_>>()
            .into(),
    );
    details.insert(
        "threads".into(),
        stopped
            .threads
            .iter()
            .map(|t| t.tid)
            .collect::<Vec<_>>()
            .into(),
    );
    details.insert(
        "threads_stopped_us".into(),
        (stopped.stopped_for.as_micros() as u64).into(),
    );
    if !stopped.errors.is_empty() {
        details.insert("thread_errors".into(), stopped.errors.clone().into());
    }
    details.insert("segments".into(), loads.len().into());
    details.insert("skipped_bytes".into(), skipped_bytes.into());
    details.insert("mappings".into(), listed.into());
    details.insert(
        "mapped_files".into(),
        serde_json::to_value(&mapped_files).unwrap_or(Value::Null),
    );
    let len = PieceReader::<ProcessMemory>::len(&pieces);
    let (reader, report) = PieceReader::new(ProcessMemory { file: mem, dir }, pieces);
    Ok(PlannedCore {
        pid,
        comm,
        details,
        reader,
        report,
        len,
    })
}
