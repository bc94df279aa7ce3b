//! cairn's end-to-end tests live in `tests/tests/*.rs`: the real binaries on loopback, with real
//! QUIC, TLS, files and processes. What starts them is the `cairn-harness` crate (`harness/`),
//! the same one `cargo xtask` uses; this library is empty on purpose.
