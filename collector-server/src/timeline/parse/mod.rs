//! Parsers: bytes from the host → timeline events. Each reads hostile input: a line it cannot
//! read becomes an `unparsed` event and is counted, and the rest of the input is still read;
//! no input makes one panic or allocate beyond what it was given.

pub mod bodyfile;
pub mod ebpf;
pub mod history;
pub mod journal;
pub mod syslog;
pub mod utmp;
pub mod volatile;
