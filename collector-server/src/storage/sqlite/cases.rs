use super::{now, Sqlite};
use crate::storage::cases::{Annotation, Case, CaseLink, CaseStore, Note, Target};
use crate::storage::Result;
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY, target TEXT NOT NULL, target_id TEXT NOT NULL, note TEXT NOT NULL,
    text TEXT NOT NULL, author TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS annotations_target ON annotations(target, target_id);
CREATE UNIQUE INDEX IF NOT EXISTS annotations_one_star ON annotations(target, target_id, author) WHERE note = 'star';
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, status TEXT NOT NULL, created_by TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS case_links (
    case_id INTEGER NOT NULL, target TEXT NOT NULL, target_id TEXT NOT NULL, added_by TEXT NOT NULL,
    added_at TEXT NOT NULL, PRIMARY KEY (case_id, target, target_id));
"#;

fn target(s: String) -> rusqlite::Result<Target> {
    Target::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, s.into())
    })
}

fn case_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Case> {
    Ok(Case {
        id: r.get(0)?,
        title: r.get(1)?,
        status: r.get(2)?,
        created_by: r.get(3)?,
        created_at: r.get(4)?,
    })
}

impl CaseStore for Sqlite {
    fn annotate(
        &self,
        target: Target,
        target_id: &str,
        note: Note,
        text: &str,
        author: &str,
    ) -> Result<()> {
        self.lock().execute(
            "INSERT OR IGNORE INTO annotations(target, target_id, note, text, author, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![target.as_str(), target_id, note.as_str(), text, author, now()],
        )?;
        Ok(())
    }

    fn unstar(&self, target: Target, target_id: &str, author: &str) -> Result<()> {
        self.lock().execute(
            "DELETE FROM annotations WHERE target = ?1 AND target_id = ?2 AND author = ?3 AND note = 'star'",
            params![target.as_str(), target_id, author],
        )?;
        Ok(())
    }

    fn annotations(&self, target: Target, target_id: &str) -> Result<Vec<Annotation>> {
        self.rows(
            "SELECT id, target, target_id, note, text, author, at FROM annotations WHERE target = ?1 AND target_id = ?2 ORDER BY id",
            params![target.as_str(), target_id],
            |r| {
                let note: String = r.get(3)?;
                Ok(Annotation {
                    id: r.get(0)?,
                    target: target_str(r.get(1)?)?,
                    target_id: r.get(2)?,
                    note: Note::parse(&note).unwrap_or(Note::Comment),
                    text: r.get(4)?,
                    author: r.get(5)?,
                    at: r.get(6)?,
                })
            },
        )
    }

    fn annotated(&self, target: Target, note: Note, limit: u32) -> Result<Vec<String>> {
        self.rows(
            "SELECT target_id FROM annotations WHERE target = ?1 AND note = ?2 GROUP BY target_id ORDER BY MAX(id) DESC LIMIT ?3",
            params![target.as_str(), note.as_str(), limit],
            |r| r.get(0),
        )
    }

    fn create_case(&self, title: &str, by: &str) -> Result<Case> {
        let conn = self.lock();
        let at = now();
        conn.execute(
            "INSERT INTO cases(title, status, created_by, created_at) VALUES (?1, 'open', ?2, ?3)",
            params![title, by, at],
        )?;
        Ok(Case {
            id: conn.last_insert_rowid(),
            title: title.to_string(),
            status: "open".into(),
            created_by: by.to_string(),
            created_at: at,
        })
    }

    fn cases(&self) -> Result<Vec<Case>> {
        self.rows(
            "SELECT id, title, status, created_by, created_at FROM cases ORDER BY status = 'closed', id DESC",
            [],
            case_row,
        )
    }

    fn case(&self, id: i64) -> Result<Option<Case>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, title, status, created_by, created_at FROM cases WHERE id = ?1",
                params![id],
                case_row,
            )
            .optional()?)
    }

    fn set_case_status(&self, id: i64, status: &str) -> Result<bool> {
        Ok(self.lock().execute(
            "UPDATE cases SET status = ?2 WHERE id = ?1",
            params![id, status],
        )? == 1)
    }

    fn link_case(&self, id: i64, target: Target, target_id: &str, by: &str) -> Result<()> {
        self.lock().execute(
            "INSERT OR IGNORE INTO case_links(case_id, target, target_id, added_by, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, target.as_str(), target_id, by, now()],
        )?;
        Ok(())
    }

    fn unlink_case(&self, id: i64, target: Target, target_id: &str) -> Result<()> {
        self.lock().execute(
            "DELETE FROM case_links WHERE case_id = ?1 AND target = ?2 AND target_id = ?3",
            params![id, target.as_str(), target_id],
        )?;
        Ok(())
    }

    fn case_links(&self, id: i64) -> Result<Vec<CaseLink>> {
        self.rows(
            "SELECT target, target_id, added_by, added_at FROM case_links WHERE case_id = ?1 ORDER BY added_at, target_id",
            params![id],
            |r| {
                Ok(CaseLink {
                    target: target_str(r.get(0)?)?,
                    target_id: r.get(1)?,
                    added_by: r.get(2)?,
                    added_at: r.get(3)?,
                })
            },
        )
    }
}

fn target_str(s: String) -> rusqlite::Result<Target> {
    target(s)
}
