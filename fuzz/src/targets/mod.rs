//! One target per decoder of outside bytes. A target is a plain function of the input's bytes
//! (so a saved crash replays the same way), returns the shape of its outcome (see
//! [`crate::engine::shape`]) and panics only when an oracle fails: a round trip that is not
//! the identity, two decoders of one format that disagree, a verification that accepts what
//! it must refuse. Panics inside the decoders are what the fuzzer is looking for.

use std::path::PathBuf;
use std::time::Duration;

pub mod containment;
pub mod fleet;
pub mod memimage;
pub mod offline;
pub mod protocol;
pub mod timeline;
pub mod triggers;

pub use crate::engine::Target;

pub const MIB: usize = 1024 * 1024;

/// The defaults of a text or JSON parser.
pub const fn text(
    name: &'static str,
    about: &'static str,
    dict: &'static [&'static [u8]],
    run: fn(&[u8]) -> u64,
) -> Target {
    Target {
        name,
        about,
        max_len: 64 * 1024,
        timeout: Duration::from_secs(5),
        alloc_floor: 8 * MIB,
        alloc_per_byte: 512,
        dict,
        run,
    }
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub fn all() -> Vec<Target> {
    let mut v = Vec::new();
    v.extend(protocol::targets());
    v.extend(containment::targets());
    v.extend(offline::targets());
    v.extend(timeline::targets());
    v.extend(triggers::targets());
    v.extend(fleet::targets());
    v.extend(memimage::targets());
    v
}

pub fn find(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `fuzz/corpus/TARGET`: the seeds, small realistic inputs.
pub fn corpus_dir(name: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(name)
}

/// `fuzz/regressions/TARGET`: every crashing input found, replayed by the tests.
pub fn regressions_dir(name: &str) -> PathBuf {
    fuzz_dir().join("regressions").join(name)
}

/// Seeds of a run: the corpus, then the regressions (old crashes are good starting points).
pub fn seeds(name: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = crate::engine::read_dir_files(&corpus_dir(name))?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    out.extend(
        crate::engine::read_dir_files(&regressions_dir(name))?
            .into_iter()
            .map(|(_, d)| d),
    );
    Ok(out)
}

/// An outcome's shape from its text.
pub(crate) fn shape_of<T, E: std::fmt::Display>(
    r: &Result<T, E>,
    ok: impl FnOnce(&T) -> String,
) -> u64 {
    match r {
        Ok(v) => crate::engine::shape(&format!("ok {}", ok(v))),
        Err(e) => crate::engine::shape(&format!("err {e}")),
    }
}

/// Combine shapes of several steps.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    a.rotate_left(17) ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
