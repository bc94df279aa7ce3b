//! Memory evidence: process cores that gdb and lldb open, and physical memory images that
//! Volatility reads.
//!
//! Both are planned first (layout, headers, what will be read from where) and then streamed
//! in order through the evidence pipeline by a [`stream::PieceReader`], so a 64 GiB host needs
//! no local disk for its image. What cannot be read becomes a recorded gap.

pub mod elf;
pub mod files;
pub mod iomem;
pub mod maps;
pub mod physical;
pub mod process;
pub mod stream;
pub mod targets;
mod threads;

pub use physical::Format;
