//! The fuzzer: a seed corpus, stacked mutations (bit flips, interesting integers, inserts,
//! deletes, duplications, splices, dictionary tokens, decimal numbers), each input run
//! in-process under `catch_unwind` with its allocations counted.
//!
//! There is no coverage instrumentation on stable Rust without a second build of every
//! dependency; instead each target reports the *shape* of its outcome (which error, which
//! message kind — numbers and quoted text left out), and an input with a shape not seen before
//! joins the corpus. That steers the mutations past the first error towards the next one.

use crate::alloc;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A decoder under test.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    /// Largest input the mutator makes.
    pub max_len: usize,
    /// How long one input may run before it counts as a hang.
    pub timeout: Duration,
    /// Bytes any input may make the decoder hold (a frame buffer, a decompressed chunk)…
    pub alloc_floor: usize,
    /// …plus this many per input byte.
    pub alloc_per_byte: usize,
    /// Tokens of the format, inserted and overwritten by the mutator.
    pub dict: &'static [&'static [u8]],
    pub run: fn(&[u8]) -> u64,
}

/// What one input did wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A panic (overflow, index out of bounds, a failed oracle): the message and where.
    Panic(String),
    /// More memory than the input justifies.
    Alloc {
        peak: usize,
        largest: usize,
        limit: usize,
    },
}

impl Finding {
    /// Groups findings so one bug found a thousand times is saved once per run.
    pub fn key(&self) -> String {
        match self {
            Finding::Panic(m) => shape_text(m.lines().next().unwrap_or("")),
            Finding::Alloc { .. } => "alloc".into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Panic(m) => write!(f, "panic: {m}"),
            Finding::Alloc {
                peak,
                largest,
                limit,
            } => write!(
                f,
                "allocation: peak {peak} bytes (largest request {largest}), limit {limit} for this input"
            ),
        }
    }
}

/// Bytes an input may make a decoder hold: a fixed floor (a frame buffer, a decompressed chunk)
/// plus a bounded amplification of its own size.
pub fn alloc_limit(target: &Target, input_len: usize) -> usize {
    target
        .alloc_floor
        .saturating_add(input_len.saturating_mul(target.alloc_per_byte))
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Replace the panic hook by one that keeps the message for [`run_one`] instead of printing a
/// backtrace per crashing input. Idempotent.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let text = match info.location() {
                Some(l) => format!(
                    "{} at {}:{}",
                    payload_text(info.payload()),
                    l.file(),
                    l.line()
                ),
                None => payload_text(info.payload()),
            };
            if let Ok(mut slot) = PANIC_MESSAGE.lock() {
                *slot = Some(text);
            }
        }));
    });
}

fn payload_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

/// Run one input: its outcome's shape, or what went wrong.
pub fn run_one(target: &Target, input: &[u8]) -> Result<u64, Finding> {
    let mark = alloc::start();
    let r = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let usage = mark.usage();
    match r {
        Ok(shape) => {
            let limit = alloc_limit(target, input.len());
            if usage.peak > limit {
                return Err(Finding::Alloc {
                    peak: usage.peak,
                    largest: usage.largest,
                    limit,
                });
            }
            Ok(shape)
        }
        Err(payload) => {
            let text = PANIC_MESSAGE
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_else(|| payload_text(payload.as_ref()));
            Err(Finding::Panic(text))
        }
    }
}

/// Text with its numbers, hashes and quoted parts left out: `unknown variant \`x\` at line 1
/// column 9` and `… \`y\` at line 3 column 2` are one shape, and so are two chunk errors that
/// differ only in their SHA-256s. Quoted input may itself hold quotes, so everything from the
/// first quote to the last goes.
pub fn shape_text(text: &str) -> String {
    let is_quote = |c: char| c == '`' || c == '"';
    let unquoted = match (text.find(is_quote), text.rfind(is_quote)) {
        (Some(a), Some(b)) => format!("{} {}", &text[..a], &text[b + 1..]),
        _ => text.to_string(),
    };
    let words: Vec<&str> = unquoted
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty() && w.len() <= 24 && !w.chars().any(|c| c.is_ascii_digit()))
        .take(24)
        .collect();
    words.join(" ")
}

/// The shape of any outcome a target computed: its text form, normalised and hashed.
pub fn shape(text: &str) -> u64 {
    let d = Sha256::digest(shape_text(text).as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// xorshift64*: fast, deterministic from its seed, good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn word(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.word() % n.max(1) as u64) as usize
    }
}

const INTERESTING_U64: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    48, // chunk header length − 1
    49,
    50,
    4 * 1024 * 1024, // CHUNK_SIZE
    4 * 1024 * 1024 + 1,
    16 * 1024 * 1024,
    16 * 1024 * 1024 + 1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
    u64::MAX - 1,
];

const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "-0",
    "255",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "1e309",
    "0.000000001",
    "1.5",
    "NaN",
];

/// Mutate `data` in place by one to eight stacked mutations.
pub fn mutate(
    rng: &mut Rng,
    data: &mut Vec<u8>,
    corpus: &[Vec<u8>],
    dict: &[&[u8]],
    max_len: usize,
) {
    let n = 1 + rng.below(8);
    for _ in 0..n {
        mutate_once(rng, data, corpus, dict);
    }
    data.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[&[u8]]) {
    let len = data.len();
    match rng.below(13) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.word() as u8;
        }
        2 if len > 0 => {
            let i = rng.below(len);
            let b = b"\x00\xff\x7f\x80 \n\r\t\"{}[]:,=|.0-\\";
            data[i] = b[rng.below(b.len())];
        }
        3 if len > 0 => {
            let i = rng.below(len);
            data[i] = data[i].wrapping_add((rng.below(35) as u8).wrapping_sub(17));
        }
        4 => {
            let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
            let width = [1usize, 2, 4, 8][rng.below(4)];
            let bytes = if rng.below(2) == 0 {
                v.to_le_bytes()
            } else {
                let be = v.to_be_bytes();
                let mut b = [0u8; 8];
                b[..width].copy_from_slice(&be[8 - width..]);
                b
            };
            let at = rng.below(len + 1);
            overwrite(data, at, &bytes[..width]);
        }
        5 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        6 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.word() as u8).collect();
            data.splice(at..at, bytes);
        }
        7 if len > 0 => {
            // Repeat a slice: long lines, many entries, nested brackets.
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(256));
            let piece = data[from..from + n].to_vec();
            let at = rng.below(len + 1);
            let times = 1 + rng.below(4);
            for _ in 0..times {
                data.splice(at..at, piece.iter().copied());
            }
        }
        8 if !dict.is_empty() => {
            let tok = dict[rng.below(dict.len())];
            let at = rng.below(len + 1);
            data.splice(at..at, tok.iter().copied());
        }
        9 if !dict.is_empty() => {
            let tok = dict[rng.below(dict.len())];
            let at = rng.below(len + 1);
            overwrite(data, at, tok);
        }
        10 if !corpus.is_empty() => {
            // Splice: our head, another input's tail.
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        11 => {
            // A decimal number in text replaced by an interesting one.
            let digits: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            if digits.is_empty() {
                return;
            }
            let start = digits[rng.below(digits.len())];
            let end = data[start..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(data.len(), |n| start + n);
            let num = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
            data.splice(start..end, num.bytes());
        }
        12 if len > 1 => {
            // Swap two bytes: reordered fields, brackets, separators.
            let (a, b) = (rng.below(len), rng.below(len));
            data.swap(a, b);
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, rng.word() as u8);
        }
    }
}

fn overwrite(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if end > data.len() {
        data.resize(end, 0);
    }
    data[at..end].copy_from_slice(bytes);
}

/// Where the current input is published before it runs, so a supervisor can name the input
/// that hung or killed the process (the worker publishes into a shared file mapping).
pub trait Publish {
    fn publish(&mut self, seq: u64, input: &[u8]);
}

/// Publishes nowhere (in-process runs, tests).
pub struct NoPublish;

impl Publish for NoPublish {
    fn publish(&mut self, _seq: u64, _input: &[u8]) {}
}

/// One saved crash.
#[derive(Debug, Clone)]
pub struct Crash {
    pub path: PathBuf,
    pub finding: String,
    /// False when the same file was already in the regressions (a known crash not yet fixed).
    pub new: bool,
}

/// What a run of one target did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub inputs: u64,
    pub seconds: f64,
    pub seeds: usize,
    pub corpus: usize,
    pub shapes: usize,
    pub crashes: Vec<Crash>,
}

impl Stats {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.inputs as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The name a crashing input is saved under.
pub fn crash_name(prefix: &str, input: &[u8]) -> String {
    format!("{prefix}-{}", hex::encode(Sha256::digest(input)))
}

/// Save a crashing input in `dir`; whether it is new there.
pub fn save_crash(dir: &Path, name: &str, input: &[u8]) -> std::io::Result<(PathBuf, bool)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let new = !path.exists();
    if new {
        std::fs::write(&path, input)?;
    }
    Ok((path, new))
}

/// The files of a directory, sorted by name (missing directory: none).
pub fn read_dir_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let path = entry?.path();
        if path.is_file() {
            let data = std::fs::read(&path)?;
            out.push((path, data));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Most inputs kept: past it, new shapes replace random non-seed entries.
const MAX_CORPUS: usize = 4096;

/// Fuzz `target` for `budget`, starting from `seeds`; crashes go to `crash_dir`.
pub fn fuzz(
    target: &Target,
    seeds: Vec<Vec<u8>>,
    budget: Duration,
    seed: u64,
    crash_dir: &Path,
    publish: &mut dyn Publish,
) -> std::io::Result<Stats> {
    quiet_panics();
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let mut stats = Stats {
        seeds: seeds.len(),
        ..Stats::default()
    };
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut shapes: HashSet<u64> = HashSet::new();
    let mut saved: HashSet<String> = HashSet::new();
    let mut seq = 0u64;
    let mut outcome = |input: &[u8],
                       seq: &mut u64,
                       stats: &mut Stats,
                       publish: &mut dyn Publish|
     -> std::io::Result<Option<u64>> {
        *seq += 1;
        publish.publish(*seq, input);
        stats.inputs += 1;
        match run_one(target, input) {
            Ok(s) => Ok(Some(s)),
            Err(f) => {
                if saved.insert(f.key()) {
                    let (path, new) = save_crash(crash_dir, &crash_name("crash", input), input)?;
                    stats.crashes.push(Crash {
                        path,
                        finding: f.to_string(),
                        new,
                    });
                }
                Ok(None)
            }
        }
    };
    // Seeds first, whole: each is kept whatever its shape.
    for s in seeds {
        if let Some(sh) = outcome(&s, &mut seq, &mut stats, publish)? {
            shapes.insert(sh);
        }
        corpus.push(s);
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let n_seeds = corpus.len();
    let mut input = Vec::with_capacity(target.max_len);
    while start.elapsed() < budget {
        input.clear();
        input.extend_from_slice(&corpus[rng.below(corpus.len())]);
        mutate(&mut rng, &mut input, &corpus, target.dict, target.max_len);
        if let Some(sh) = outcome(&input, &mut seq, &mut stats, publish)? {
            if shapes.insert(sh) {
                if corpus.len() < MAX_CORPUS {
                    corpus.push(input.clone());
                } else {
                    let i = n_seeds + rng.below(corpus.len() - n_seeds);
                    corpus[i] = input.clone();
                }
            }
        }
    }
    stats.seconds = start.elapsed().as_secs_f64();
    stats.corpus = corpus.len();
    stats.shapes = shapes.len();
    Ok(stats)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn shapes_ignore_numbers_and_quoted_text() {
        assert_eq!(
            shape("unknown variant `x`, expected one of `a` at line 1 column 9"),
            shape("unknown variant `yy`, expected one of `a` at line 3 column 22")
        );
        assert_ne!(shape("missing field"), shape("unknown field"));
    }

    #[test]
    fn mutations_stay_within_the_size_limit() {
        let mut rng = Rng::new(7);
        let corpus = vec![b"{\"type\":\"hello\"}".to_vec(), vec![0u8; 300]];
        let dict: &[&[u8]] = &[b"item_begin", b"\"type\""];
        for i in 0..10_000 {
            let mut d = corpus[i % 2].clone();
            mutate(&mut rng, &mut d, &corpus, dict, 256);
            assert!(d.len() <= 256);
        }
    }
}
