//! (being written: the one loopback harness of tests/ and xtask.)
