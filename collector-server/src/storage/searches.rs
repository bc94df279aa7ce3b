//! Saved timeline searches, by name.

use super::Result;
use serde_json::Value;

pub trait SearchStore {
    fn save_search(&self, name: &str, query: &Value, by: &str) -> Result<()>;
    fn saved_search(&self, name: &str) -> Result<Option<Value>>;
    fn saved_searches(&self) -> Result<Vec<Value>>;
    /// False when there was no search of that name.
    fn delete_saved_search(&self, name: &str) -> Result<bool>;
    /// False when there was no search named `from`; a conflict when `to` is taken.
    fn rename_saved_search(&self, from: &str, to: &str) -> Result<bool>;
}
