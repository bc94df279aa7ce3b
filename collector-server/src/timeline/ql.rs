//! The timeline's query language, one for the API, the CLI and the console:
//!
//! ```text
//! host:web-1 kind:process_exec -user:root              field terms, AND by default, - or NOT
//! dst_port:(22 OR 3389) exe:/tmp/*                      a group of values, a prefix
//! "Accepted publickey" OR kind:(sudo OR su)             free text (a phrase), OR, parentheses
//! ```
//!
//! A term names a field (`host`, `kind`, `source`, `user`, `exe`, `parent`, `pid`, `ppid`,
//! `container`, `pod`, `path`, `dst`, `dst_port`, `item`, `message`) and a value; a bare word
//! or a quoted phrase is free text, matched case-insensitively in the message. An unknown
//! field or kind is an error that names it and lists what is known — never an empty answer
//! that looks like "nothing happened". Parsing is pure; hosts are resolved after it.

use crate::storage::timeline::{Column, Cond, Match};

/// Kinds of events the timeline's sources produce.
pub const KINDS: &[&str] = &[
    "process_exec",
    "process_fork",
    "process_exit",
    "process_start",
    "tcp_connect",
    "tcp_accept",
    "tcp_close",
    "socket_snapshot",
    "socket_listen",
    "kernel_module",
    "bpf_pinned",
    "security_call",
    "events_lost",
    "ssh_login",
    "ssh_failed",
    "ssh_invalid_user",
    "login",
    "logout",
    "failed_login",
    "su",
    "sudo",
    "user_added",
    "boot",
    "shell_command",
    "cron_command",
    "file_mtime",
    "file_atime",
    "file_ctime",
    "file_btime",
    "log",
    "containment",
    "group_joined",
    "group_left",
    "unparsed",
];

/// Sources events come from.
pub const SOURCES: &[&str] = &[
    "ebpf",
    "procfs",
    "auth.log",
    "syslog",
    "cron",
    "journal",
    "wtmp",
    "btmp",
    "utmp",
    "bash_history",
    "zsh_history",
    "bodyfile",
    "file",
    "processes.json",
    "network.json",
    "kernel.json",
    "event_journal",
    "cairn",
];

/// Field names as people write them.
pub const FIELDS: &[(&str, Column)] = &[
    ("host", Column::Host),
    ("kind", Column::Kind),
    ("source", Column::Source),
    ("user", Column::User),
    ("exe", Column::Exe),
    ("parent", Column::Parent),
    ("pid", Column::Pid),
    ("ppid", Column::Ppid),
    ("container", Column::Container),
    ("pod", Column::Pod),
    ("path", Column::Path),
    ("dst", Column::Dst),
    ("dst_port", Column::DstPort),
    ("item", Column::Item),
    ("message", Column::Message),
];

/// Where a query is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query: {message} (at character {at})")]
pub struct QlError {
    pub at: usize,
    pub message: String,
}

/// A parsed query before hosts are resolved: host terms still hold names.
pub type Query = Cond;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Colon,
    Open,
    Close,
    Minus,
}

fn lex(q: &str) -> Result<Vec<(usize, Tok)>, QlError> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = q.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((at, Tok::Open));
                i += 1
            }
            ')' => {
                out.push((at, Tok::Close));
                i += 1
            }
            ':' => {
                out.push((at, Tok::Colon));
                i += 1
            }
            '-' if out.last().is_none_or(|(_, t)| !matches!(t, Tok::Colon)) => {
                out.push((at, Tok::Minus));
                i += 1
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(QlError {
                                at,
                                message: "a quote is not closed".into(),
                            })
                        }
                        Some((_, '"')) => {
                            i += 1;
                            break;
                        }
                        Some((_, '\\')) if chars.get(i + 1).is_some() => {
                            s.push(chars[i + 1].1);
                            i += 2
                        }
                        Some((_, c)) => {
                            s.push(*c);
                            i += 1
                        }
                    }
                }
                out.push((at, Tok::Quoted(s)));
            }
            _ => {
                // In a value (right after `field:`) colons belong to it: `dst:fe80::1`.
                let in_value = matches!(out.last(), Some((_, Tok::Colon)));
                let mut s = String::new();
                while let Some((_, c)) = chars.get(i) {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '"') || (*c == ':' && !in_value)
                    {
                        break;
                    }
                    s.push(*c);
                    i += 1;
                }
                out.push((at, Tok::Word(s)));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|(a, _)| *a).unwrap_or(self.len)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, QlError> {
        Err(QlError {
            at: self.at(),
            message: message.into(),
        })
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }

    fn or(&mut self) -> Result<Cond, QlError> {
        let mut parts = vec![self.and()?];
        while self.is_word("OR") {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::Any(parts)
        })
    }

    fn and(&mut self) -> Result<Cond, QlError> {
        let mut parts = vec![self.not()?];
        loop {
            match self.peek() {
                None | Some(Tok::Close) => break,
                Some(Tok::Word(w)) if w == "OR" => break,
                Some(Tok::Word(w)) if w == "AND" => {
                    self.pos += 1;
                    parts.push(self.not()?);
                }
                _ => parts.push(self.not()?),
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::All(parts)
        })
    }

    fn not(&mut self) -> Result<Cond, QlError> {
        if matches!(self.peek(), Some(Tok::Minus)) || self.is_word("NOT") {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Cond, QlError> {
        match self.peek().cloned() {
            None => self.err("the query ends where a term was expected"),
            Some(Tok::Open) => {
                self.pos += 1;
                let c = self.or()?;
                if !matches!(self.peek(), Some(Tok::Close)) {
                    return self.err("a parenthesis is not closed");
                }
                self.pos += 1;
                Ok(c)
            }
            Some(Tok::Close) => self.err("a closing parenthesis without its opening one"),
            Some(Tok::Colon) => self.err("a value without its field (write field:value)"),
            Some(Tok::Minus) => self.err("a minus with nothing after it"),
            Some(Tok::Quoted(s)) => {
                self.pos += 1;
                Ok(Cond::Is(Column::Message, Match::Contains(s)))
            }
            Some(Tok::Word(w)) => {
                let start = self.at();
                self.pos += 1;
                if !matches!(self.peek(), Some(Tok::Colon)) {
                    if matches!(w.as_str(), "AND" | "OR" | "NOT") {
                        return Err(QlError {
                            at: start,
                            message: format!("{w} needs a term on each side"),
                        });
                    }
                    return Ok(Cond::Is(Column::Message, Match::Contains(w)));
                }
                self.pos += 1;
                let column = FIELDS
                    .iter()
                    .find(|(name, _)| *name == w)
                    .map(|(_, c)| *c)
                    .ok_or_else(|| QlError {
                        at: start,
                        message: format!(
                            "unknown field {w:?}; fields: {}",
                            FIELDS
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })?;
                if matches!(self.peek(), Some(Tok::Open)) {
                    self.pos += 1;
                    let mut alts = vec![self.value(column)?];
                    while self.is_word("OR") {
                        self.pos += 1;
                        alts.push(self.value(column)?);
                    }
                    if !matches!(self.peek(), Some(Tok::Close)) {
                        return self.err(format!(
                            "{w}:(…) takes values joined by OR, then a closing parenthesis"
                        ));
                    }
                    self.pos += 1;
                    return Ok(if alts.len() == 1 {
                        alts.remove(0)
                    } else {
                        Cond::Any(alts)
                    });
                }
                self.value(column)
            }
        }
    }

    fn value(&mut self, column: Column) -> Result<Cond, QlError> {
        let at = self.at();
        let (text, quoted) = match self.peek().cloned() {
            Some(Tok::Word(v)) => (v, false),
            Some(Tok::Quoted(v)) => (v, true),
            _ => return self.err("a field without a value (write field:value)"),
        };
        self.pos += 1;
        let bad = |message: String| Err(QlError { at, message });
        if column.is_numeric() {
            return match text.parse::<i64>() {
                Ok(_) => Ok(Cond::Is(column, Match::Is(text))),
                Err(_) => bad(format!(
                    "{} takes a number, not {text:?}",
                    FIELDS
                        .iter()
                        .find(|(_, c)| *c == column)
                        .map(|(n, _)| *n)
                        .unwrap_or("this field")
                )),
            };
        }
        if column == Column::Kind && !text.ends_with('*') && !KINDS.contains(&text.as_str()) {
            return bad(format!(
                "unknown kind {text:?}; kinds: {}",
                KINDS.join(", ")
            ));
        }
        if column == Column::Source && !text.ends_with('*') && !SOURCES.contains(&text.as_str()) {
            return bad(format!(
                "unknown source {text:?}; sources: {}",
                SOURCES.join(", ")
            ));
        }
        if column == Column::Message {
            return Ok(Cond::Is(column, Match::Contains(text)));
        }
        if let Some(prefix) = text.strip_suffix('*').filter(|_| !quoted) {
            return Ok(Cond::Is(column, Match::Prefix(prefix.to_string())));
        }
        if column == Column::User {
            // Sensor events carry uids, logs carry names: root is both.
            let also = match text.as_str() {
                "root" => Some("0"),
                "0" => Some("root"),
                _ => None,
            };
            if let Some(a) = also {
                return Ok(Cond::Is(
                    column,
                    Match::OneOf(vec![text.clone(), a.to_string()]),
                ));
            }
        }
        Ok(Cond::Is(column, Match::Is(text)))
    }
}

/// Parse a query; an empty one matches everything.
pub fn parse(q: &str) -> Result<Query, QlError> {
    let toks = lex(q)?;
    if toks.is_empty() {
        return Ok(Cond::All(Vec::new()));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        len: q.len(),
    };
    let c = p.or()?;
    if p.pos < p.toks.len() {
        return p.err("a closing parenthesis without its opening one");
    }
    Ok(c)
}

/// The host names a query mentions, to resolve them to agent ids.
pub fn host_names(c: &Cond, out: &mut Vec<String>) {
    match c {
        Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| host_names(c, out)),
        Cond::Not(c) => host_names(c, out),
        Cond::Is(Column::Host, Match::Is(v) | Match::Prefix(v) | Match::Contains(v)) => {
            out.push(v.clone())
        }
        Cond::Is(Column::Host, Match::OneOf(vs)) => out.extend(vs.iter().cloned()),
        Cond::Is(..) => {}
    }
}

/// Replace host names by the agent ids they name (`resolve` may name several).
pub fn resolve_hosts(c: Cond, resolve: &mut impl FnMut(&str) -> Vec<String>) -> Cond {
    match c {
        Cond::All(cs) => Cond::All(cs.into_iter().map(|c| resolve_hosts(c, resolve)).collect()),
        Cond::Any(cs) => Cond::Any(cs.into_iter().map(|c| resolve_hosts(c, resolve)).collect()),
        Cond::Not(c) => Cond::Not(Box::new(resolve_hosts(*c, resolve))),
        Cond::Is(Column::Host, m) => {
            let names = match m {
                Match::OneOf(v) => v,
                Match::Is(v) | Match::Prefix(v) | Match::Contains(v) => vec![v],
            };
            let ids: Vec<String> = names.iter().flat_map(|n| resolve(n)).collect();
            Cond::Is(Column::Host, Match::OneOf(ids))
        }
        other => other,
    }
}

/// A term as query text, for pivots and facet clicks (`field:"value"`).
pub fn term(field: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "._/-+@,=".contains(c));
    if plain {
        format!("{field}:{value}")
    } else {
        format!(
            "{field}:\"{}\"",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn is(c: Column, v: &str) -> Cond {
        Cond::Is(c, Match::Is(v.into()))
    }

    #[test]
    fn terms_groups_negation_and_text() {
        assert_eq!(
            parse("host:web-1 kind:process_exec -user:alice").unwrap(),
            Cond::All(vec![
                is(Column::Host, "web-1"),
                is(Column::Kind, "process_exec"),
                Cond::Not(Box::new(is(Column::User, "alice"))),
            ])
        );
        assert_eq!(
            parse("dst_port:(22 OR 3389)").unwrap(),
            Cond::Any(vec![is(Column::DstPort, "22"), is(Column::DstPort, "3389")])
        );
        assert_eq!(
            parse("\"Accepted publickey\" OR NOT kind:sudo").unwrap(),
            Cond::Any(vec![
                Cond::Is(
                    Column::Message,
                    Match::Contains("Accepted publickey".into())
                ),
                Cond::Not(Box::new(is(Column::Kind, "sudo"))),
            ])
        );
        assert_eq!(
            parse("exe:/tmp/* user:root").unwrap(),
            Cond::All(vec![
                Cond::Is(Column::Exe, Match::Prefix("/tmp/".into())),
                Cond::Is(Column::User, Match::OneOf(vec!["root".into(), "0".into()])),
            ])
        );
        assert_eq!(parse("dst:fe80::1").unwrap(), is(Column::Dst, "fe80::1"));
        assert_eq!(
            parse("path:\"/tmp/a b\"").unwrap(),
            is(Column::Path, "/tmp/a b")
        );
        assert_eq!(parse("").unwrap(), Cond::All(vec![]));
        assert_eq!(parse("(kind:su)").unwrap(), is(Column::Kind, "su"));
    }

    #[test]
    fn mistakes_are_named_never_an_empty_answer() {
        let e = parse("colour:red").unwrap_err();
        assert!(
            e.message.contains("unknown field \"colour\"") && e.message.contains("dst_port"),
            "{e}"
        );
        let e = parse("kind:bogus_kind").unwrap_err();
        assert!(
            e.message.contains("unknown kind \"bogus_kind\"") && e.message.contains("ssh_login"),
            "{e}"
        );
        let e = parse("source:auth").unwrap_err();
        assert!(e.message.contains("auth.log"), "{e}");
        assert!(parse("dst_port:ssh")
            .unwrap_err()
            .message
            .contains("number"));
        assert!(parse("(kind:su")
            .unwrap_err()
            .message
            .contains("not closed"));
        assert!(parse("kind:su)").unwrap_err().message.contains("closing"));
        assert!(parse("\"open").unwrap_err().message.contains("quote"));
        assert!(parse("user:").is_err());
        assert!(parse("OR kind:su").is_err());
        assert_eq!(parse("kind:(su OR sudo").unwrap_err().at, 16);
    }

    #[test]
    fn hosts_are_resolved_to_ids_and_terms_quote_what_needs_it() {
        let q = parse("host:web-1 OR -host:(db-1 OR db-2)").unwrap();
        let mut names = Vec::new();
        host_names(&q, &mut names);
        assert_eq!(names, vec!["web-1", "db-1", "db-2"]);
        let r = resolve_hosts(q, &mut |n| vec![format!("id-{n}")]);
        assert_eq!(
            r,
            Cond::Any(vec![
                Cond::Is(Column::Host, Match::OneOf(vec!["id-web-1".into()])),
                Cond::Not(Box::new(Cond::Any(vec![
                    Cond::Is(Column::Host, Match::OneOf(vec!["id-db-1".into()])),
                    Cond::Is(Column::Host, Match::OneOf(vec!["id-db-2".into()])),
                ]))),
            ])
        );
        assert_eq!(term("exe", "/usr/bin/curl"), "exe:/usr/bin/curl");
        assert_eq!(term("message", "a \"b\""), "message:\"a \\\"b\\\"\"");
        assert_eq!(
            parse(&term("path", "/tmp/a b\"c")).unwrap(),
            is(Column::Path, "/tmp/a b\"c")
        );
    }
}
