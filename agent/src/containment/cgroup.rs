//! Container isolation: the `cgroup_skb` programs of `ebpf/bpf/isolation.bpf.c`, attached to
//! the container's cgroup v2 directory.
//!
//! A cgroup program sees the packets of the sockets of that cgroup subtree whatever the CNI
//! and whatever network namespace the container uses, and nothing of the host or of other
//! containers. The links and maps are pinned under `BPFFS/cairn/isolation/<cgroup inode>/`,
//! so the isolation stays in force when the agent exits or crashes; the pins are also how the
//! agent (or an admin with `bpftool`) finds it again.

use super::{ContainError, Rule};
use aya::maps::{Array, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};
use aya::EbpfLoader;
use cairn_ebpf::isolation::{
    ALLOW_ENTRY_SIZE, ALLOW_MAP, CONFIG_MAP, DROPPED_MAP, EGRESS, INGRESS, MAX_ALLOW,
};
use cairn_protocol::containment::Proto;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the pins live, under the bpffs mount.
pub const PIN_SUBDIR: &str = "cairn/isolation";

/// One `struct allow_entry` as the programs read it.
pub type Entry = [u8; ALLOW_ENTRY_SIZE];

/// `struct isolation_config`: enforce, count.
type Config = [u32; 2];

const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;

/// The pin files: (link pin, program, attach type, kernel attach type).
const LINKS: [(&str, &str, CgroupSkbAttachType, u32); 2] = [
    (
        "egress",
        EGRESS,
        CgroupSkbAttachType::Egress,
        BPF_CGROUP_INET_EGRESS,
    ),
    (
        "ingress",
        INGRESS,
        CgroupSkbAttachType::Ingress,
        BPF_CGROUP_INET_INGRESS,
    ),
];
const MAPS: [(&str, &str); 3] = [
    ("allow", ALLOW_MAP),
    ("config", CONFIG_MAP),
    ("dropped", DROPPED_MAP),
];

/// The allow-map value of one rule: family, protocol, remote port (host byte order), then the
/// masked address and the mask, each 16 bytes in network order (IPv4 in the first 4).
pub fn encode(rule: &Rule) -> Entry {
    let mut e = [0u8; ALLOW_ENTRY_SIZE];
    let (family, bytes, width): (u8, [u8; 16], usize) = match rule.cidr.addr {
        IpAddr::V4(v) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v.octets());
            (4, b, 4)
        }
        IpAddr::V6(v) => (6, v.octets(), 16),
    };
    e[0] = family;
    e[1] = match rule.proto {
        None => 0,
        Some(Proto::Tcp) => 6,
        Some(Proto::Udp) => 17,
    };
    e[2..4].copy_from_slice(&rule.port.unwrap_or(0).to_ne_bytes());
    let prefix = usize::from(rule.cidr.prefix);
    for i in 0..width {
        let bits = prefix.saturating_sub(i * 8).min(8);
        let m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        e[20 + i] = m;
        e[4 + i] = bytes[i] & m;
    }
    e
}

/// The rules in force on `cgroup`, as text: what the outcome's hash names.
pub fn render(cgroup: &Path, rules: &[Rule]) -> String {
    let mut s = format!(
        "cgroup_skb ingress+egress on {}: drop unless loopback or allowed\n",
        cgroup.display()
    );
    for r in rules {
        s.push_str(&format!("allow {}", r.cidr));
        match (r.proto, r.port) {
            (Some(p), port) => {
                s.push_str(match p {
                    Proto::Tcp => " tcp",
                    Proto::Udp => " udp",
                });
                if let Some(port) = port {
                    s.push_str(&format!(" port {port}"));
                }
            }
            (None, _) => s.push_str(" any"),
        }
        s.push('\n');
    }
    s
}

/// `BPFFS/cairn/isolation/<inode of the cgroup directory>`.
pub fn pin_dir(bpffs: &Path, cgroup: &Path) -> Result<PathBuf, ContainError> {
    let m = std::fs::metadata(cgroup).map_err(|e| ContainError::Cgroup {
        path: cgroup.to_path_buf(),
        detail: format!("cannot read it: {e}"),
    })?;
    Ok(bpffs.join(PIN_SUBDIR).join(m.ino().to_string()))
}

/// Every pin directory present (one per isolated cgroup), bounded.
pub fn pinned_dirs(bpffs: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(bpffs.join(PIN_SUBDIR)) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .take(4096)
        .collect()
}

/// What [`isolate`] left in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforced {
    pub pin_dir: PathBuf,
    /// Egress and ingress program ids, as `bpftool cgroup tree` shows them.
    pub program_ids: [u32; 2],
    /// The programs were already attached (pins found): only the allow-list was rewritten.
    pub adopted: bool,
}

/// An error with its causes (aya's say "`bpf_link_create` failed" and keep the errno below).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut at = e.source();
    while let Some(c) = at {
        s.push_str(": ");
        s.push_str(&c.to_string());
        at = c.source();
    }
    s
}

fn bpf_err(what: impl Into<String>) -> impl FnOnce(String) -> ContainError {
    let what = what.into();
    move |detail| ContainError::Bpf { what, detail }
}

fn open_cgroup(cgroup: &Path) -> Result<File, ContainError> {
    if !cgroup.join("cgroup.procs").is_file() {
        return Err(ContainError::Cgroup {
            path: cgroup.to_path_buf(),
            detail: "not a cgroup v2 directory (no cgroup.procs)".into(),
        });
    }
    File::open(cgroup).map_err(|e| ContainError::Cgroup {
        path: cgroup.to_path_buf(),
        detail: format!("cannot open it: {e}"),
    })
}

/// Isolates `cgroup`: every packet of its sockets is dropped except loopback and `rules`.
/// Already isolated (pins present and attached): the allow-list is replaced in place.
pub fn isolate(cgroup: &Path, bpffs: &Path, rules: &[Rule]) -> Result<Enforced, ContainError> {
    if rules.len() > MAX_ALLOW as usize {
        return Err(ContainError::Refused(format!(
            "{} allow-list entries; at most {MAX_ALLOW}",
            rules.len()
        )));
    }
    super::ensure_bpffs(bpffs)?;
    let cg = open_cgroup(cgroup)?;
    let dir = pin_dir(bpffs, cgroup)?;
    let entries: Vec<Entry> = rules.iter().map(encode).collect();
    if dir.exists() {
        match attached_ids(cg.as_fd(), &dir) {
            Ok(ids) => {
                rewrite_pinned(&dir, &entries)?;
                return Ok(Enforced {
                    pin_dir: dir,
                    program_ids: ids,
                    adopted: true,
                });
            }
            Err(why) => {
                tracing::warn!(
                    "stale isolation pins in {}: {why}; replacing them",
                    dir.display()
                );
                release(&dir, Some(cgroup))?;
            }
        }
    }
    attach_new(&cg, cgroup, &dir, &entries).inspect_err(|_| {
        // Dropped links are detached already; pins would keep them attached.
        let _ = release(&dir, None);
    })
}

fn attach_new(
    cg: &File,
    cgroup: &Path,
    dir: &Path,
    entries: &[Entry],
) -> Result<Enforced, ContainError> {
    super::raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .load(cairn_ebpf::isolation_object())
        .map_err(|e| ContainError::Bpf {
            what: "loading the isolation object".into(),
            detail: chain(&e),
        })?;
    // The maps are filled before any program is attached: enforcement is right from the first
    // packet.
    {
        let map = ebpf
            .map_mut(ALLOW_MAP)
            .ok_or_else(|| bpf_err("the allow map")("missing from the object".into()))?;
        let mut allow: Array<&mut MapData, Entry> =
            Array::try_from(map).map_err(|e| bpf_err("the allow map")(chain(&e)))?;
        for (i, e) in entries.iter().enumerate() {
            allow
                .set(i as u32, e, 0)
                .map_err(|e| bpf_err("writing the allow map")(chain(&e)))?;
        }
        let map = ebpf
            .map_mut(CONFIG_MAP)
            .ok_or_else(|| bpf_err("the config map")("missing from the object".into()))?;
        let mut config: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(|e| bpf_err("the config map")(chain(&e)))?;
        config
            .set(0, [1, entries.len() as u32], 0)
            .map_err(|e| bpf_err("writing the config map")(chain(&e)))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| ContainError::Bpf {
        what: format!("creating {}", dir.display()),
        detail: e.to_string(),
    })?;
    for (file, name) in MAPS {
        let map = ebpf
            .map(name)
            .ok_or_else(|| bpf_err(format!("map {name}"))("missing from the object".into()))?;
        map.pin(dir.join(file))
            .map_err(|e| bpf_err(format!("pinning map {name}"))(chain(&e)))?;
    }
    let mut ids = [0u32; 2];
    for (i, (file, prog, attach, _)) in LINKS.iter().enumerate() {
        let p: &mut CgroupSkb = ebpf
            .program_mut(prog)
            .ok_or_else(|| bpf_err(format!("program {prog}"))("missing from the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| {
                bpf_err(format!("program {prog}"))(chain(&e))
            })?;
        p.load()
            .map_err(|e| bpf_err(format!("loading {prog}"))(chain(&e)))?;
        // A BPF link always joins the cgroup's list of programs (systemd's, a CNI's), all of
        // which must pass a packet; the kernel takes no attach flags with a link, so `Single`
        // (no flag) it is.
        let link = p
            .attach(cg, *attach, CgroupAttachMode::Single)
            .and_then(|id| p.take_link(id))
            .map_err(|e| bpf_err(format!("attaching {prog} to {}", cgroup.display()))(chain(&e)))?;
        let link = FdLink::try_from(link)
            .map_err(|e| bpf_err(format!("the link of {prog}"))(chain(&e)))?;
        ids[i] = link
            .info()
            .map_err(|e| bpf_err(format!("the link of {prog}"))(chain(&e)))?
            .program_id();
        link.pin(dir.join(file))
            .map_err(|e| bpf_err(format!("pinning the link of {prog}"))(chain(&e)))?;
    }
    // The pins hold the links (and they the programs): dropping the loader detaches nothing.
    drop(ebpf);
    let ids_now = attached_ids(cg.as_fd(), dir).map_err(bpf_err("checking the attachment"))?;
    if ids_now != ids {
        return Err(ContainError::Bpf {
            what: "checking the attachment".into(),
            detail: format!("the pinned links name programs {ids_now:?}, not {ids:?}"),
        });
    }
    Ok(Enforced {
        pin_dir: dir.to_path_buf(),
        program_ids: ids,
        adopted: false,
    })
}

/// Replaces the allow-list of a pinned isolation, closed while it changes: the count drops to
/// 0 (only loopback passes), the entries are written, then the count is set.
fn rewrite_pinned(dir: &Path, entries: &[Entry]) -> Result<(), ContainError> {
    let mut config = pinned_array::<Config>(dir, "config")?;
    let set = |c: &mut Array<MapData, Config>, v: Config| {
        c.set(0, v, 0)
            .map_err(|e| bpf_err("writing the pinned config map")(chain(&e)))
    };
    set(&mut config, [1, 0])?;
    let mut allow = pinned_array::<Entry>(dir, "allow")?;
    for (i, e) in entries.iter().enumerate() {
        allow
            .set(i as u32, e, 0)
            .map_err(|e| bpf_err("writing the pinned allow map")(chain(&e)))?;
    }
    set(&mut config, [1, entries.len() as u32])
}

fn pinned_array<V: aya::Pod>(dir: &Path, file: &str) -> Result<Array<MapData, V>, ContainError> {
    let path = dir.join(file);
    let what = format!("pinned map {}", path.display());
    let data = MapData::from_pin(&path).map_err(|e| bpf_err(what.clone())(chain(&e)))?;
    let map = aya::maps::Map::from_map_data(data).map_err(|e| bpf_err(what.clone())(chain(&e)))?;
    Array::try_from(map).map_err(|e| bpf_err(what)(chain(&e)))
}

/// The egress and ingress program ids of the pinned links, checked to be attached to the
/// cgroup now (the kernel's own list, as `bpftool cgroup show` reads it) and enforcing.
fn attached_ids(cg: BorrowedFd<'_>, dir: &Path) -> Result<[u32; 2], String> {
    let mut ids = [0u32; 2];
    for (i, (file, _, _, kind)) in LINKS.iter().enumerate() {
        let pin = dir.join(file);
        let link =
            PinnedLink::from_pin(&pin).map_err(|e| format!("{}: {}", pin.display(), chain(&e)))?;
        let id = FdLink::from(link)
            .info()
            .map_err(|e| format!("{}: {}", pin.display(), chain(&e)))?
            .program_id();
        let attached = prog_query(cg, *kind).map_err(|e| format!("querying the cgroup: {e}"))?;
        if !attached.contains(&id) {
            return Err(format!(
                "program {id} ({file}) is pinned but not attached to the cgroup"
            ));
        }
        ids[i] = id;
    }
    let config = pinned_array::<Config>(dir, "config").map_err(|e| e.to_string())?;
    match config.get(&0, 0) {
        Ok([1, _]) => Ok(ids),
        Ok(_) => Err("the programs are attached but not enforcing (enforce = 0)".into()),
        Err(e) => Err(format!("reading the config map: {e}")),
    }
}

/// Whether `cgroup` is isolated now: pins present, programs attached, enforcing.
pub fn verify(cgroup: &Path, bpffs: &Path) -> Result<(), String> {
    let dir = pin_dir(bpffs, cgroup).map_err(|e| e.to_string())?;
    if !dir.is_dir() {
        return Err(format!("no pins at {}", dir.display()));
    }
    let cg = open_cgroup(cgroup).map_err(|e| e.to_string())?;
    attached_ids(cg.as_fd(), &dir).map(|_| ())
}

/// Packets dropped so far (egress, ingress).
pub fn dropped(dir: &Path) -> Result<(u64, u64), ContainError> {
    let a = pinned_array::<u64>(dir, "dropped")?;
    let get = |i| {
        a.get(&i, 0)
            .map_err(|e| bpf_err("reading the drop counters")(chain(&e)))
    };
    Ok((get(0)?, get(1)?))
}

/// Ends the isolation pinned at `dir`: `enforce = 0` first (from then on every packet passes),
/// then each link is detached and unpinned, the maps unpinned and the directory removed; with
/// the `cgroup`, the kernel's list of its programs is checked to no longer hold them. Returns
/// false when there was nothing there.
pub fn release(dir: &Path, cgroup: Option<&Path>) -> Result<bool, ContainError> {
    if !dir.exists() {
        return Ok(false);
    }
    // The programs to look for afterwards.
    let ids: Vec<u32> = LINKS
        .iter()
        .filter_map(|(file, ..)| PinnedLink::from_pin(dir.join(file)).ok())
        .filter_map(|l| FdLink::from(l).info().ok().map(|i| i.program_id()))
        .collect();
    match pinned_array::<Config>(dir, "config") {
        Ok(mut c) => {
            let count = c.get(&0, 0).map(|v| v[1]).unwrap_or(0);
            if let Err(e) = c.set(0, [0, count], 0) {
                tracing::warn!("cannot clear enforce in {}: {e}", dir.display());
            }
        }
        Err(e) => tracing::warn!("{e}; detaching without it"),
    }
    let mut failures = Vec::new();
    for (file, ..) in LINKS {
        let pin = dir.join(file);
        if !pin.exists() {
            continue;
        }
        // An explicit detach: unpinning alone leaves the link attached while anyone (a
        // bpftool, another agent) still holds it open.
        if let Err(e) = link_detach(&pin) {
            failures.push(format!("detaching {}: {e}", pin.display()));
        }
    }
    let rd = std::fs::read_dir(dir).map_err(|e| ContainError::Bpf {
        what: format!("listing {}", dir.display()),
        detail: e.to_string(),
    })?;
    for e in rd.flatten().take(64) {
        if let Err(err) = std::fs::remove_file(e.path()) {
            failures.push(format!("unpinning {}: {err}", e.path().display()));
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        failures.push(format!("removing {}: {e}", dir.display()));
    }
    if let Some(cg) = cgroup {
        match open_cgroup(cg) {
            Ok(f) => {
                for (file, _, _, kind) in LINKS {
                    match prog_query(f.as_fd(), kind) {
                        Ok(now) if now.iter().any(|p| ids.contains(p)) => failures.push(format!(
                            "the {file} program is still attached to {}",
                            cg.display()
                        )),
                        Ok(_) => {}
                        Err(e) => failures.push(format!("querying {}: {e}", cg.display())),
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        Ok(true)
    } else {
        Err(ContainError::Bpf {
            what: format!("releasing the isolation pinned at {}", dir.display()),
            detail: failures.join("; "),
        })
    }
}

/// `union bpf_attr` for BPF_PROG_QUERY (linux/bpf.h), up to `revision`.
#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// `union bpf_attr` for BPF_LINK_DETACH.
#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The bpf(2) syscall, for the two commands aya 0.14 does not expose for cgroup programs.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<()> {
    // SAFETY: `attr` is a live, exclusively borrowed `repr(C)` prefix of `union bpf_attr` for
    // `cmd`, its size passed with it; the kernel reads and writes only within that size, and
    // keeps no reference after the call (pointers inside it point at buffers that outlive it).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Program ids attached directly to the cgroup for `attach_type`.
fn prog_query(cg: BorrowedFd<'_>, attach_type: u32) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 256];
    let mut attr = ProgQueryAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate((attr.prog_cnt as usize).min(256));
    Ok(ids)
}

/// Detaches the link pinned at `pin` from its cgroup now.
fn link_detach(pin: &Path) -> std::io::Result<()> {
    let fd = obj_get(pin)?;
    let mut attr = LinkDetachAttr {
        link_fd: fd.as_raw_fd() as u32,
    };
    match sys_bpf(BPF_LINK_DETACH, &mut attr) {
        // Already detached (its cgroup went away): nothing to do.
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => Ok(()),
        r => r,
    }
}

/// `union bpf_attr` for BPF_OBJ_GET.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

const BPF_OBJ_GET: libc::c_long = 7;

/// A new descriptor of the object pinned at `path` (aya's links do not lend theirs).
fn obj_get(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: as in `sys_bpf`; `c` outlives the call; the command returns a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut attr as *mut ObjGetAttr as *mut libc::c_void,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cairn_protocol::containment::Cidr;

    fn rule(cidr: &str, proto: Option<Proto>, port: Option<u16>) -> Rule {
        Rule {
            cidr: Cidr::parse(cidr).unwrap(),
            proto,
            port,
        }
    }

    #[test]
    fn allow_entries_are_encoded_as_the_programs_read_them() {
        let e = encode(&rule("10.213.1.77/20", Some(Proto::Tcp), Some(443)));
        assert_eq!(e[0], 4);
        assert_eq!(e[1], 6);
        assert_eq!(u16::from_ne_bytes([e[2], e[3]]), 443);
        // Masked address and mask, network order, IPv4 in the first word only.
        assert_eq!(&e[4..8], &[10, 213, 0, 0]);
        assert_eq!(&e[8..20], &[0; 12]);
        assert_eq!(&e[20..24], &[255, 255, 240, 0]);
        assert_eq!(&e[24..36], &[0; 12]);

        let e = encode(&rule("fd00:cafe:1::2/64", None, None));
        assert_eq!((e[0], e[1], e[2], e[3]), (6, 0, 0, 0));
        assert_eq!(&e[4..12], &[0xfd, 0, 0xca, 0xfe, 0, 1, 0, 0]);
        assert_eq!(&e[12..20], &[0; 8]);
        assert_eq!(&e[20..28], &[0xff; 8]);
        assert_eq!(&e[28..36], &[0; 8]);

        let e = encode(&rule("0.0.0.0/0", Some(Proto::Udp), Some(53)));
        assert_eq!((e[0], e[1]), (4, 17));
        assert_eq!(&e[4..36], &[0; 32]);

        let e = encode(&rule("2001:db8::1", None, None));
        assert_eq!(&e[20..36], &[0xff; 16]);
        assert_eq!(&e[4..8], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(e[19], 1);
    }

    #[test]
    fn the_rules_text_names_the_cgroup_and_each_entry() {
        let t = render(
            Path::new("/sys/fs/cgroup/x"),
            &[
                rule("10.0.0.0/8", None, None),
                rule("10.0.0.2", Some(Proto::Udp), Some(53)),
            ],
        );
        assert_eq!(
            t,
            "cgroup_skb ingress+egress on /sys/fs/cgroup/x: drop unless loopback or allowed\n\
             allow 10.0.0.0/8 any\nallow 10.0.0.2/32 udp port 53\n"
        );
    }
}
