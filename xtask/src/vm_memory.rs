//! Physical memory on a real cloud kernel: the agent captures `/proc/kcore` to LiME inside a
//! QEMU guest running Debian's 6.1 cloud kernel, onto a disk the host reads back.
//!
//! The host then checks the image against three independent references: the guest's own
//! `/proc/iomem` (the LiME ranges must be its System RAM, byte for byte), Volatility 3 (its
//! `banners.Banners` plugin must find the guest's kernel banner), and QEMU's
//! `dump-guest-memory` of the same boot (the kernel's code pages must be identical).
//! `cargo xtask bench memory` reuses the same guest run with AVML beside cairn.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use cairn_harness::run;

use crate::procs::{cargo, run_inherit, section, target_dir};
use crate::vm::{run_guest, GuestSpec};

const DUMP_LINE: &str = "CAIRN-DUMP-NOW";
const PAGE: u64 = 4096;

/// What one guest boot produced, on the host.
pub struct GuestCapture {
    /// Kept alive for the files below.
    pub _work: tempfile::TempDir,
    pub lime: PathBuf,
    pub qemu_dump: PathBuf,
    pub iomem: String,
    pub manifest: Value,
    /// Guest wall time of `cairn-agent capture memory --physical` (from /proc/uptime).
    pub cairn_seconds: f64,
    /// Bytes the offline collection takes on the guest's disk (hashed, compressed, framed).
    pub cairn_stored_bytes: u64,
    /// AVML's image and its guest wall time, when AVML ran.
    pub avml: Option<(PathBuf, f64)>,
}

/// Inclusive physical ranges.
pub type Ranges = Vec<(u64, u64)>;

/// Every "System RAM" entry of iomem at any depth, merged (the rule the agent follows, kept
/// independent here so a shared bug cannot hide).
pub fn iomem_ram(iomem: &str) -> Ranges {
    let mut v: Ranges = iomem
        .lines()
        .filter_map(|l| {
            let (range, name) = l.trim_start().split_once(" : ")?;
            if !name.starts_with("System RAM") {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    v.sort();
    let mut out: Ranges = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// A named iomem entry ("Kernel code").
fn iomem_entry(iomem: &str, name: &str) -> Option<(u64, u64)> {
    iomem.lines().find_map(|l| {
        let (range, n) = l.trim_start().split_once(" : ")?;
        if n.trim() != name {
            return None;
        }
        let (a, b) = range.split_once('-')?;
        Some((
            u64::from_str_radix(a, 16).ok()?,
            u64::from_str_radix(b, 16).ok()?,
        ))
    })
}

/// LiME v1 headers: (start, end inclusive, file offset of the data).
pub fn lime_ranges(path: &Path) -> Result<Vec<(u64, u64, u64)>> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata()?.len();
    cairn_harness::memimage::lime_ranges(&mut f, len).with_context(|| path.display().to_string())
}

/// PT_LOAD segments of an ELF64 core: (paddr, file offset, size in file).
fn elf_loads(path: &Path) -> Result<Vec<(u64, u64, u64)>> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    cairn_harness::memimage::elf_loads(&mut f).with_context(|| path.display().to_string())
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path)?;
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset)
        .with_context(|| format!("{}: cannot read {len} bytes at {offset}", path.display()))?;
    Ok(b)
}

/// Boots the guest, captures its RAM with cairn (and AVML if given), dumps it with QEMU.
pub fn capture_in_guest(
    agent: &Path,
    memory_mib: u32,
    avml: Option<&Path>,
) -> Result<GuestCapture> {
    let agent = agent.to_path_buf();
    let vm = target_dir().join("vm");
    fs::create_dir_all(&vm)?;
    let work = tempfile::Builder::new().prefix("memory-").tempdir_in(&vm)?;
    let disk = work.path().join("disk.img");
    // Room for an uncompressed AVML image next to cairn's compressed collection.
    let disk_mib = u64::from(memory_mib) * 2 + 256;
    fs::File::create(&disk)?.set_len(disk_mib << 20)?;
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F"]).arg(&disk);
    run(mkfs, Duration::from_secs(60))?.ok()?;

    let agent_host = agent.clone();
    let mut binaries = vec![agent];
    let avml_part = match avml {
        Some(p) => {
            binaries.push(p.to_path_buf());
            r#"
u0=$(cut -d' ' -f1 /proc/uptime)
avml acquire /mnt/avml.lime > /mnt/avml.out 2>&1
echo "avml_rc=$?"
u1=$(cut -d' ' -f1 /proc/uptime)
echo "avml_seconds $u0 $u1"
"#
        }
        None => "",
    };
    let script = format!(
        r#"mkdir -p /mnt && mount /dev/vda /mnt || {{ echo "cannot mount /dev/vda"; exit 1; }}
cat /proc/iomem > /mnt/iomem.txt
u0=$(cut -d' ' -f1 /proc/uptime)
cairn-agent --state-dir /tmp/cairn capture memory --physical --out /mnt/cap > /mnt/cairn.out 2>&1
echo "cairn_rc=$?"
u1=$(cut -d' ' -f1 /proc/uptime)
echo "cairn_seconds $u0 $u1"
{avml_part}
sync
echo {DUMP_LINE}
sleep 20
cat /mnt/cairn.out
umount /mnt
"#
    );
    let qemu_dump = work.path().join("qemu-dump.elf");
    let r = run_guest(&GuestSpec {
        script,
        binaries,
        memory_mib,
        // Two vCPUs, as small cloud instances have: cairn's pipeline uses them, AVML cannot.
        cpus: 2,
        disk: Some(disk.clone()),
        qmp: Some(work.path().join("qmp.sock")),
        dump_at: Some((DUMP_LINE.to_string(), qemu_dump.clone())),
        timeout: Duration::from_secs(900),
        ..GuestSpec::default()
    })?;
    print!("{}", r.script_output);
    println!(
        "boot to script {:.1} s, QEMU total {:.1} s",
        r.boot_seconds, r.total_seconds
    );
    if !r.script_output.contains("cairn_rc=0") {
        bail!("the agent failed in the guest:\n{}", r.script_output);
    }
    if !qemu_dump.is_file() {
        bail!("QEMU's dump-guest-memory did not run");
    }
    let secs = |name: &str| -> Option<f64> {
        let l = r
            .script_output
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))?;
        let v: Vec<f64> = l
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        Some(v.get(1)? - v.first()?)
    };
    let cairn_seconds = secs("cairn_seconds").ok_or_else(|| anyhow!("no cairn timing"))?;

    // Read the disk back on the host.
    let mnt = work.path().join("mnt");
    fs::create_dir_all(&mnt)?;
    let mut mount = Command::new("mount");
    mount.args(["-o", "loop,ro"]).arg(&disk).arg(&mnt);
    run(mount, Duration::from_secs(60))?.ok()?;
    let result = (|| -> Result<_> {
        let iomem = fs::read_to_string(mnt.join("iomem.txt"))?;
        let lime = work.path().join("cairn.lime");
        let mut unpack = Command::new(&agent_host);
        unpack
            .args(["unpack"])
            .arg(mnt.join("cap"))
            .args(["--item", "physical-memory.lime", "--to"])
            .arg(&lime);
        let out = run(unpack, Duration::from_secs(300))?.ok()?;
        print!("{}", out.stdout);
        let mut manifest = Value::Null;
        let mut stored = 0u64;
        for e in fs::read_dir(mnt.join("cap/items"))? {
            let p = e?.path();
            stored += p.metadata()?.len();
            if p.to_string_lossy().ends_with(".manifest.json") {
                let m: Value = serde_json::from_slice(&fs::read(&p)?)?;
                if m.pointer("/source/name").and_then(Value::as_str) == Some("physical-memory.lime")
                {
                    manifest = m;
                }
            }
        }
        let avml_img = if avml.is_some() {
            let p = work.path().join("avml.lime");
            fs::copy(mnt.join("avml.lime"), &p).context("AVML wrote no image")?;
            Some((
                p,
                secs("avml_seconds").ok_or_else(|| anyhow!("no AVML timing"))?,
            ))
        } else {
            None
        };
        Ok((iomem, lime, manifest, stored, avml_img))
    })();
    let mut umount = Command::new("umount");
    umount.arg(&mnt);
    let _ = run(umount, Duration::from_secs(60));
    let (iomem, lime, manifest, cairn_stored_bytes, avml) = result?;
    Ok(GuestCapture {
        _work: work,
        lime,
        qemu_dump,
        iomem,
        manifest,
        cairn_seconds,
        cairn_stored_bytes,
        avml,
    })
}

/// Bytes of `ram` an image covers with data (its ranges intersected with RAM).
pub fn coverage(ram: &Ranges, image: &[(u64, u64, u64)]) -> u64 {
    let mut total = 0;
    for &(a, b) in ram {
        for &(s, e, _) in image {
            let (lo, hi) = (a.max(s), b.min(e));
            if lo <= hi {
                total += hi - lo + 1;
            }
        }
    }
    total
}

/// Pages of iomem's "Kernel code" that are identical in the LiME image and QEMU's dump.
pub fn compare_kernel_code(g: &GuestCapture, lime: &[(u64, u64, u64)]) -> Result<(u64, u64)> {
    let (start, end) = iomem_entry(&g.iomem, "Kernel code")
        .ok_or_else(|| anyhow!("the guest's iomem has no \"Kernel code\" entry"))?;
    let loads = elf_loads(&g.qemu_dump)?;
    let (mut same, mut total) = (0u64, 0u64);
    let mut page = start;
    while page + PAGE - 1 <= end {
        let in_lime = lime
            .iter()
            .find(|(s, e, _)| *s <= page && page + PAGE - 1 <= *e)
            .map(|(s, _, off)| off + (page - s));
        let in_qemu = loads
            .iter()
            .find(|(p, _, len)| *p <= page && page + PAGE <= p + len)
            .map(|(p, off, _)| off + (page - p));
        let (Some(a), Some(b)) = (in_lime, in_qemu) else {
            bail!("kernel code page {page:#x} is missing from an image");
        };
        total += 1;
        if read_at(&g.lime, a, PAGE as usize)? == read_at(&g.qemu_dump, b, PAGE as usize)? {
            same += 1;
        }
        page += PAGE;
    }
    Ok((same, total))
}

pub fn banners(image: &Path) -> Result<String> {
    // The virtualenv `cargo xtask setup` made, else whatever `vol` is on PATH.
    let venv = crate::setup::pytools_dir().join("bin/vol");
    let mut vol = Command::new(if venv.is_file() {
        venv
    } else {
        PathBuf::from("vol")
    });
    vol.args(["-q", "-f"]).arg(image).arg("banners.Banners");
    let out = run(vol, Duration::from_secs(600)).context(
        "cannot run Volatility 3 (`vol`): `cargo xtask setup` installs it in target/pytools",
    )?;
    Ok(out.stdout)
}

/// The CI check: cairn's LiME image of the guest is right by all three references.
pub fn vm_memory_check() -> Result<()> {
    section("vm memory: physical memory of Debian's 6.1 cloud kernel (QEMU, TCG) to LiME");
    section("cargo build --workspace --bins");
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    run_inherit(build)?;
    let g = capture_in_guest(&target_dir().join("debug/cairn-agent"), 256, None)?;
    let mut problems = Vec::new();
    let ram = iomem_ram(&g.iomem);
    let lime = lime_ranges(&g.lime)?;
    let lime_plain: Ranges = lime.iter().map(|&(s, e, _)| (s, e)).collect();
    if lime_plain != ram {
        problems.push(format!(
            "LiME ranges {lime_plain:x?} differ from the guest's iomem System RAM {ram:x?}"
        ));
    } else {
        println!(
            "  ok: LiME ranges = iomem System RAM ({} ranges)",
            ram.len()
        );
    }
    let ram_bytes: u64 = ram.iter().map(|(a, b)| b - a + 1).sum();
    let gaps = g.manifest["gaps"].as_array().cloned().unwrap_or_default();
    let gap_bytes: u64 = gaps.iter().filter_map(|x| x["length"].as_u64()).sum();
    println!(
        "  coverage: {} of {} RAM bytes in the image; {} bytes ({} gap(s)) recorded as unreadable",
        coverage(&ram, &lime),
        ram_bytes,
        gap_bytes,
        gaps.len()
    );
    for gap in &gaps {
        println!("    gap: {}", gap["reason"].as_str().unwrap_or("?"));
    }
    if gap_bytes > 64 * 1024 {
        problems.push(format!(
            "{gap_bytes} bytes of RAM were unreadable: {gaps:?}"
        ));
    }
    let ranges = g
        .manifest
        .pointer("/source/details/ranges")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ranges.len() != ram.len() || ranges.iter().any(|r| r["sha256"].as_str().is_none()) {
        problems.push(format!(
            "the manifest lacks a SHA-256 per range: {ranges:?}"
        ));
    }
    match banners(&g.lime) {
        Ok(out) if out.contains("Linux version 6.1") => {
            println!("  ok: Volatility 3 banners.Banners finds \"Linux version 6.1\"")
        }
        Ok(out) => problems.push(format!("Volatility found no 6.1 banner:\n{out}")),
        Err(e) => problems.push(format!("{e:#}")),
    }
    match compare_kernel_code(&g, &lime) {
        Ok((same, total)) if same == total && total > 0 => {
            println!("  ok: all {total} kernel code pages equal QEMU's dump-guest-memory")
        }
        Ok((same, total)) => problems.push(format!(
            "{} of {total} kernel code pages differ from QEMU's dump",
            total - same
        )),
        Err(e) => problems.push(format!("{e:#}")),
    }
    if !problems.is_empty() {
        bail!("vm memory FAILED:\n  {}", problems.join("\n  "));
    }
    println!(
        "vm memory PASS ({} MiB captured in {:.1} s in the guest)",
        ram_bytes >> 20,
        g.cairn_seconds
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iomem_nested_ram_and_coverage() {
        let t = "00001000-0009fbff : System RAM\n00100000-0fffffff : System RAM\n  01000000-01ffffff : Kernel code\n";
        let r = iomem_ram(t);
        assert_eq!(r, vec![(0x1000, 0x9fbff), (0x100000, 0xfffffff)]);
        assert_eq!(iomem_entry(t, "Kernel code"), Some((0x1000000, 0x1ffffff)));
        // An image missing the partial last page of the first range.
        let img = vec![(0x1000, 0x9efff, 0), (0x100000, 0xfffffff, 0)];
        assert_eq!(
            coverage(&r, &img),
            (0x9f000 - 0x1000) + (0x10000000 - 0x100000)
        );
    }
}
