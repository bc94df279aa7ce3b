//! Kernel-side programs of the cairn sensor.
//!
//! The C CO-RE sources (`*.bpf.c`) and the build script that compiles them with clang arrive with
//! the eBPF sensor; until then this crate exposes no objects and the agent polls /proc.

/// Compiled BPF objects embedded in the agent: `(name, ELF bytes)`.
pub const OBJECTS: &[(&str, &[u8])] = &[];
