//! The current input, published in a shared file mapping before it runs: a worker that hangs,
//! overflows its stack or is killed by the kernel cannot say which input did it, but the
//! pages it wrote survive it, and its supervisor reads them back. Layout: `seq u64 LE |
//! len u64 LE | bytes`.

use crate::engine::Publish;
use std::fs::OpenOptions;
use std::num::NonZeroUsize;
use std::path::Path;
use std::ptr::NonNull;

const HEAD: usize = 16;

/// Bytes of the state file for inputs up to `max_len`.
pub fn file_len(max_len: usize) -> usize {
    HEAD + max_len
}

pub struct SharedInput {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

impl SharedInput {
    /// Map `path` (created and sized by [`create`]) for writing.
    pub fn open(path: &Path) -> std::io::Result<SharedInput> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        let len = usize::try_from(f.metadata()?.len()).unwrap_or(0);
        let Some(nz) = NonZeroUsize::new(len).filter(|_| len > HEAD) else {
            return Err(std::io::Error::other(format!(
                "{} is too small to hold an input",
                path.display()
            )));
        };
        // SAFETY: a fresh shared mapping of a file this run created for itself; nothing else
        // truncates it while mapped, and the mapping is only reached through `publish`.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &f,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(SharedInput { ptr, len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` bytes readable and writable for as long as `self` lives,
        // and `&mut self` makes this the only reference into it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Publish for SharedInput {
    fn publish(&mut self, seq: u64, input: &[u8]) {
        let b = self.bytes();
        let n = input.len().min(b.len() - HEAD);
        b[8..16].copy_from_slice(&(n as u64).to_le_bytes());
        b[HEAD..HEAD + n].copy_from_slice(&input[..n]);
        b[0..8].copy_from_slice(&seq.to_le_bytes());
    }
}

impl Drop for SharedInput {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

/// Create the state file for inputs up to `max_len`.
pub fn create(path: &Path, max_len: usize) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(file_len(max_len) as u64)
}

/// The sequence number and the input last published in the state file.
pub fn read(path: &Path) -> std::io::Result<(u64, Vec<u8>)> {
    let b = std::fs::read(path)?;
    if b.len() < HEAD {
        return Ok((0, Vec::new()));
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let seq = word(0);
    let n = usize::try_from(word(8)).unwrap_or(0).min(b.len() - HEAD);
    Ok((seq, b[HEAD..HEAD + n].to_vec()))
}
