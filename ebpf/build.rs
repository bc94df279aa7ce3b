//! Compiles the C CO-RE programs in `bpf/` with clang into `$OUT_DIR/*.bpf.o`, and generates
//! `$OUT_DIR/layout.rs` (the record layouts of `bpf/events.h`, for the agent's decoder) by
//! compiling and running the host program `layout.c`; the same layouts are then checked
//! against the BPF target with `_Static_assert`s, so the C header is their one source.
//!
//! Needs clang (with the BPF target) and libbpf's headers (`bpf/bpf_helpers.h` …), from the
//! Debian packages `clang` and `libbpf-dev`; `cargo xtask setup` installs both. No bpftool: the
//! kernel types the programs read are in the committed subset header `bpf/vmlinux.h`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The programs, by the stem of `bpf/<stem>.bpf.c`.
const PROGRAMS: &[&str] = &["cairn", "selftest", "isolation"];

const HOWTO: &str = "install them with `cargo xtask setup` (as root), or \
                     `apt-get install clang libbpf-dev`; set CLANG to use another clang";

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot build cairn's eBPF programs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let src = manifest.join("bpf");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=CAIRN_BPF_INCLUDE");
    println!("cargo:rerun-if-changed={}", src.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("layout.c").display()
    );

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let version = Command::new(&clang).arg("--version").output();
    match version {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "`{clang} --version` failed ({}): {}; {HOWTO}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return Err(format!("clang not found (`{clang}`: {e}); {HOWTO}")),
    }

    let include = env::var("CAIRN_BPF_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    let helpers = Path::new(&include).join("bpf/bpf_helpers.h");
    if !helpers.is_file() {
        return Err(format!(
            "libbpf's headers are missing ({} not found); {HOWTO}",
            helpers.display()
        ));
    }

    for stem in PROGRAMS {
        let c = src.join(format!("{stem}.bpf.c"));
        let obj = out.join(format!("{stem}.bpf.o"));
        // Only the libbpf headers: the host's /usr/include would pull in glibc and asm headers.
        let bpf_inc = out.join("bpf-include");
        link_headers(
            Path::new(&include).join("bpf").as_path(),
            &bpf_inc.join("bpf"),
        )?;
        let output = Command::new(&clang)
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
                "-Wall",
            ])
            .arg("-nostdinc")
            .arg("-I")
            .arg(&src)
            .arg("-I")
            .arg(&bpf_inc)
            .arg("-c")
            .arg(&c)
            .arg("-o")
            .arg(&obj)
            .output()
            .map_err(|e| format!("cannot run {clang}: {e}"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "`{clang} -target bpf -c {}` failed ({}):\n{stderr}",
                c.display(),
                output.status
            ));
        }
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            println!("cargo:warning={line}");
        }
    }
    layout(&clang, &manifest, &out)
}

/// One line of `layout.c`'s output.
enum Item {
    Field {
        record: String,
        path: String,
        ty: String,
        offset: usize,
        size: usize,
    },
    Size {
        record: String,
        size: usize,
    },
    Const {
        group: String,
        name: String,
        value: i64,
    },
}

fn parse_layout(text: &str) -> Result<Vec<Item>, String> {
    let num = |s: &str, line: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("layout.c printed {line:?}: {s:?} is not a number"))
    };
    let mut items = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        items.push(match f.as_slice() {
            ["field", record, path, ty, offset, size] => Item::Field {
                record: record.to_string(),
                path: path.to_string(),
                ty: ty.to_string(),
                offset: num(offset, line)? as usize,
                size: num(size, line)? as usize,
            },
            ["size", record, size] => Item::Size {
                record: record.to_string(),
                size: num(size, line)? as usize,
            },
            ["const", group, name, value] => Item::Const {
                group: group.to_string(),
                name: name.to_string(),
                value: num(value, line)?,
            },
            _ => {
                return Err(format!(
                    "layout.c printed a line build.rs does not know: {line:?}"
                ))
            }
        });
    }
    Ok(items)
}

/// Compiles and runs `layout.c` on the host, writes `layout.rs` from what it prints, and
/// checks the same offsets and sizes against the BPF target.
fn layout(clang: &str, manifest: &Path, out: &Path) -> Result<(), String> {
    let exe = out.join("layout-dump");
    let source = manifest.join("layout.c");
    let compiled = Command::new(clang)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(manifest)
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .output()
        .map_err(|e| format!("cannot run {clang}: {e}"))?;
    if !compiled.status.success() {
        return Err(format!(
            "`{clang} {}` (a host program printing the record layouts) failed ({}):\n{}",
            source.display(),
            compiled.status,
            String::from_utf8_lossy(&compiled.stderr)
        ));
    }
    let run = Command::new(&exe)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !run.status.success() {
        return Err(format!("{} failed ({})", exe.display(), run.status));
    }
    let items = parse_layout(&String::from_utf8_lossy(&run.stdout))?;

    let mut rs = String::from(
        "// @generated by ebpf/build.rs from bpf/events.h (through layout.c): do not edit.\n",
    );
    let mut check = String::from(
        "/* Generated by ebpf/build.rs: the host layouts the agent decodes by, on the BPF target. */\n\
         #include \"vmlinux.h\"\n#include \"events.h\"\n",
    );
    let mut module: Option<String> = None;
    for item in &items {
        let (m, line) = match item {
            Item::Size { record, size } => {
                check.push_str(&format!(
                    "_Static_assert(sizeof(struct {record}) == {size}, \"{record} size\");\n"
                ));
                (
                    record.clone(),
                    format!("    pub const SIZE: usize = {size};\n"),
                )
            }
            Item::Field {
                record,
                path,
                ty,
                offset,
                size,
            } => {
                check.push_str(&format!(
                    "_Static_assert(__builtin_offsetof(struct {record}, {path}) == {offset} && \
                     sizeof(((struct {record} *)0)->{path}) == {size}, \"{record}.{path}\");\n"
                ));
                let name = path.replace('.', "_").to_ascii_uppercase();
                if path == "hdr" {
                    if *offset != 0 {
                        return Err(format!(
                            "struct {record} must start with its hdr (events.h)"
                        ));
                    }
                    continue;
                }
                let value = match ty.as_str() {
                    "array" => format!("Array {{ offset: {offset}, len: {size} }}"),
                    "u8" => format!("U8({offset})"),
                    "u16" => format!("U16({offset})"),
                    "u32" => format!("U32({offset})"),
                    "u64" => format!("U64({offset})"),
                    "i32" => format!("I32({offset})"),
                    "i64" => format!("I64({offset})"),
                    other => return Err(format!("layout.c printed an unknown type {other:?}")),
                };
                let rust_ty = value
                    .split([' ', '('])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                (
                    record.clone(),
                    format!("    pub const {name}: {rust_ty} = {value};\n"),
                )
            }
            Item::Const { group, name, value } => {
                if group == "abi" {
                    if module.take().is_some() {
                        rs.push_str("}\n");
                    }
                    rs.push_str(&format!(
                        "/// `{name}` of events.h.\npub const ABI: u32 = {value};\n"
                    ));
                    continue;
                }
                (
                    group.clone(),
                    format!("    pub const {name}: u32 = {value};\n"),
                )
            }
        };
        if module.as_deref() != Some(m.as_str()) {
            if module.is_some() {
                rs.push_str("}\n");
            }
            rs.push_str(&format!(
                "/// `{m}` of bpf/events.h.\npub mod {m} {{\n    #[allow(unused_imports)]\n    use super::*;\n"
            ));
            module = Some(m);
        }
        rs.push_str(&line);
    }
    if module.is_some() {
        rs.push_str("}\n");
    }
    std::fs::write(out.join("layout.rs"), rs)
        .map_err(|e| format!("cannot write layout.rs: {e}"))?;

    let check_c = out.join("layout_check.c");
    std::fs::write(&check_c, check).map_err(|e| format!("cannot write layout_check.c: {e}"))?;
    let checked = Command::new(clang)
        .args(["-target", "bpf", "-fsyntax-only", "-nostdinc", "-I"])
        .arg(manifest.join("bpf"))
        .arg(&check_c)
        .output()
        .map_err(|e| format!("cannot run {clang}: {e}"))?;
    if !checked.status.success() {
        return Err(format!(
            "the BPF target lays out events.h differently from the host, which the agent \
             decodes by:\n{}",
            String::from_utf8_lossy(&checked.stderr)
        ));
    }
    Ok(())
}

/// Copies `dir/*.h` into `to` (a private include directory holding only libbpf's headers).
fn link_headers(dir: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "h") {
            if let Some(name) = p.file_name() {
                std::fs::copy(&p, to.join(name))
                    .map_err(|e| format!("cannot copy {}: {e}", p.display()))?;
            }
        }
    }
    Ok(())
}
