//! cairn collector
