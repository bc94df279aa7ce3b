//! Register state of every thread, read while the threads are stopped for as short a time as
//! possible.
//!
//! Each thread is attached with `PTRACE_SEIZE` (which, unlike `PTRACE_ATTACH`, sends no
//! SIGSTOP the process could observe), then all of them are stopped with `PTRACE_INTERRUPT`
//! so the registers describe one moment, read, and released with `PTRACE_DETACH`. Memory is
//! read afterwards while the process runs again: a production workload is paused for
//! milliseconds, not for the seconds a large core takes. The cost is that memory may move on
//! after the registers were taken; ARCHITECTURE.md records that choice.
//!
//! ptrace requests must come from the thread that attached, so [`stop_and_read`] does the
//! whole attach/read/detach cycle in one call.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::elf::{ThreadState, FPREGS_SIZE, REGS_SIZE, SIGINFO_SIZE};

const NT_PRSTATUS: i32 = 1;
const NT_PRFPREG: i32 = 2;
const NT_X86_XSTATE: i32 = 0x202;
const SIGSTOP: u16 = 19;

/// What stopping the threads gave.
#[derive(Debug, Default)]
pub struct Stopped {
    pub threads: Vec<ThreadState>,
    /// Threads whose registers could not be read, and why.
    pub errors: Vec<String>,
    /// How long the first thread was stopped.
    pub stopped_for: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    #[error("process {pid} has exited")]
    Gone { pid: u32 },
    #[error(
        "cannot attach to process {pid} with ptrace: {source}. It may already be traced (a \
         debugger, strace), or this agent lacks CAP_SYS_PTRACE, or Yama's ptrace_scope is 3"
    )]
    Attach { pid: u32, source: nix::Error },
}

fn task_ids(proc_root: &Path, pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(proc_root.join(pid.to_string()).join("task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    // The thread group leader first: gdb shows the first NT_PRSTATUS as the current thread.
    if let Some(i) = v.iter().position(|&t| t == pid) {
        v.remove(i);
        v.insert(0, pid);
    }
    v
}

/// `PTRACE_GETREGSET` into `buf`; returns how many bytes the kernel filled.
fn getregset(tid: u32, nt: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most iov_len bytes into buf, which outlives the call, and
    // updates iov_len to the size it wrote.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid as libc::pid_t,
            nt as usize as *mut libc::c_void,
            &mut iov as *mut libc::iovec as *mut libc::c_void,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(iov.iov_len.min(buf.len()))
    }
}

/// Signal masks and CPU times of one thread, from /proc (best effort: zero when unreadable).
fn thread_proc_facts(proc_root: &Path, pid: u32, tid: u32) -> (u64, u64, u64, u64) {
    let dir = proc_root
        .join(pid.to_string())
        .join("task")
        .join(tid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let hex = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let (pend, blk) = (hex("SigPnd:"), hex("SigBlk:"));
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (
        pend,
        blk,
        ticks(11) * 1_000_000 / hz,
        ticks(12) * 1_000_000 / hz,
    )
}

/// Attach to every thread of `pid`, stop them, read their registers and let them go.
pub fn stop_and_read(proc_root: &Path, pid: u32) -> Result<Stopped, ThreadsError> {
    let mut seized: Vec<u32> = Vec::new();
    let mut errors = Vec::new();
    // Threads may be created while we attach: list again until no new one appears.
    for _round in 0..5 {
        let fresh: Vec<u32> = task_ids(proc_root, pid)
            .into_iter()
            .filter(|t| !seized.contains(t))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for tid in fresh {
            match ptrace::seize(Pid::from_raw(tid as i32), ptrace::Options::empty()) {
                Ok(()) => seized.push(tid),
                Err(nix::Error::ESRCH) => {} // exited meanwhile
                Err(e) if tid == pid || seized.is_empty() => {
                    release(&seized, &[]);
                    if !proc_root.join(pid.to_string()).exists() {
                        return Err(ThreadsError::Gone { pid });
                    }
                    return Err(ThreadsError::Attach { pid, source: e });
                }
                Err(e) => errors.push(format!("thread {tid}: cannot attach: {e}")),
            }
        }
    }
    if seized.is_empty() {
        return Err(ThreadsError::Gone { pid });
    }
    let started = Instant::now();
    for &tid in &seized {
        if let Err(e) = ptrace::interrupt(Pid::from_raw(tid as i32)) {
            errors.push(format!("thread {tid}: cannot interrupt: {e}"));
        }
    }
    // Wait for each stop. A signal arriving at the same time gives a signal-delivery stop:
    // that signal is handed back to the thread when it is released.
    let mut pending: Vec<(u32, Option<nix::sys::signal::Signal>)> = Vec::new();
    let mut stopped: Vec<u32> = Vec::new();
    for &tid in &seized {
        match waitpid(Pid::from_raw(tid as i32), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(..)) => stopped.push(tid),
            Ok(WaitStatus::Stopped(_, sig)) => {
                stopped.push(tid);
                pending.push((tid, Some(sig)));
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {}
            Ok(other) => {
                stopped.push(tid);
                errors.push(format!("thread {tid}: unexpected stop {other:?}"));
            }
            Err(e) => errors.push(format!("thread {tid}: wait failed: {e}")),
        }
    }
    let mut threads = Vec::new();
    for &tid in &stopped {
        match read_thread(proc_root, pid, tid) {
            Ok(t) => threads.push(t),
            Err(e) => errors.push(format!("thread {tid}: cannot read registers: {e}")),
        }
    }
    release(&seized, &pending);
    let stopped_for = started.elapsed();
    if threads.is_empty() && !proc_root.join(pid.to_string()).exists() {
        return Err(ThreadsError::Gone { pid });
    }
    Ok(Stopped {
        threads,
        errors,
        stopped_for,
    })
}

fn release(seized: &[u32], pending: &[(u32, Option<nix::sys::signal::Signal>)]) {
    for &tid in seized {
        let sig = pending.iter().find(|p| p.0 == tid).and_then(|p| p.1);
        // A thread that exited meanwhile cannot be detached; nothing to undo then.
        let _ = ptrace::detach(Pid::from_raw(tid as i32), sig);
    }
}

/// gdb sizes the XSAVE note by the standard (non-compacted) layout of the features in XCR0,
/// which the kernel stores at byte 464; a hypervisor may report a smaller buffer. The area is
/// zero-padded to that size so gdb reads it (the features' own bytes are unchanged).
fn pad_xstate(xs: &mut Vec<u8>) {
    const LAYOUT: &[(u32, usize)] = &[
        (2, 576 + 256),   // AVX
        (3, 960 + 64),    // MPX bound registers
        (4, 1024 + 64),   // MPX bound config
        (5, 1088 + 64),   // AVX-512 opmask
        (6, 1152 + 512),  // AVX-512 ZMM_Hi256
        (7, 1664 + 1024), // AVX-512 Hi16_ZMM
        (9, 2688 + 8),    // PKRU
    ];
    let Some(xcr0) = xs
        .get(464..472)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
    else {
        return;
    };
    let want = LAYOUT
        .iter()
        .filter(|(bit, _)| xcr0 & (1 << bit) != 0)
        .map(|&(_, end)| end)
        .max()
        .unwrap_or(0);
    if xs.len() < want {
        xs.resize(want, 0);
    }
}

fn read_thread(proc_root: &Path, pid: u32, tid: u32) -> std::io::Result<ThreadState> {
    let mut regs = [0u8; REGS_SIZE];
    let n = getregset(tid, NT_PRSTATUS, &mut regs)?;
    if n != REGS_SIZE {
        return Err(std::io::Error::other(format!(
            "the kernel returned {n} bytes of general registers, expected {REGS_SIZE} (not x86_64?)"
        )));
    }
    let mut fp = [0u8; FPREGS_SIZE];
    let fpregs = match getregset(tid, NT_PRFPREG, &mut fp) {
        Ok(n) if n == FPREGS_SIZE => Some(fp),
        _ => None,
    };
    let mut xs = vec![0u8; 16 * 1024];
    let xstate = match getregset(tid, NT_X86_XSTATE, &mut xs) {
        Ok(n) if n > 0 => {
            xs.truncate(n);
            pad_xstate(&mut xs);
            Some(xs)
        }
        _ => None,
    };
    // The stop was ours (PTRACE_INTERRUPT); record it as gcore does, as a SIGSTOP.
    let mut siginfo = [0u8; SIGINFO_SIZE];
    siginfo[0..4].copy_from_slice(&i32::from(SIGSTOP).to_le_bytes());
    let (sigpend, sighold, utime_us, stime_us) = thread_proc_facts(proc_root, pid, tid);
    Ok(ThreadState {
        tid,
        regs,
        fpregs,
        xstate,
        siginfo,
        cursig: SIGSTOP,
        sigpend,
        sighold,
        utime_us,
        stime_us,
    })
}
