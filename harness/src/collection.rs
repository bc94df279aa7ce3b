//! Reading the collection objects the CLI and the API print.

use anyhow::{anyhow, Result};
use serde_json::Value;

/// Whether a collection status is final (`sealed`, `partial` or `failed`).
pub fn is_finished(status: &str) -> bool {
    matches!(status, "sealed" | "partial" | "failed")
}

/// A short description of a collection for assertion messages: status, errors, and one line
/// per item (name, status, length, SHA-256).
pub fn summary(collection: &Value) -> String {
    let mut out = format!(
        "collection {} status {} errors {}",
        collection.get("id").unwrap_or(&Value::Null),
        collection.get("status").unwrap_or(&Value::Null),
        collection.get("errors").unwrap_or(&Value::Null)
    );
    for i in items(collection) {
        out.push_str(&format!(
            "\n  item {} {} status {} raw_len {} chunks {}/{} dup {} sha256 {}",
            i.get("id").unwrap_or(&Value::Null),
            i.pointer("/source/name").unwrap_or(&Value::Null),
            i.get("status").unwrap_or(&Value::Null),
            i.get("raw_len").unwrap_or(&Value::Null),
            i.get("chunks_received").unwrap_or(&Value::Null),
            i.get("chunk_count").unwrap_or(&Value::Null),
            i.get("duplicate_chunks").unwrap_or(&Value::Null),
            i.get("sha256").unwrap_or(&Value::Null),
        ));
    }
    out
}

/// The items of a collection object.
pub fn items(collection: &Value) -> Vec<Value> {
    collection
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The item whose `source.name` is `name`.
pub fn item_named(collection: &Value, name: &str) -> Option<Value> {
    items(collection)
        .into_iter()
        .find(|i| i.pointer("/source/name").and_then(Value::as_str) == Some(name))
}

pub(crate) fn json_str(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string field {key:?} in {v}"))
}

/// A string field of a JSON object, or an error naming the object.
pub fn s(v: &Value, key: &str) -> Result<String> {
    json_str(v, key)
}

/// A u64 field of a JSON object, or an error naming the object.
pub fn u(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("no integer field {key:?} in {v}"))
}
