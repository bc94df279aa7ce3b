//! The ELF core file layout: header, program headers and notes, computed before any memory is
//! read so the core can be streamed front to back into the evidence pipeline.
//!
//! The notes follow the kernel's own core dumps (fs/binfmt_elf.c), which is what gdb and lldb
//! expect: the first thread's NT_PRSTATUS, then the process notes (NT_PRPSINFO, NT_SIGINFO,
//! NT_AUXV, NT_FILE), then that thread's NT_FPREGSET and NT_X86_XSTATE, then each other thread's
//! NT_PRSTATUS, NT_FPREGSET and NT_X86_XSTATE. Only x86_64 cores are written.

pub const PAGE: u64 = 4096;

const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PN_XNUM: u16 = 0xffff;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

const NT_PRSTATUS: u32 = 1;
const NT_FPREGSET: u32 = 2;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_SIGINFO: u32 = 0x5349_4749;
const NT_FILE: u32 = 0x4649_4c45;
const NT_X86_XSTATE: u32 = 0x202;

const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const SHDR_SIZE: u64 = 64;
/// `sizeof(struct elf_prstatus)` on x86_64.
const PRSTATUS_SIZE: usize = 336;
/// `sizeof(struct elf_prpsinfo)` on x86_64.
const PRPSINFO_SIZE: usize = 136;
/// `sizeof(user_regs_struct)`: 27 registers.
pub const REGS_SIZE: usize = 216;
/// `sizeof(user_fpregs_struct)` (the FXSAVE area).
pub const FPREGS_SIZE: usize = 512;
/// `sizeof(siginfo_t)`.
pub const SIGINFO_SIZE: usize = 128;

/// What a thread looked like while it was stopped.
#[derive(Debug, Clone)]
pub struct ThreadState {
    pub tid: u32,
    /// `user_regs_struct`, little-endian, in the kernel's order.
    pub regs: [u8; REGS_SIZE],
    pub fpregs: Option<[u8; FPREGS_SIZE]>,
    /// The XSAVE area (AVX and later), as PTRACE_GETREGSET returned it.
    pub xstate: Option<Vec<u8>>,
    pub siginfo: [u8; SIGINFO_SIZE],
    /// Signal number for pr_cursig (0 when the thread was not stopped by a signal).
    pub cursig: u16,
    pub sigpend: u64,
    pub sighold: u64,
    /// User and system time, microseconds.
    pub utime_us: u64,
    pub stime_us: u64,
}

/// Process-wide facts for NT_PRPSINFO and NT_PRSTATUS.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub sid: u32,
    pub uid: u32,
    pub gid: u32,
    /// State letter from /proc/PID/stat (`R`, `S`...).
    pub state: u8,
    pub nice: i8,
    pub flags: u64,
    /// Up to 15 bytes are kept, as the kernel does.
    pub comm: Vec<u8>,
    /// The command line with NULs as spaces; up to 79 bytes are kept.
    pub psargs: Vec<u8>,
}

/// A file mapping for NT_FILE.
#[derive(Debug, Clone)]
pub struct FileMapping {
    pub start: u64,
    pub end: u64,
    /// Offset in the file, in bytes (written in pages).
    pub offset: u64,
    pub name: Vec<u8>,
}

/// A memory range that becomes a PT_LOAD segment with its bytes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadRange {
    pub vaddr: u64,
    pub len: u64,
    pub flags: u32,
}

/// Where each segment's bytes sit in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedSegment {
    pub vaddr: u64,
    pub len: u64,
    pub file_offset: u64,
}

#[derive(Debug, Clone)]
pub struct CoreLayout {
    /// Everything before the first segment's bytes: ELF header, program headers, notes and
    /// padding up to the page-aligned first segment.
    pub head: Vec<u8>,
    pub segments: Vec<PlacedSegment>,
    pub total_len: u64,
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) {
    // namesz counts the terminating NUL; name and desc are each padded to 4 bytes.
    out.extend_from_slice(&((name.len() + 1) as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name);
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(desc);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn put_timeval(b: &mut [u8], at: usize, us: u64) {
    b[at..at + 8].copy_from_slice(&(us / 1_000_000).to_le_bytes());
    b[at + 8..at + 16].copy_from_slice(&(us % 1_000_000).to_le_bytes());
}

fn prstatus(p: &ProcessInfo, t: &ThreadState) -> Vec<u8> {
    let mut b = vec![0u8; PRSTATUS_SIZE];
    // struct elf_siginfo { si_signo, si_code, si_errno }
    b[0..4].copy_from_slice(&i32::from(t.cursig).to_le_bytes());
    b[12..14].copy_from_slice(&t.cursig.to_le_bytes());
    b[16..24].copy_from_slice(&t.sigpend.to_le_bytes());
    b[24..32].copy_from_slice(&t.sighold.to_le_bytes());
    b[32..36].copy_from_slice(&t.tid.to_le_bytes());
    b[36..40].copy_from_slice(&p.ppid.to_le_bytes());
    b[40..44].copy_from_slice(&p.pgrp.to_le_bytes());
    b[44..48].copy_from_slice(&p.sid.to_le_bytes());
    put_timeval(&mut b, 48, t.utime_us);
    put_timeval(&mut b, 64, t.stime_us);
    b[112..112 + REGS_SIZE].copy_from_slice(&t.regs);
    let fpvalid: i32 = t.fpregs.is_some().into();
    b[328..332].copy_from_slice(&fpvalid.to_le_bytes());
    b
}

fn prpsinfo(p: &ProcessInfo) -> Vec<u8> {
    let mut b = vec![0u8; PRPSINFO_SIZE];
    // pr_state is the index of the state letter in "RSDTZW", as the kernel computes it.
    let state = b"RSDTZW".iter().position(|&c| c == p.state).unwrap_or(0);
    b[0] = state as u8;
    b[1] = if p.state == 0 { b'.' } else { p.state };
    b[2] = u8::from(p.state == b'Z');
    b[3] = p.nice as u8;
    b[8..16].copy_from_slice(&p.flags.to_le_bytes());
    b[16..20].copy_from_slice(&p.uid.to_le_bytes());
    b[20..24].copy_from_slice(&p.gid.to_le_bytes());
    b[24..28].copy_from_slice(&p.pid.to_le_bytes());
    b[28..32].copy_from_slice(&p.ppid.to_le_bytes());
    b[32..36].copy_from_slice(&p.pgrp.to_le_bytes());
    b[36..40].copy_from_slice(&p.sid.to_le_bytes());
    let comm = &p.comm[..p.comm.len().min(15)];
    b[40..40 + comm.len()].copy_from_slice(comm);
    let args = &p.psargs[..p.psargs.len().min(79)];
    b[56..56 + args.len()].copy_from_slice(args);
    b
}

fn nt_file(files: &[FileMapping]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(files.len() as u64).to_le_bytes());
    b.extend_from_slice(&PAGE.to_le_bytes());
    for f in files {
        b.extend_from_slice(&f.start.to_le_bytes());
        b.extend_from_slice(&f.end.to_le_bytes());
        b.extend_from_slice(&(f.offset / PAGE).to_le_bytes());
    }
    for f in files {
        b.extend_from_slice(&f.name);
        b.push(0);
    }
    b
}

fn thread_regsets(out: &mut Vec<u8>, t: &ThreadState) {
    if let Some(fp) = &t.fpregs {
        note(out, b"CORE", NT_FPREGSET, fp);
    }
    if let Some(x) = &t.xstate {
        note(out, b"LINUX", NT_X86_XSTATE, x);
    }
}

/// The notes segment. `threads[0]` is the thread gdb shows first.
pub fn notes(
    p: &ProcessInfo,
    threads: &[ThreadState],
    auxv: &[u8],
    files: &[FileMapping],
) -> Vec<u8> {
    let mut out = Vec::new();
    let Some((first, rest)) = threads.split_first() else {
        note(&mut out, b"CORE", NT_PRPSINFO, &prpsinfo(p));
        note(&mut out, b"CORE", NT_AUXV, auxv);
        note(&mut out, b"CORE", NT_FILE, &nt_file(files));
        return out;
    };
    note(&mut out, b"CORE", NT_PRSTATUS, &prstatus(p, first));
    note(&mut out, b"CORE", NT_PRPSINFO, &prpsinfo(p));
    note(&mut out, b"CORE", NT_SIGINFO, &first.siginfo);
    note(&mut out, b"CORE", NT_AUXV, auxv);
    note(&mut out, b"CORE", NT_FILE, &nt_file(files));
    thread_regsets(&mut out, first);
    for t in rest {
        note(&mut out, b"CORE", NT_PRSTATUS, &prstatus(p, t));
        thread_regsets(&mut out, t);
    }
    out
}

/// One program header: (type, flags, offset, vaddr, filesz, memsz, align).
type Phdr = (u32, u32, u64, u64, u64, u64, u64);

fn phdr(out: &mut Vec<u8>, (kind, flags, offset, vaddr, filesz, memsz, align): Phdr) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&vaddr.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // p_paddr
    out.extend_from_slice(&filesz.to_le_bytes());
    out.extend_from_slice(&memsz.to_le_bytes());
    out.extend_from_slice(&align.to_le_bytes());
}

/// Lays out a core: the head bytes, and where each range's bytes go.
pub fn layout(notes: &[u8], loads: &[LoadRange]) -> CoreLayout {
    let phnum = loads.len() as u64 + 1;
    // More than 65534 program headers: e_phnum says PN_XNUM and section header 0 holds the count.
    let xnum = phnum >= u64::from(PN_XNUM);
    let phoff = EHDR_SIZE;
    let shoff = phoff + phnum * PHDR_SIZE;
    let notes_off = shoff + if xnum { SHDR_SIZE } else { 0 };
    let mut offset = align(notes_off + notes.len() as u64, PAGE);
    let mut segments = Vec::with_capacity(loads.len());
    for l in loads {
        segments.push(PlacedSegment {
            vaddr: l.vaddr,
            len: l.len,
            file_offset: offset,
        });
        offset = align(offset + l.len, PAGE);
    }
    let total_len = segments
        .last()
        .map(|s| s.file_offset + s.len)
        .unwrap_or(notes_off + notes.len() as u64);

    let mut h = Vec::with_capacity(notes_off as usize + notes.len());
    h.extend_from_slice(b"\x7fELF");
    h.extend_from_slice(&[2, 1, 1, 0]); // ELFCLASS64, little-endian, EV_CURRENT, SYSV
    h.extend_from_slice(&[0u8; 8]);
    h.extend_from_slice(&ET_CORE.to_le_bytes());
    h.extend_from_slice(&EM_X86_64.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // e_version
    h.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    h.extend_from_slice(&phoff.to_le_bytes());
    h.extend_from_slice(&(if xnum { shoff } else { 0 }).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    h.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    let e_phnum = if xnum { PN_XNUM } else { phnum as u16 };
    h.extend_from_slice(&e_phnum.to_le_bytes());
    h.extend_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&u16::from(xnum).to_le_bytes()); // e_shnum
    h.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    phdr(&mut h, (PT_NOTE, 0, notes_off, 0, notes.len() as u64, 0, 0));
    for (l, s) in loads.iter().zip(&segments) {
        phdr(
            &mut h,
            (PT_LOAD, l.flags, s.file_offset, l.vaddr, l.len, l.len, PAGE),
        );
    }
    if xnum {
        // Section header 0: only sh_info (the real program header count) is used.
        let mut sh = [0u8; SHDR_SIZE as usize];
        sh[44..48].copy_from_slice(&(phnum.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        h.extend_from_slice(&sh);
    }
    h.extend_from_slice(notes);
    let head_len = segments
        .first()
        .map(|s| s.file_offset)
        .unwrap_or(h.len() as u64);
    h.resize(head_len as usize, 0);
    CoreLayout {
        head: h,
        segments,
        total_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(tid: u32) -> ThreadState {
        let mut regs = [0u8; REGS_SIZE];
        regs[16 * 8..17 * 8].copy_from_slice(&0x0040_1122_u64.to_le_bytes()); // rip
        ThreadState {
            tid,
            regs,
            fpregs: Some([7u8; FPREGS_SIZE]),
            xstate: None,
            siginfo: [0; SIGINFO_SIZE],
            cursig: 19,
            sigpend: 0,
            sighold: 0,
            utime_us: 1_500_000,
            stime_us: 20,
        }
    }

    fn parse_notes(mut b: &[u8]) -> Vec<(String, u32, usize)> {
        let mut v = Vec::new();
        while b.len() >= 12 {
            let namesz = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
            let descsz = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
            let kind = u32::from_le_bytes(b[8..12].try_into().unwrap());
            let name = String::from_utf8_lossy(&b[12..12 + namesz - 1]).into_owned();
            let desc_at = 12 + align(namesz as u64, 4) as usize;
            v.push((name, kind, descsz));
            b = &b[desc_at + align(descsz as u64, 4) as usize..];
        }
        v
    }

    #[test]
    fn notes_follow_the_kernels_order() {
        let p = ProcessInfo {
            pid: 10,
            comm: b"fixture".to_vec(),
            state: b'S',
            ..Default::default()
        };
        let files = vec![FileMapping {
            start: 0x1000,
            end: 0x3000,
            offset: 0x2000,
            name: b"/bin/x".to_vec(),
        }];
        let n = notes(&p, &[thread(10), thread(11)], &[1, 2, 3, 4], &files);
        let kinds: Vec<u32> = parse_notes(&n).iter().map(|x| x.1).collect();
        assert_eq!(
            kinds,
            vec![
                NT_PRSTATUS,
                NT_PRPSINFO,
                NT_SIGINFO,
                NT_AUXV,
                NT_FILE,
                NT_FPREGSET,
                NT_PRSTATUS,
                NT_FPREGSET
            ]
        );
        let sizes: Vec<usize> = parse_notes(&n).iter().map(|x| x.2).collect();
        assert_eq!(sizes[0], PRSTATUS_SIZE);
        assert_eq!(sizes[1], PRPSINFO_SIZE);
        assert_eq!(sizes[2], SIGINFO_SIZE);
        // NT_FILE: count, page size, one triple, "/bin/x\0".
        assert_eq!(sizes[4], 16 + 24 + 7);
    }

    #[test]
    fn prstatus_fields_sit_where_gdb_reads_them() {
        let p = ProcessInfo {
            pid: 10,
            ppid: 1,
            ..Default::default()
        };
        let b = prstatus(&p, &thread(12));
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 12);
        assert_eq!(u32::from_le_bytes(b[36..40].try_into().unwrap()), 1);
        assert_eq!(u16::from_le_bytes(b[12..14].try_into().unwrap()), 19);
        assert_eq!(u64::from_le_bytes(b[48..56].try_into().unwrap()), 1); // utime seconds
        let rip = 112 + 16 * 8;
        assert_eq!(
            u64::from_le_bytes(b[rip..rip + 8].try_into().unwrap()),
            0x401122
        );
        assert_eq!(i32::from_le_bytes(b[328..332].try_into().unwrap()), 1);
    }

    #[test]
    fn layout_aligns_segments_and_lists_them_in_the_header() {
        let loads = [
            LoadRange {
                vaddr: 0x400000,
                len: 0x1000,
                flags: PF_R | PF_X,
            },
            LoadRange {
                vaddr: 0x7f00_0000_0000,
                len: 0x3000,
                flags: PF_R | PF_W,
            },
        ];
        let l = layout(&[0u8; 100], &loads);
        assert_eq!(&l.head[0..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([l.head[16], l.head[17]]), ET_CORE);
        assert_eq!(u16::from_le_bytes([l.head[56], l.head[57]]), 3); // e_phnum
        assert_eq!(l.segments[0].file_offset, PAGE);
        assert_eq!(l.segments[1].file_offset, 2 * PAGE);
        assert_eq!(l.head.len() as u64, PAGE);
        assert_eq!(l.total_len, 2 * PAGE + 0x3000);
        // Second PT_LOAD's p_offset and p_vaddr.
        let ph = 64 + 2 * 56;
        assert_eq!(
            u32::from_le_bytes(l.head[ph..ph + 4].try_into().unwrap()),
            PT_LOAD
        );
        assert_eq!(
            u64::from_le_bytes(l.head[ph + 8..ph + 16].try_into().unwrap()),
            2 * PAGE
        );
        assert_eq!(
            u64::from_le_bytes(l.head[ph + 16..ph + 24].try_into().unwrap()),
            0x7f00_0000_0000
        );
    }

    #[test]
    fn very_many_segments_use_pn_xnum() {
        let loads: Vec<LoadRange> = (0..70_000u64)
            .map(|i| LoadRange {
                vaddr: i * PAGE * 2,
                len: PAGE,
                flags: PF_R,
            })
            .collect();
        let l = layout(&[], &loads);
        assert_eq!(u16::from_le_bytes([l.head[56], l.head[57]]), PN_XNUM);
        let shoff = u64::from_le_bytes(l.head[40..48].try_into().unwrap()) as usize;
        assert_eq!(
            u32::from_le_bytes(l.head[shoff + 44..shoff + 48].try_into().unwrap()),
            70_001
        );
    }
}
