//! Working together: annotations (a star, a tag or a comment, with author and time) on events,
//! collections and saved searches, and cases that group them under a title and a status.

use super::Result;
use serde::Serialize;

/// What an annotation or a case link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Event,
    Collection,
    Search,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Event => "event",
            Target::Collection => "collection",
            Target::Search => "search",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "event" => Some(Target::Event),
            "collection" => Some(Target::Collection),
            "search" => Some(Target::Search),
            _ => None,
        }
    }
}

/// A star, a tag or a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    Star,
    Tag,
    Comment,
}

impl Note {
    pub fn as_str(self) -> &'static str {
        match self {
            Note::Star => "star",
            Note::Tag => "tag",
            Note::Comment => "comment",
        }
    }

    pub fn parse(s: &str) -> Option<Note> {
        match s {
            "star" => Some(Note::Star),
            "tag" => Some(Note::Tag),
            "comment" => Some(Note::Comment),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Annotation {
    pub id: i64,
    pub target: Target,
    pub target_id: String,
    pub note: Note,
    /// The tag or the comment (empty for a star).
    pub text: String,
    pub author: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub id: i64,
    pub title: String,
    /// `open` or `closed`.
    pub status: String,
    pub created_by: String,
    pub created_at: String,
}

/// One thing a case groups.
#[derive(Debug, Clone, Serialize)]
pub struct CaseLink {
    pub target: Target,
    pub target_id: String,
    pub added_by: String,
    pub added_at: String,
}

pub trait CaseStore {
    /// Add an annotation. A second star by the same author is the same star.
    fn annotate(
        &self,
        target: Target,
        target_id: &str,
        note: Note,
        text: &str,
        author: &str,
    ) -> Result<()>;
    /// Take back an author's star.
    fn unstar(&self, target: Target, target_id: &str, author: &str) -> Result<()>;
    /// Every annotation on one thing, oldest first.
    fn annotations(&self, target: Target, target_id: &str) -> Result<Vec<Annotation>>;
    /// Targets of a kind with at least one annotation of `note`, newest first.
    fn annotated(&self, target: Target, note: Note, limit: u32) -> Result<Vec<String>>;
    fn create_case(&self, title: &str, by: &str) -> Result<Case>;
    fn cases(&self) -> Result<Vec<Case>>;
    fn case(&self, id: i64) -> Result<Option<Case>>;
    /// False when there is no such case.
    fn set_case_status(&self, id: i64, status: &str) -> Result<bool>;
    fn link_case(&self, id: i64, target: Target, target_id: &str, by: &str) -> Result<()>;
    fn unlink_case(&self, id: i64, target: Target, target_id: &str) -> Result<()>;
    fn case_links(&self, id: i64) -> Result<Vec<CaseLink>>;
}
