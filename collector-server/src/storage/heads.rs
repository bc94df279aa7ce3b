//! Published custody chain heads: the last record's sequence number and hash of each chain,
//! signed, kept outside the metadata store so that deleting a chain's newest rows from the
//! database leaves a head the chain no longer reaches.

use super::Result;
use cairn_protocol::custody::ChainHead;

pub trait HeadStore: Send + Sync {
    /// Publish a chain's new head (durably before returning).
    fn publish(&self, head: &ChainHead) -> Result<()>;
    /// The newest head published for a chain.
    fn latest(&self, collection_id: &str) -> Result<Option<ChainHead>>;
    /// How many chains have a head.
    fn chains(&self) -> Result<usize>;
}
