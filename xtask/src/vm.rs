//! `cargo xtask vm`: a second kernel in a QEMU guest (TCG; KVM hangs on this machine kind).
//!
//! - [`prepare`] (cached under `target/vm/`): installs `qemu-system-x86`, `busybox-static` and
//!   `cpio` as root when missing, `apt-get download`s the newest
//!   `linux-image-6.1.0-*-cloud-amd64-unsigned` and unpacks it into `target/vm/kroot`.
//! - [`build_initramfs`]: static busybox with its applet links, an `/init` that mounts proc,
//!   sysfs, devtmpfs, tracefs and bpffs, loads modules, runs the guest script between markers on
//!   the serial console and powers off; host binaries with their shared libraries; extra files.
//! - [`run_guest`]: boots it with `-nic none` (the guest has no network) and returns the
//!   console, the script's output and exit code, and how long the boot took.
//!
//! `cargo xtask vm smoke` checks the kernel (release, BTF, /proc/kcore, iomem);
//! `cargo xtask vm sensor` ([`vm_sensor_check`]) runs the eBPF sensor test in the guest.
//!
//! Long file: the guest's kernel, initramfs, boot, console protocol and the sensor check's
//! script are one pipeline around one guest, each step reading the one before; the memory
//! checks are in vm_memory.rs, the containment tests' run in vm_containment.rs.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::Value;

use cairn_harness::{describe_cmd, have_command};

use crate::procs::{cargo, run_inherit, section, target_dir};

/// Debian packages the guest runner needs: (command that tells it is there, package).
const HOST_TOOLS: &[(&str, &str)] = &[("qemu-system-x86_64", "qemu-system-x86"), ("cpio", "cpio")];
/// busybox-static installs /bin/busybox; the dynamic `busybox` package would not do.
const BUSYBOX: &str = "/bin/busybox";

/// The Debian kernel package family, as an `apt-cache search --names-only` pattern.
const KERNEL_PATTERN: &str = r"^linux-image-6\.1\.0-.*-cloud-amd64-unsigned$";

/// What a virtio disk needs on Debian's cloud kernel, in `insmod` order.
pub const VIRTIO_BLK_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
];

const BEGIN: &str = "===== CAIRN-VM-SCRIPT-BEGIN =====";
const END_PREFIX: &str = "===== CAIRN-VM-SCRIPT-END rc=";

#[derive(Subcommand)]
pub enum VmCmd {
    /// Install QEMU/busybox/cpio (as root) and fetch + unpack the 6.1 cloud kernel (cached).
    Prepare,
    /// Boot the guest: kernel release, BTF, /proc/kcore and /proc/iomem System RAM.
    Smoke,
    /// The eBPF sensor test (exec argv, ppid, exit) inside the 6.1 guest.
    Sensor,
    /// Physical memory to LiME in the 6.1 guest, checked against iomem, Volatility 3 and
    /// QEMU's dump-guest-memory.
    Memory,
    /// The agent's containment tests (nftables host isolation in network namespaces, a
    /// cgroup cut by cgroup_skb, freeze, thaw, kill) as root inside the 6.1 guest.
    Containment,
    /// Run a shell script in the guest and print its output (for ad-hoc checks).
    Run {
        /// The script (sh), run as root in the guest.
        script: String,
        /// Host binaries to copy into the guest (with their shared libraries), at /bin/NAME.
        #[arg(long = "bin")]
        binaries: Vec<PathBuf>,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 512)]
        memory_mib: u32,
        /// Seconds before QEMU is killed.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Extra files, `HOST_PATH:GUEST_PATH`.
        #[arg(long = "file")]
        files: Vec<String>,
        /// A raw disk image for the guest (/dev/vda; the virtio modules are loaded).
        #[arg(long)]
        disk: Option<PathBuf>,
        /// A unix socket path for QMP (e.g. for `dump-guest-memory`).
        #[arg(long)]
        qmp: Option<PathBuf>,
        /// Print the whole serial console, not only the script's output.
        #[arg(long)]
        console: bool,
    },
}

pub fn run(cmd: VmCmd) -> Result<()> {
    match cmd {
        VmCmd::Prepare => {
            let k = prepare()?;
            println!("kernel {} at {}", k.release, k.vmlinuz.display());
            Ok(())
        }
        VmCmd::Smoke => smoke(),
        VmCmd::Sensor => vm_sensor_check(),
        VmCmd::Memory => crate::vm_memory::vm_memory_check(),
        VmCmd::Containment => crate::vm_containment::vm_containment_check(),
        VmCmd::Run {
            script,
            binaries,
            memory_mib,
            timeout_secs,
            files,
            disk,
            qmp,
            console,
        } => {
            let files = files
                .iter()
                .map(|f| {
                    f.split_once(':')
                        .map(|(h, g)| (PathBuf::from(h), PathBuf::from(g)))
                        .ok_or_else(|| anyhow!("--file wants HOST_PATH:GUEST_PATH, got {f:?}"))
                })
                .collect::<Result<Vec<_>>>()?;
            let r = run_guest(&GuestSpec {
                script,
                binaries,
                memory_mib,
                timeout: Duration::from_secs(timeout_secs),
                disk,
                files,
                qmp,
                ..GuestSpec::default()
            })?;
            if console {
                print!("{}", r.console);
            } else {
                print!("{}", r.script_output);
            }
            println!(
                "(exit code {}, boot {:.1} s, total {:.1} s)",
                r.exit_code, r.boot_seconds, r.total_seconds
            );
            if r.exit_code != 0 {
                bail!("the guest script exited with {}", r.exit_code);
            }
            Ok(())
        }
    }
}

/// The unpacked guest kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `target/vm/kroot`: the package's files (`boot/`, `lib/modules/RELEASE/`).
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
    /// e.g. `6.1.0-57-cloud-amd64` (the `lib/modules` directory name).
    pub release: String,
}

/// What to run in the guest.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    /// A shell script (busybox sh), run as root in `/` with PATH set; stdout and stderr both go
    /// to the console, between markers.
    pub script: String,
    /// Host executables, copied to `/bin/NAME` with every library `ldd` lists.
    pub binaries: Vec<PathBuf>,
    /// Extra files: (host path, absolute guest path).
    pub files: Vec<(PathBuf, PathBuf)>,
    /// Kernel modules to `insmod` (names without `.ko`), in order. With `disk`, the virtio
    /// block chain ([`VIRTIO_BLK_MODULES`]) is loaded first without being listed here.
    pub modules: Vec<String>,
    pub memory_mib: u32,
    /// Virtual CPUs (multi-threaded TCG: each one a host thread).
    pub cpus: u32,
    /// A raw image attached as a virtio disk: `/dev/vda` in the guest.
    pub disk: Option<PathBuf>,
    /// A unix socket path for QMP (`-qmp unix:PATH,server=on,wait=off`).
    pub qmp: Option<PathBuf>,
    /// When the console prints this line, QEMU's `dump-guest-memory` (through `qmp`) writes
    /// the guest's physical memory to the path, an ELF of physical ranges: the oracle memory
    /// captures are compared with. The guest is paused meanwhile; its script should give the
    /// host a few seconds after printing the line.
    pub dump_at: Option<(String, PathBuf)>,
    /// QEMU is killed after this long (an error carrying the console tail).
    pub timeout: Duration,
}

impl Default for GuestSpec {
    fn default() -> Self {
        GuestSpec {
            script: String::new(),
            binaries: Vec::new(),
            files: Vec::new(),
            modules: Vec::new(),
            memory_mib: 512,
            cpus: 1,
            disk: None,
            qmp: None,
            dump_at: None,
            timeout: Duration::from_secs(300),
        }
    }
}

/// What came back from the guest.
#[derive(Clone, Debug)]
pub struct GuestResult {
    /// Everything the serial console printed (CR removed).
    pub console: String,
    /// The script's output, between the markers.
    pub script_output: String,
    pub exit_code: i32,
    /// From QEMU's start to the script's first line (host wall clock).
    pub boot_seconds: f64,
    /// Building the initramfs.
    pub initramfs_seconds: f64,
    /// From QEMU's start to its exit.
    pub total_seconds: f64,
}

fn vm_dir() -> PathBuf {
    target_dir().join("vm")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn apt(args: &[&str], dir: Option<&Path>) -> Result<()> {
    let mut c = Command::new("apt-get");
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(d) = dir {
        c.current_dir(d);
    }
    run_inherit(c)
}

/// Installs the host tools and fetches the kernel, skipping what is already there. Returns the
/// kernel to boot.
pub fn prepare() -> Result<Kernel> {
    let dir = vm_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut updated = false;

    let mut pkgs: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|(c, _)| !have_command(c))
        .map(|(_, p)| *p)
        .collect();
    if !Path::new(BUSYBOX).is_file() {
        pkgs.push("busybox-static");
    }
    if !pkgs.is_empty() {
        if !is_root() || !have_command("apt-get") {
            bail!(
                "missing Debian packages {}: run `cargo xtask vm prepare` as root on Debian",
                pkgs.join(" ")
            );
        }
        section(&format!("installing {}", pkgs.join(" ")));
        apt(&["update", "-q"], None)?;
        updated = true;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&pkgs);
        apt(&args, None)?;
    }

    let kroot = dir.join("kroot");
    if let Ok(k) = kernel_in(&kroot) {
        return Ok(k);
    }
    let started = Instant::now();
    let deb = match find_file(&dir, |n| {
        n.starts_with("linux-image-6.1.0-") && n.ends_with(".deb")
    })? {
        Some(deb) => deb,
        None => {
            if !have_command("apt-get") {
                bail!("no apt-get: cannot download the guest kernel");
            }
            // Old package lists may name a kernel the mirror no longer has: update them once.
            if !updated && is_root() {
                apt(&["update", "-q"], None)?;
            }
            let name = newest_kernel_package()?.ok_or_else(|| {
                anyhow!("no package matches {KERNEL_PATTERN} after apt-get update")
            })?;
            section(&format!("apt-get download {name}"));
            // Downloading into target/ as root: apt's _apt sandbox user could not write there.
            apt(
                &["download", "-q", "-o", "APT::Sandbox::User=root", &name],
                Some(&dir),
            )?;
            find_file(&dir, |n| n.starts_with(&name) && n.ends_with(".deb"))?.ok_or_else(|| {
                anyhow!("apt-get download {name} left no .deb in {}", dir.display())
            })?
        }
    };
    section(&format!("unpacking {}", deb.display()));
    let tmp = dir.join("kroot.partial");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(&deb).arg(&tmp);
    run_inherit(x)?;
    if kroot.exists() {
        fs::remove_dir_all(&kroot)?;
    }
    fs::rename(&tmp, &kroot)?;
    let k = kernel_in(&kroot)?;
    println!(
        "kernel {} ready in {:.1} s (download + unpack)",
        k.release,
        started.elapsed().as_secs_f64()
    );
    Ok(k)
}

/// The highest `linux-image-6.1.0-N-cloud-amd64-unsigned` in the package lists (by N).
fn newest_kernel_package() -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", KERNEL_PATTERN])
        .output()
        .context("cannot run apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-cloud-amd64-unsigned")?;
            Some((abi.parse::<u32>().ok()?, name.to_string()))
        })
        .max()
        .map(|(_, n)| n))
}

fn find_file(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| pred(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    Ok(found.pop())
}

fn kernel_in(kroot: &Path) -> Result<Kernel> {
    let vmlinuz = find_file(&kroot.join("boot"), |n| n.starts_with("vmlinuz-"))?
        .ok_or_else(|| anyhow!("no vmlinuz-* in {}/boot", kroot.display()))?;
    let release = find_file(&kroot.join("lib/modules"), |_| true)?
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| anyhow!("no lib/modules/* in {}", kroot.display()))?;
    Ok(Kernel {
        root: kroot.to_path_buf(),
        vmlinuz,
        release,
    })
}

/// Finds `NAME.ko` (or compressed) under the kernel's `lib/modules/*/kernel/`.
fn find_module(k: &Kernel, name: &str) -> Result<PathBuf> {
    let base = k.root.join("lib/modules").join(&k.release).join("kernel");
    let mut stack = vec![base.clone()];
    let dashed = name.replace('_', "-");
    let wanted: Vec<String> = [name, dashed.as_str()]
        .iter()
        .flat_map(|n| {
            [
                format!("{n}.ko"),
                format!("{n}.ko.xz"),
                format!("{n}.ko.zst"),
            ]
        })
        .collect();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else if wanted.iter().any(|w| e.file_name().to_string_lossy() == *w) {
                return Ok(p);
            }
        }
    }
    bail!("kernel module {name} not found under {}", base.display())
}

/// Copies a module into the initramfs as `/lib/modules/NAME.ko`, decompressing if needed.
fn install_module(src: &Path, dst: &Path) -> Result<()> {
    let s = src.to_string_lossy();
    let tool = if s.ends_with(".xz") {
        Some("xz")
    } else if s.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        None => {
            fs::copy(src, dst).with_context(|| format!("cannot copy {s}"))?;
        }
        Some(t) => {
            let out = Command::new(t)
                .args(["-d", "-c"])
                .arg(src)
                .output()
                .with_context(|| format!("cannot run {t} to decompress {s}"))?;
            if !out.status.success() {
                bail!(
                    "{t} -d {s} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            fs::write(dst, out.stdout)?;
        }
    }
    Ok(())
}

/// Installs module `name` and, first, the modules its `depends=` names (recursively), into
/// `dir`; `order` receives them in an order `insmod` accepts.
fn add_module(k: &Kernel, name: &str, dir: &Path, order: &mut Vec<String>) -> Result<()> {
    if order.iter().any(|m| m == name) {
        return Ok(());
    }
    let dst = dir.join(format!("{name}.ko"));
    install_module(&find_module(k, name)?, &dst)?;
    let bytes = fs::read(&dst)?;
    for dep in module_depends(&bytes) {
        if order.len() > 64 {
            bail!("kernel module dependencies of {name} do not end");
        }
        add_module(k, &dep, dir, order)?;
    }
    if !order.iter().any(|m| m == name) {
        order.push(name.to_string());
    }
    Ok(())
}

/// The `depends=a,b` entry of a module's `.modinfo` (NUL-terminated strings).
fn module_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|b| *b == 0)
        .filter_map(|s| s.strip_prefix(b"depends="))
        .flat_map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Creates `path` in the initramfs tree `root` (an absolute guest path) with its parents.
fn guest_path(root: &Path, guest: &Path) -> Result<PathBuf> {
    let rel = guest.strip_prefix("/").unwrap_or(guest);
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    Ok(p)
}

/// Copies an executable, without its debug sections when `strip` is there (a debug agent is
/// ~80 MB; the kernel unpacks the initramfs slowly under TCG).
fn copy_binary(src: &Path, dst: &Path) -> Result<()> {
    if have_command("strip") {
        let st = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(dst)
            .arg(src)
            .status();
        if st.is_ok_and(|s| s.success()) {
            return Ok(());
        }
    }
    fs::copy(src, dst).with_context(|| format!("cannot copy {}", src.display()))?;
    Ok(())
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `bin`: absolute paths as the
/// loader will look for them. A static binary has none.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("ldd {}: {line}", bin.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)".
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn init_script(modules: &[String], disk: bool) -> String {
    let mut s = String::from(
        r#"#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing || echo "cairn-vm: cannot mount tracefs"
mount -t bpf bpf /sys/fs/bpf || echo "cairn-vm: cannot mount bpffs"
"#,
    );
    for m in modules {
        s.push_str(&format!(
            "insmod /lib/modules/{m}.ko || echo \"cairn-vm: insmod {m} failed\"\n"
        ));
    }
    if disk {
        // The disk's device node appears asynchronously after virtio_blk binds.
        s.push_str(
            "i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
             [ -b /dev/vda ] || echo \"cairn-vm: no /dev/vda\"\n",
        );
    }
    s.push_str(&format!(
        r#"cd /
echo "{BEGIN}"
sh /cairn/script.sh 2>&1
rc=$?
echo "{END_PREFIX}$rc ====="
sync
poweroff -f
"#
    ));
    s
}

/// Builds the initramfs for `spec` in `work` (a fresh directory); returns the `.cpio.gz` path.
pub fn build_initramfs(k: &Kernel, spec: &GuestSpec, work: &Path) -> Result<PathBuf> {
    let root = work.join("root");
    fs::create_dir_all(&root)?;
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "mnt",
        "etc",
        "cairn",
        "lib/modules",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    // busybox and every applet, at the paths its own list gives (bin/sh, usr/bin/env, …).
    fs::copy(BUSYBOX, root.join("bin/busybox"))
        .with_context(|| format!("cannot copy {BUSYBOX} (package busybox-static)"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .context("cannot run busybox --list-full")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let dst = guest_path(&root, Path::new(applet))?;
        if dst.exists() {
            continue;
        }
        let depth = Path::new(applet).components().count().saturating_sub(1);
        let target = format!("{}bin/busybox", "../".repeat(depth));
        symlink(&target, &dst)?;
    }
    for needed in [
        "bin/sh",
        "usr/bin/env",
        "bin/true",
        "sbin/poweroff",
        "sbin/insmod",
    ] {
        if fs::symlink_metadata(root.join(needed)).is_err() {
            bail!("busybox has no applet for /{needed}");
        }
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;

    // Host binaries and their libraries. A host binary replaces busybox's applet of the same
    // name (`ip`, `ping`) everywhere on PATH: the applet's link would otherwise come first
    // (`/sbin/ip`), and copying onto a link (without `strip`) would write into busybox.
    let mut libs = BTreeSet::new();
    for b in &spec.binaries {
        let name = b
            .file_name()
            .ok_or_else(|| anyhow!("binary path {} has no file name", b.display()))?;
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin"] {
            let applet = root.join(dir).join(name);
            if fs::symlink_metadata(&applet).is_ok_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&applet)
                    .with_context(|| format!("cannot remove {}", applet.display()))?;
            }
        }
        copy_binary(b, &root.join("bin").join(name))?;
        libs.extend(shared_libraries(b)?);
    }
    for lib in libs {
        let real =
            fs::canonicalize(&lib).with_context(|| format!("cannot resolve {}", lib.display()))?;
        let dst = guest_path(&root, &lib)?;
        fs::copy(&real, &dst).with_context(|| format!("cannot copy {}", real.display()))?;
    }
    for (host, guest) in &spec.files {
        let dst = guest_path(&root, guest)?;
        fs::copy(host, &dst).with_context(|| format!("cannot copy {}", host.display()))?;
    }

    // Modules.
    let mut modules: Vec<String> = Vec::new();
    if spec.disk.is_some() {
        modules.extend(VIRTIO_BLK_MODULES.iter().map(|m| m.to_string()));
    }
    for m in &spec.modules {
        if !modules.contains(m) {
            modules.push(m.clone());
        }
    }
    let mut order = Vec::new();
    for m in &modules {
        add_module(k, m, &root.join("lib/modules"), &mut order)?;
    }

    write_exec(
        &root.join("init"),
        &init_script(&order, spec.disk.is_some()),
    )?;
    write_exec(&root.join("cairn/script.sh"), &spec.script)?;

    let out = work.join("initramfs.cpio.gz");
    let pack = format!(
        "cd '{}' && find . | cpio --quiet -o -H newc -R 0:0 | gzip -1 > '{}'",
        root.display(),
        out.display()
    );
    let st = Command::new("sh")
        .args(["-c", &pack])
        .status()
        .context("cannot run sh")?;
    if !st.success() {
        bail!("packing the initramfs failed: {pack}");
    }
    Ok(out)
}

/// Builds the initramfs and boots the guest; returns what the script printed.
pub fn run_guest(spec: &GuestSpec) -> Result<GuestResult> {
    let k = prepare()?;
    let dir = vm_dir();
    let work = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&dir)
        .context("cannot create a work directory under target/vm")?;
    let t0 = Instant::now();
    let initrd = build_initramfs(&k, spec, work.path())?;
    let initramfs_seconds = t0.elapsed().as_secs_f64();

    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m"])
        .arg(spec.memory_mib.to_string())
        .arg("-smp")
        .arg(spec.cpus.max(1).to_string())
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"]);
    if let Some(disk) = &spec.disk {
        cmd.arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()));
    }
    if let Some(qmp) = &spec.qmp {
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = describe_cmd(&cmd);
    println!("$ {line}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;

    // stdout: the serial console, read as it comes so the boot time is measured.
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut console: Vec<u8> = Vec::new();
    let mut boot_at: Option<Instant> = None;
    let deadline = started + spec.timeout;
    let mut dumped = spec.dump_at.is_none();
    let status = loop {
        while let Ok((at, b)) = rx.recv_timeout(Duration::from_millis(50)) {
            collect(&mut console, &mut boot_at, at, b);
            if let (false, Some((line, out)), Some(sock)) = (dumped, &spec.dump_at, &spec.qmp) {
                if memmem(&console, format!("\n{line}").as_bytes()) {
                    dumped = true;
                    let t = Instant::now();
                    qmp_dump(sock, out)?;
                    println!(
                        "dump-guest-memory → {} in {:.1} s",
                        out.display(),
                        t.elapsed().as_secs_f64()
                    );
                }
            }
            if Instant::now() > deadline {
                break;
            }
        }
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            while let Ok((at, b)) = rx.try_recv() {
                collect(&mut console, &mut boot_at, at, b);
            }
            let text = clean(&console);
            bail!(
                "the guest did not finish within {:?} (QEMU killed); console tail:\n{}",
                spec.timeout,
                tail(&text, 40)
            );
        }
    };
    let _ = reader.join();
    while let Ok((at, b)) = rx.try_recv() {
        collect(&mut console, &mut boot_at, at, b);
    }
    let total_seconds = started.elapsed().as_secs_f64();
    let qemu_err = err_reader.join().unwrap_or_default();
    let console = clean(&console);

    let (script_output, exit_code) = match split_markers(&console) {
        Some(v) => v,
        None => bail!(
            "the guest script did not complete (QEMU {status}); QEMU stderr: {}\nconsole tail:\n{}",
            qemu_err.trim(),
            tail(&console, 40)
        ),
    };
    Ok(GuestResult {
        console,
        script_output,
        exit_code,
        boot_seconds: boot_at
            .map(|t| t.duration_since(started).as_secs_f64())
            .unwrap_or(total_seconds),
        initramfs_seconds,
        total_seconds,
    })
}

/// QEMU's own image of the guest's physical memory (`dump-guest-memory`, no paging).
fn qmp_dump(sock: &Path, out: &Path) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(sock)
        .with_context(|| format!("cannot connect to QMP at {}", sock.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?; // greeting
    let mut call = |cmd: String| -> Result<()> {
        writeln!(w, "{cmd}")?;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("QMP closed the connection after {cmd}");
            }
            let v: Value =
                serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))?;
            if v.get("return").is_some() {
                return Ok(());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {cmd}: {e}");
            }
            // Events (DUMP_COMPLETED, STOP, RESUME) are skipped.
        }
    };
    call(r#"{"execute":"qmp_capabilities"}"#.to_string())?;
    call(format!(
        r#"{{"execute":"dump-guest-memory","arguments":{{"paging":false,"protocol":"file:{}"}}}}"#,
        out.display()
    ))
}

/// Appends console bytes; notes when the script's begin marker first appears.
fn collect(console: &mut Vec<u8>, boot_at: &mut Option<Instant>, at: Instant, b: Vec<u8>) {
    console.extend_from_slice(&b);
    if boot_at.is_none() && memmem(console, BEGIN.as_bytes()) {
        *boot_at = Some(at);
    }
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn clean(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\r', "")
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines between the markers and the exit code on the end marker.
fn split_markers(console: &str) -> Option<(String, i32)> {
    let start = console.find(BEGIN)? + BEGIN.len();
    let rest = console[start..]
        .strip_prefix('\n')
        .unwrap_or(&console[start..]);
    let end = rest.find(END_PREFIX)?;
    let code = rest[end + END_PREFIX.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((rest[..end].to_string(), code))
}

fn smoke() -> Result<()> {
    section("vm smoke: Debian 6.1 cloud kernel under QEMU (TCG)");
    let r = run_guest(&GuestSpec {
        script: r#"uname -r
if [ -e /sys/kernel/btf/vmlinux ]; then echo "btf: yes"; else echo "btf: no"; fi
if [ -e /proc/kcore ]; then echo "kcore: yes"; else echo "kcore: no"; fi
grep "System RAM" /proc/iomem
"#
        .to_string(),
        timeout: Duration::from_secs(180),
        ..GuestSpec::default()
    })?;
    print!("{}", r.script_output);
    let out = &r.script_output;
    let release = out.lines().next().unwrap_or_default().trim();
    let mut problems = Vec::new();
    if !release.starts_with("6.1") {
        problems.push(format!(
            "kernel release {release:?} does not start with 6.1"
        ));
    }
    if !out.lines().any(|l| l == "btf: yes") {
        problems.push("no /sys/kernel/btf/vmlinux".to_string());
    }
    if !out.lines().any(|l| l == "kcore: yes") {
        problems.push("no /proc/kcore".to_string());
    }
    if !out.contains("System RAM") {
        problems.push("no System RAM in /proc/iomem".to_string());
    }
    if r.exit_code != 0 {
        problems.push(format!("guest script exited with {}", r.exit_code));
    }
    println!(
        "initramfs {:.1} s, boot to script {:.1} s, QEMU total {:.1} s",
        r.initramfs_seconds, r.boot_seconds, r.total_seconds
    );
    if !problems.is_empty() {
        println!("console tail:\n{}", tail(&r.console, 30));
        bail!("vm smoke FAILED: {}", problems.join("; "));
    }
    println!("vm smoke PASS (kernel {release})");
    Ok(())
}

/// A random-enough marker for one run (no uuid crate in xtask).
fn marker() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The eBPF sensor test on Debian's 6.1 cloud kernel: `cairn-agent events --follow --json` in
/// the guest must report the exec of `/bin/true a "b c"` (exact argv, parent = the script's
/// shell, after the `/bin/sh -c` and `/usr/bin/env` execs of the same pid) and its exit.
pub fn vm_sensor_check() -> Result<()> {
    section("cargo build --workspace --bins");
    let mut build = cargo();
    // The same selection as `cargo xtask test`: reuses what it built (per-package builds
    // unify features differently and would rebuild dependencies).
    build.args(["build", "--workspace", "--bins"]);
    run_inherit(build)?;
    let agent = target_dir().join("debug/cairn-agent");
    if !agent.is_file() {
        bail!("{} was not built", agent.display());
    }
    let mark = marker();
    // A 64-hex container id for the cgroup check, from the marker.
    let cid: String = mark.replace('-', "").repeat(2).chars().take(64).collect();
    let script = format!(
        r#"echo "script_pid=$$"
ip link set lo up
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
# Older than the agent: its exit must still carry its lineage (seeded from /proc).
sleep 1000 &
OLD=$!
echo "old_pid=$OLD"
cairn-agent events --follow --json --mode ebpf >/tmp/ev.jsonl 2>/tmp/ev.err &
AGENT=$!
i=0
while [ $i -lt 240 ]; do
  grep -q '^sensor:' /tmp/ev.err 2>/dev/null && break
  kill -0 $AGENT 2>/dev/null || break
  sleep 0.5
  i=$((i+1))
done
echo "agent_ready_after_polls=$i"
/bin/sh -c 'exec /usr/bin/env CAIRN_MARK={mark} /bin/true a "b c"'
echo "trigger_rc=$?"
kill $OLD
# TCP on loopback: busybox nc listens, another nc connects.
nc -l -p 9100 >/dev/null &
LPID=$!
echo "listener_pid=$LPID"
sleep 1
echo hi | nc -w 2 127.0.0.1 9100 &
CPID=$!
echo "client_pid=$CPID"
wait $CPID
wait $LPID
# A process moved into a Docker-like cgroup.
mkdir -p /sys/fs/cgroup/docker/{cid}
/bin/sh -c 'echo $$ > /sys/fs/cgroup/docker/{cid}/cgroup.procs; exec /bin/true in-a-container'
sleep 5
kill $AGENT 2>/dev/null
wait $AGENT
echo "agent_rc=$?"
# A tiny ring buffer under an exec storm must report its drops.
cairn-agent events --follow --json --mode ebpf --ring-buffer-bytes 4096 >/tmp/drop.jsonl 2>/tmp/drop.err &
TINY=$!
i=0
while [ $i -lt 240 ]; do
  grep -q '^sensor:' /tmp/drop.err 2>/dev/null && break
  sleep 0.5
  i=$((i+1))
done
storm() {{ i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done; }}
# Under TCG the consumer keeps up with any storm a shell makes: stop it while the kernel
# fills the ring buffer, as a busy host would, then let it read and count.
kill -STOP $TINY
storm &
S1=$!
storm &
S2=$!
wait $S1
wait $S2
kill -CONT $TINY
sleep 3
kill $TINY 2>/dev/null
wait $TINY
echo "----- ev.jsonl"
cat /tmp/ev.jsonl
echo "----- ev.err"
cat /tmp/ev.err
echo "----- drop.jsonl"
grep events_lost /tmp/drop.jsonl
echo "----- drop.err"
cat /tmp/drop.err
echo "----- end"
"#
    );
    let r = run_guest(&GuestSpec {
        script,
        binaries: vec![agent],
        timeout: Duration::from_secs(420),
        ..GuestSpec::default()
    })?;
    println!(
        "initramfs {:.1} s, boot to script {:.1} s, QEMU total {:.1} s",
        r.initramfs_seconds, r.boot_seconds, r.total_seconds
    );
    let report = check_sensor_output(&r.script_output, &mark).and_then(|mut ok| {
        ok.extend(check_tcp_cgroup_drops(&r.script_output, &cid)?);
        Ok(ok)
    });
    let section_of = |name: &str| -> String {
        let start = format!("----- {name}\n");
        r.script_output
            .split_once(&start)
            .map(|(_, rest)| {
                rest.split("\n----- ")
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    };
    match report {
        Ok(lines) => {
            for l in lines {
                println!("  ok: {l}");
            }
            println!("vm sensor PASS on the 6.1 cloud kernel");
            Ok(())
        }
        Err(e) => {
            println!(
                "agent stderr in the guest:\n{}",
                section_of("ev.err").trim_end()
            );
            println!(
                "script output (head):\n{}",
                r.script_output
                    .lines()
                    .take(15)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            println!("vm sensor FAIL: {e:#}");
            Err(e.context("vm sensor check failed on the 6.1 cloud kernel"))
        }
    }
}

fn field_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn field_i64(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_i64()
}

fn args_of(v: &Value) -> Vec<String> {
    v.get("process")
        .and_then(|p| p.get("args"))
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the guest's output; returns what was verified.
fn check_sensor_output(out: &str, mark: &str) -> Result<Vec<String>> {
    let script_pid: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("script_pid="))
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow!("the guest script did not print its pid"))?;
    let jsonl = out
        .split_once("----- ev.jsonl\n")
        .map(|(_, r)| r.split("----- ev.err").next().unwrap_or_default())
        .ok_or_else(|| anyhow!("no event output from the guest"))?;
    let mut events = Vec::new();
    let mut bad = 0usize;
    for l in jsonl.lines().filter(|l| l.starts_with('{')) {
        match serde_json::from_str::<Value>(l) {
            Ok(v) => events.push(v),
            Err(_) => bad += 1,
        }
    }
    let mut ok = vec![format!(
        "{} events parsed ({} unparsable lines)",
        events.len(),
        bad
    )];
    if events.is_empty() {
        bail!("the agent printed no events");
    }
    let execs: Vec<&Value> = events
        .iter()
        .filter(|e| field_str(e, &["kind"]) == Some("process_exec"))
        .collect();
    let want = ["/bin/true", "a", "b c"];
    let t = execs.iter().find(|e| args_of(e) == want).ok_or_else(|| {
        anyhow!(
            "no process_exec with args {want:?} among {} exec events",
            execs.len()
        )
    })?;
    let pid = field_i64(t, &["process", "pid"]).ok_or_else(|| anyhow!("exec without pid"))?;
    let ppid = field_i64(t, &["process", "ppid"]).ok_or_else(|| anyhow!("exec without ppid"))?;
    ok.push(format!(
        "process_exec /bin/true a \"b c\" pid {pid} ppid {ppid} source {}",
        field_str(t, &["source"]).unwrap_or("?")
    ));
    if field_str(t, &["source"]) != Some("ebpf") {
        bail!("the exec event's source is not ebpf: {t}");
    }
    if ppid != script_pid {
        bail!("the exec's ppid is {ppid}, expected the guest script's shell {script_pid}");
    }
    let env_mark = format!("CAIRN_MARK={mark}");
    let env = execs
        .iter()
        .find(|e| {
            field_i64(e, &["process", "pid"]) == Some(pid) && {
                let a = args_of(e);
                a.first().map(String::as_str) == Some("/usr/bin/env") && a.contains(&env_mark)
            }
        })
        .ok_or_else(|| anyhow!("no /usr/bin/env {env_mark} exec with pid {pid}"))?;
    if field_i64(env, &["process", "ppid"]) != Some(script_pid) {
        bail!("the env exec's ppid is not the script's shell {script_pid}: {env}");
    }
    ok.push(format!(
        "process_exec /usr/bin/env {env_mark} … same pid {pid}, same ppid"
    ));
    let sh = execs.iter().any(|e| {
        field_i64(e, &["process", "pid"]) == Some(pid) && {
            let a = args_of(e);
            a.len() == 3 && a[0] == "/bin/sh" && a[1] == "-c" && a[2].contains(&env_mark)
        }
    });
    if !sh {
        bail!("no /bin/sh -c exec with pid {pid}");
    }
    ok.push(format!("process_exec /bin/sh -c … same pid {pid}"));
    let exit = events
        .iter()
        .find(|e| {
            field_str(e, &["kind"]) == Some("process_exit")
                && field_i64(e, &["process", "pid"]) == Some(pid)
        })
        .ok_or_else(|| anyhow!("no process_exit for pid {pid}"))?;
    let code = field_i64(exit, &["exit", "code"]);
    if code != Some(0) {
        bail!("process_exit for pid {pid} has exit code {code:?}, expected 0: {exit}");
    }
    ok.push(format!("process_exit pid {pid} code 0"));
    Ok(ok)
}

fn output_section<'a>(out: &'a str, name: &str) -> &'a str {
    out.split_once(&format!("----- {name}\n"))
        .map(|(_, rest)| rest.split("\n----- ").next().unwrap_or_default())
        .unwrap_or_default()
}

fn script_value(out: &str, key: &str) -> Result<i64> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("the guest script did not print {key}"))
}

/// The rest of the host's sensor tests, on the guest kernel: TCP connect/accept/close with
/// their processes, a container id from a Docker-like cgroup, and counted drops from a tiny
/// ring buffer.
fn check_tcp_cgroup_drops(out: &str, cid: &str) -> Result<Vec<String>> {
    let events: Vec<Value> = output_section(out, "ev.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let listener = script_value(out, "listener_pid")?;
    let client = script_value(out, "client_pid")?;
    let tcp = |kind: &str, pid: i64, port_field: &str| {
        events.iter().find(|e| {
            field_str(e, &["kind"]) == Some(kind)
                && field_i64(e, &["process", "pid"]) == Some(pid)
                && field_i64(e, &["socket", port_field]) == Some(9100)
        })
    };
    let mut ok = Vec::new();
    let old = script_value(out, "old_pid")?;
    let script_pid = script_value(out, "script_pid")?;
    let exit = events
        .iter()
        .find(|e| {
            field_str(e, &["kind"]) == Some("process_exit")
                && field_i64(e, &["process", "pid"]) == Some(old)
        })
        .ok_or_else(|| anyhow!("no process_exit for the process older than the agent ({old})"))?;
    if field_i64(exit, &["process", "ppid"]) != Some(script_pid)
        || args_of(exit) != ["sleep", "1000"]
    {
        bail!("the older process's exit lacks its lineage (ppid {script_pid}, sleep 1000): {exit}");
    }
    ok.push(format!(
        "process older than the agent: exit of pid {old} with ppid and argv"
    ));
    let c = tcp("tcp_connect", client, "dport")
        .ok_or_else(|| anyhow!("no tcp_connect to port 9100 by the client nc (pid {client})"))?;
    if field_str(c, &["socket", "daddr"]) != Some("127.0.0.1") {
        bail!("tcp_connect has the wrong destination: {c}");
    }
    ok.push(format!("tcp_connect 127.0.0.1:9100 by pid {client}"));
    tcp("tcp_accept", listener, "sport")
        .ok_or_else(|| anyhow!("no tcp_accept on port 9100 by the listener (pid {listener})"))?;
    ok.push(format!("tcp_accept on :9100 by pid {listener}"));
    tcp("tcp_close", client, "dport")
        .ok_or_else(|| anyhow!("no tcp_close attributed to the client (pid {client})"))?;
    tcp("tcp_close", listener, "sport")
        .ok_or_else(|| anyhow!("no tcp_close attributed to the listener (pid {listener})"))?;
    ok.push("tcp_close for both ends, attributed to their processes".into());
    let exec = events
        .iter()
        .find(|e| {
            field_str(e, &["kind"]) == Some("process_exec")
                && args_of(e) == ["/bin/true", "in-a-container"]
        })
        .ok_or_else(|| anyhow!("no exec of /bin/true in-a-container"))?;
    if field_str(exec, &["process", "container_id"]) != Some(cid) {
        bail!("the exec in the Docker-like cgroup lacks container id {cid}: {exec}");
    }
    ok.push("container id from a Docker-like cgroup".into());
    let lost: u64 = output_section(out, "drop.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| field_str(e, &["kind"]) == Some("events_lost"))
        .filter_map(|e| e.get("lost")?.get("count")?.as_u64())
        .sum();
    if lost == 0 {
        bail!(
            "a 4096-byte ring buffer under an exec storm reported no events_lost; stderr:\n{}",
            output_section(out, "drop.err")
        );
    }
    ok.push(format!("tiny ring buffer: {lost} events reported lost"));
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_exit_code() {
        let c = format!("boot\n{BEGIN}\nhello\nworld\n{END_PREFIX}3 =====\nreboot");
        let (out, rc) = split_markers(&c).unwrap();
        assert_eq!(out, "hello\nworld\n");
        assert_eq!(rc, 3);
        assert!(split_markers("no markers").is_none());
    }

    #[test]
    fn sensor_output_is_checked() {
        let mark = "m1";
        let out = format!(
            "script_pid=40\n----- ev.jsonl\n\
{{\"kind\":\"process_exec\",\"source\":\"ebpf\",\"process\":{{\"pid\":41,\"ppid\":40,\"args\":[\"/bin/sh\",\"-c\",\"exec /usr/bin/env CAIRN_MARK={mark} /bin/true a \\\"b c\\\"\"]}}}}\n\
{{\"kind\":\"process_exec\",\"source\":\"ebpf\",\"process\":{{\"pid\":41,\"ppid\":40,\"args\":[\"/usr/bin/env\",\"CAIRN_MARK={mark}\",\"/bin/true\",\"a\",\"b c\"]}}}}\n\
{{\"kind\":\"process_exec\",\"source\":\"ebpf\",\"process\":{{\"pid\":41,\"ppid\":40,\"args\":[\"/bin/true\",\"a\",\"b c\"]}}}}\n\
{{\"kind\":\"process_exit\",\"source\":\"ebpf\",\"process\":{{\"pid\":41,\"ppid\":40}},\"exit\":{{\"code\":0}}}}\n\
----- ev.err\nsensor: eBPF\n----- end\n"
        );
        let ok = check_sensor_output(&out, mark).unwrap();
        assert_eq!(ok.len(), 5);
        assert!(check_sensor_output(&out.replace("\"code\":0", "\"code\":1"), mark).is_err());
        assert!(check_sensor_output(&out.replace("\"ppid\":40", "\"ppid\":1"), mark).is_err());
    }
}
