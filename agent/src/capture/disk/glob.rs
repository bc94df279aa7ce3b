//! Shell-style patterns over raw path bytes, for profile paths and excludes.
//!
//! Names on Linux are bytes, not text, so matching works on `&[u8]`: a non-UTF-8 name can be
//! matched by `*` like any other. `*` and `?` never match `/`; `**` (only in excludes) does.

/// Whether `name` matches the pattern `pat`: `*` any run of bytes except `/`, `?` one byte
/// except `/`, `[abc]`/`[a-z]`/`[!x]` one byte of a set, `**` any run including `/`, and `\x`
/// the byte `x` itself. A leading `.` in a name is matched by wildcards too (profiles list
/// dot files explicitly anyway, and hiding them would hide what attackers hide).
pub fn matches(pat: &[u8], name: &[u8]) -> bool {
    match_from(pat, name)
}

fn match_from(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    // Backtracking points for the last `*` (single-segment) seen.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' if pat.get(p + 1) == Some(&b'*') => {
                    // `**`: try every suffix, including across slashes.
                    let rest = &pat[p + 2..];
                    return (n..=name.len()).any(|i| match_from(rest, &name[i..]));
                }
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' if name[n] != b'/' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, len)) = class(&pat[p..], name[n]) {
                        if ok && name[n] != b'/' {
                            p += len;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == b'[' {
                        // An unclosed `[` is a literal.
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() && pat[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                // An escape that does not match is a mismatch, not a literal backslash.
                b'\\' if p + 1 < pat.len() => {}
                c if c == name[n] && c != b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Mismatch: let the last `*` swallow one more byte, unless that byte is a `/`.
        match star {
            Some((sp, sn)) if name[sn] != b'/' => {
                star = Some((sp, sn + 1));
                p = sp + 1;
                n = sn + 1;
            }
            _ => return false,
        }
    }
    // The name is used up: what is left of the pattern must match the empty string.
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// A `[...]` class at the start of `pat`: (whether `c` is in it, the class's length), or None
/// when the bracket is not closed.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    while i < pat.len() {
        let b = pat[i];
        if b == b']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&e| e != b']') {
            let hi = pat[i + 2];
            if (b..=hi).contains(&c) {
                found = true;
            }
            i += 3;
        } else {
            if b == c {
                found = true;
            }
            i += 1;
        }
    }
    None
}

/// Whether a path component holds a wildcard (and so must be matched against a listing).
pub fn has_wildcard(component: &[u8]) -> bool {
    component.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_questions() {
        assert!(matches(b"auth.log*", b"auth.log"));
        assert!(matches(b"auth.log*", b"auth.log.2.gz"));
        assert!(!matches(b"auth.log*", b"xauth.log"));
        assert!(matches(b"*_history", b".bash_history"));
        assert!(matches(b"*_history", b".zsh_history"));
        assert!(!matches(b"*_history", b".bash_history.bak"));
        assert!(matches(b"?.txt", b"a.txt"));
        assert!(!matches(b"?.txt", b"ab.txt"));
        assert!(matches(b"*", b""));
        assert!(matches(b"a*b*c", b"aXXbYYc"));
        assert!(!matches(b"a*b*c", b"aXXbYY"));
    }

    #[test]
    fn classes() {
        assert!(matches(b"sd[a-c]", b"sdb"));
        assert!(!matches(b"sd[a-c]", b"sdd"));
        assert!(matches(b"x[!0-9]", b"xa"));
        assert!(!matches(b"x[!0-9]", b"x5"));
        assert!(matches(b"[]]", b"]"));
        assert!(matches(b"a[", b"a["), "an unclosed bracket is literal");
    }

    #[test]
    fn slashes_need_double_star() {
        assert!(!matches(b"/var/*", b"/var/log/syslog"));
        assert!(matches(b"/var/**", b"/var/log/syslog"));
        assert!(matches(
            b"/var/log/journal/**",
            b"/var/log/journal/abc/system.journal"
        ));
        assert!(matches(b"**/*.gz", b"/var/log/a/b.gz"));
        assert!(!matches(b"*.gz", b"/var/log/a/b.gz"));
    }

    #[test]
    fn non_utf8_names_match_as_bytes() {
        assert!(matches(b"caf*", b"caf\xe9-notes"));
        assert!(matches(b"caf\xe9*", b"caf\xe9-notes"));
        assert!(!matches(b"caf\xe8*", b"caf\xe9-notes"));
    }

    #[test]
    fn escapes_are_literal() {
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"aXb"));
    }

    #[test]
    fn wildcard_detection() {
        assert!(has_wildcard(b"*.log"));
        assert!(has_wildcard(b"sd[ab]"));
        assert!(!has_wildcard(b"auth.log"));
    }
}
