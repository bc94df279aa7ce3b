//! `kernel.json`: the kernel's own state that rootkits and attackers change: loaded modules,
//! taint, boot command line, pinned BPF objects and the security-relevant sysctls.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{artifact, is_gone, put, read_trimmed, Errors, VolatileOptions};
use crate::capture::Artifact;
use cairn_protocol::rfc3339;

#[derive(Debug, Serialize)]
struct Module {
    name: String,
    size: Option<u64>,
    refcount: Option<i64>,
    deps: Vec<String>,
    state: String,
    /// Load address; zeros when `kptr_restrict` hides it.
    address: Option<String>,
    /// Taint letters of the module (`OE`), empty when untainted.
    taint: String,
}

#[derive(Debug, Serialize)]
struct BpfObject {
    path: String,
    /// `map`, `prog`, `link`, `directory` or `unknown`.
    kind: String,
    /// `/proc/self/fdinfo` of the object opened read-only (`prog_type`, `prog_tag`, `map_type`…).
    fdinfo: Map<String, Value>,
    error: Option<String>,
}

/// Bits of `/proc/sys/kernel/tainted`, as in the kernel's `Documentation/admin-guide/tainted-kernels`.
const TAINT_FLAGS: [(&str, &str); 19] = [
    ("P", "proprietary module loaded"),
    ("F", "module force loaded"),
    ("S", "SMP with CPUs not designed for SMP / out of spec"),
    ("R", "module force unloaded"),
    ("M", "machine check exception"),
    ("B", "bad page referenced"),
    ("U", "taint requested by user space"),
    ("D", "kernel died recently (oops or BUG)"),
    ("A", "ACPI table overridden"),
    ("W", "kernel issued a warning"),
    ("C", "staging driver loaded"),
    ("I", "platform firmware bug workaround"),
    ("O", "out-of-tree module loaded"),
    ("E", "unsigned module loaded"),
    ("L", "soft lockup occurred"),
    ("K", "kernel live patched"),
    ("X", "auxiliary taint (distribution)"),
    ("T", "built with struct randomization plugin"),
    ("N", "in-kernel test module loaded"),
];

/// Sysctls that say how hardened the kernel is; `null` when the kernel does not have them.
const SYSCTLS: [&str; 19] = [
    "kernel/kptr_restrict",
    "kernel/dmesg_restrict",
    "kernel/perf_event_paranoid",
    "kernel/unprivileged_bpf_disabled",
    "kernel/yama/ptrace_scope",
    "kernel/kexec_load_disabled",
    "kernel/modules_disabled",
    "kernel/randomize_va_space",
    "kernel/core_pattern",
    "kernel/sysrq",
    "kernel/unprivileged_userns_clone",
    "fs/protected_hardlinks",
    "fs/protected_symlinks",
    "fs/protected_fifos",
    "fs/protected_regular",
    "fs/suid_dumpable",
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "user/max_user_namespaces",
];

pub(super) fn collect(opts: &VolatileOptions) -> Artifact {
    let collected_at = rfc3339::now();
    let mut errors = Errors::default();
    let mut body = Map::new();
    let proc = &opts.proc_root;

    let mut text = |key: &str, path: &Path, errors: &mut Errors| -> Option<String> {
        match read_trimmed(path) {
            Ok(s) => {
                body.insert(key.into(), Value::String(s.clone()));
                Some(s)
            }
            Err(e) => {
                errors.push(path.display().to_string(), e);
                body.insert(key.into(), Value::Null);
                None
            }
        }
    };
    text("version", &proc.join("version"), &mut errors);
    text("cmdline", &proc.join("cmdline"), &mut errors);
    let tainted = text("tainted", &proc.join("sys/kernel/tainted"), &mut errors);

    let taint_value = tainted.and_then(|t| t.parse::<u64>().ok());
    put(
        &mut body,
        &mut errors,
        "taint_flags",
        taint_value.map(decode_taint).unwrap_or_default(),
    );

    match fs::read_to_string(proc.join("modules")) {
        Ok(t) => put(&mut body, &mut errors, "modules", parse_modules(&t)),
        // A kernel built without module support has no /proc/modules.
        Err(e) if is_gone(&e) => {
            body.insert("modules".into(), Value::Array(Vec::new()));
            body.insert(
                "modules_note".into(),
                Value::String("no /proc/modules: kernel without loadable module support".into()),
            );
        }
        Err(e) => {
            errors.push(proc.join("modules").display().to_string(), e);
            body.insert("modules".into(), Value::Null);
        }
    }

    let mut sysctls = Map::new();
    for name in SYSCTLS {
        let path = proc.join("sys").join(name);
        let v = match read_trimmed(&path) {
            Ok(s) => Value::String(s),
            Err(e) => {
                if !is_gone(&e) {
                    errors.push(path.display().to_string(), e);
                }
                Value::Null
            }
        };
        sysctls.insert(name.replace('/', "."), v);
    }
    let lockdown_path = opts.sys_root.join("kernel/security/lockdown");
    let lockdown = match read_trimmed(&lockdown_path) {
        // `none [integrity] confidentiality`: the bracketed one is active.
        Ok(s) => s
            .split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
            .map(|w| Value::String(w.to_string()))
            .unwrap_or(Value::String(s)),
        Err(e) => {
            if !is_gone(&e) {
                errors.push(lockdown_path.display().to_string(), e);
            }
            Value::Null
        }
    };
    sysctls.insert("lockdown".into(), lockdown);
    body.insert("security".into(), Value::Object(sysctls));

    let bpffs = opts.sys_root.join("fs/bpf");
    let (objects, note) = bpf_pinned(&bpffs, &mut errors);
    put(&mut body, &mut errors, "bpf_pinned", objects);
    if let Some(n) = note {
        body.insert("bpf_note".into(), Value::String(n));
    }
    artifact("kernel.json", collected_at, body, errors, true)
}

fn decode_taint(v: u64) -> Vec<Value> {
    TAINT_FLAGS
        .iter()
        .enumerate()
        .filter(|(bit, _)| v & (1u64 << bit) != 0)
        .map(|(bit, (letter, what))| serde_json::json!({"bit": bit, "flag": letter, "meaning": what}))
        .collect()
}

/// `/proc/modules`: `name size refcount deps state address [(taint)]`.
fn parse_modules(text: &str) -> Vec<Module> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let deps = f
                .get(3)?
                .split(',')
                .filter(|d| !d.is_empty() && *d != "-")
                .map(str::to_string)
                .collect();
            Some(Module {
                name: f.first()?.to_string(),
                size: f.get(1).and_then(|s| s.parse().ok()),
                refcount: f.get(2).and_then(|s| s.parse().ok()),
                deps,
                state: f.get(4)?.to_string(),
                address: f.get(5).map(|s| s.to_string()),
                taint: f
                    .get(6)
                    .map(|t| t.trim_matches(|c| c == '(' || c == ')').to_string())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// `BPF_FS_MAGIC`
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Walk the BPF file system and describe each pinned object.
fn bpf_pinned(root: &Path, errors: &mut Errors) -> (Vec<BpfObject>, Option<String>) {
    match nix::sys::statfs::statfs(root) {
        Ok(s) if s.filesystem_type().0 == BPF_FS_MAGIC => {}
        Ok(_) => {
            return (
                Vec::new(),
                Some(format!(
                    "{} is not a mounted bpf file system",
                    root.display()
                )),
            )
        }
        Err(e) => return (Vec::new(), Some(format!("{}: {e}", root.display()))),
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    // Bounded: a bpffs holds few objects; a runaway tree must not stall the collection.
    while let Some(dir) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                errors.push(dir.display().to_string(), e);
                continue;
            }
        };
        for e in rd.flatten() {
            if out.len() >= 10_000 {
                errors.push(
                    root.display().to_string(),
                    "more than 10000 objects; rest skipped",
                );
                return (out, None);
            }
            let path = e.path();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                stack.push(path.clone());
                out.push(BpfObject {
                    path: path.display().to_string(),
                    kind: "directory".into(),
                    fdinfo: Map::new(),
                    error: None,
                });
                continue;
            }
            let (kind, fdinfo, error) = match bpf_fdinfo(&path) {
                Ok(info) => {
                    let kind = if info.contains_key("prog_type") {
                        "prog"
                    } else if info.contains_key("map_type") {
                        "map"
                    } else if info.contains_key("link_type") {
                        "link"
                    } else {
                        "unknown"
                    };
                    (kind.to_string(), info, None)
                }
                Err(e) => ("unknown".to_string(), Map::new(), Some(e.to_string())),
            };
            out.push(BpfObject {
                path: path.display().to_string(),
                kind,
                fdinfo,
                error,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    (out, None)
}

/// Open a pinned object read-only with `BPF_OBJ_GET` and read its fdinfo.
fn bpf_fdinfo(path: &Path) -> std::io::Result<Map<String, Value>> {
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_F_RDONLY: u32 = 1 << 3;
    // The BPF_OBJ_GET part of `union bpf_attr`: pathname, bpf_fd, file_flags.
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: [u8; 44],
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let attr = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: BPF_F_RDONLY,
        path_fd: 0,
        _pad: [0; 44],
    };
    // SAFETY: `attr` is a zero-padded, correctly laid out BPF_OBJ_GET attribute that lives
    // across the call, and `c_path` outlives it; the kernel only reads `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let raw = i32::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    let mut map = Map::new();
    for line in info.lines() {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if !matches!(k, "pos" | "flags" | "mnt_id" | "ino") {
                map.insert(k.to_string(), Value::String(v.trim().to_string()));
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn kernel_document_has_version_taint_and_sysctls() {
        let a = collect(&VolatileOptions::default());
        let doc: Value = serde_json::from_slice(&a.bytes).unwrap();
        assert_eq!(
            doc["version"].as_str(),
            Some(fs::read_to_string("/proc/version").unwrap().trim())
        );
        assert!(doc["tainted"].is_string());
        assert!(doc["security"]["kernel.randomize_va_space"].is_string());
        assert!(doc["modules"].is_array());
        assert!(doc["bpf_pinned"].is_array());
    }

    #[test]
    fn parse_modules_and_taint() {
        let m = parse_modules(
            "nf_tables 372736 12 nft_chain_nat,nft_ct, Live 0xffffffffc0a00000\n\
             evil 16384 0 - Live 0x0000000000000000 (OE)\n",
        );
        assert_eq!(m[0].deps, ["nft_chain_nat", "nft_ct"]);
        assert_eq!(m[0].refcount, Some(12));
        assert!(m[1].deps.is_empty());
        assert_eq!(m[1].taint, "OE");
        let t = decode_taint((1 << 12) | (1 << 13));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["flag"], "O");
        assert_eq!(t[1]["flag"], "E");
    }
}
