//! Captures: each reads one kind of evidence from the host and hands back byte streams.
//!
//! Captures never talk to the network or write evidence themselves: they produce
//! [`Artifact`]s (small, in memory) or readers (large: files, memory, devices) that the
//! collection runner feeds through the hash + compress pipeline.

pub mod disk;
pub mod file;
pub mod memory;
pub mod volatile;

/// A small piece of evidence produced in memory, such as a JSON description of every process.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// File name, unique within a collection: `processes.json`.
    pub name: String,
    /// `application/json` for the volatile documents.
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// Problems met while producing it (a process that vanished, a file that could not be read).
    /// They are also inside the document; here they reach the collection's error list.
    pub errors: Vec<String>,
}
