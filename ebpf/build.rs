//! Compiles the C CO-RE programs in `bpf/` with clang into `$OUT_DIR/*.bpf.o`.
//!
//! Needs clang (with the BPF target) and libbpf's headers (`bpf/bpf_helpers.h` …), from the
//! Debian packages `clang` and `libbpf-dev`; `cargo xtask setup` installs both. No bpftool: the
//! kernel types the programs read are in the committed subset header `bpf/vmlinux.h`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The programs, by the stem of `bpf/<stem>.bpf.c`.
const PROGRAMS: &[&str] = &["cairn", "selftest"];

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
