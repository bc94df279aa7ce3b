//! cairn-protocol: the contract between agent and collector.
//!
//! Everything that crosses the boundary between a host and the collector is defined here, and
//! nothing here touches a socket or a path: the agent and the collector both speak through
//! `Read`/`Write` and byte slices, so the same framing serves the QUIC stream, the offline
//! collection directory and the import.
//!
//! - [`chunk`]: a fixed-size slice of an item's raw bytes, hashed before compression.
//! - [`pipeline`]: turns any `Read` into framed chunks without holding the item in memory.
//! - [`manifest`]: what an item and a collection are (host identity, source, gaps, hashes).
//! - [`wire`]: versioned messages and the length-prefixed frame they travel in.
//! - [`containment`]: isolate, release, freeze, thaw, kill: the request and what was enforced.
//! - [`custody`]: chain-of-custody records and how their hash chain is computed.
//! - [`readiness`]: the self-test report an agent sends and the collector keeps as history.
//! - [`rfc3339`]: the one text format of times in manifests, custody and the API.

pub mod chunk;
pub mod containment;
pub mod custody;
pub mod manifest;
pub mod pipeline;
pub mod readiness;
pub mod rfc3339;
pub mod wire;

/// Raw size of every chunk but the last of an item.
pub const CHUNK_SIZE: usize = 4 * 1024 * 1024;

/// ALPN of the agent ↔ collector QUIC protocol.
pub const ALPN: &[u8] = b"cairn/1";

/// Version of the wire messages; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest UDP payload QUIC probes for: a 9001-byte jumbo frame less IPv6 and UDP headers.
pub const JUMBO_UDP_PAYLOAD: u16 = 8953;

/// The TLS server name every collector certificate carries, whatever address it is reached at:
/// agents pin the collector's CA, so the name is a constant rather than a DNS fact.
pub const COLLECTOR_SERVER_NAME: &str = "collector.cairn.internal";

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// SHA-256 of everything a reader gives, hex; read 1 MiB at a time.
pub fn sha256_reader(mut r: impl std::io::Read) -> std::io::Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Current time as RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    rfc3339::now()
}
