//! A small Rust lexer for tidy: identifiers, `::` and punctuation with their lines; comments,
//! strings and chars dropped (lifetimes are not chars); `#[cfg(test)]` items left out; and the
//! paths that name a crate's top-level modules.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
    Lit,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) line: usize,
}

pub(super) fn lex(src: &str) -> Vec<Token> {
    let cs: Vec<char> = src.chars().collect();
    let at = |i: usize| cs.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a string body from just after its opening quote; `hashes` for raw strings.
    let skip_str = |mut i: usize, line: &mut usize, raw: Option<usize>| -> usize {
        while i < cs.len() {
            match cs[i] {
                '\n' => *line += 1,
                '\\' if raw.is_none() => {
                    if at(i + 1) == '\n' {
                        *line += 1;
                    }
                    i += 1;
                }
                '"' => {
                    let n = raw.unwrap_or(0);
                    if (1..=n).all(|k| at(i + k) == '#') {
                        return i + 1 + n;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < cs.len() {
        let c = cs[i];
        let start_line = line;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < cs.len() {
                if cs[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if cs[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if cs[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_str(i + 1, &mut line, None);
            out.push(Token {
                tok: Tok::Lit,
                line: start_line,
            });
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                i += 3;
                while i < cs.len() && cs[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push(Token {
                    tok: Tok::Lit,
                    line,
                });
            } else if at(i + 2) == '\'' {
                i += 3;
                out.push(Token {
                    tok: Tok::Lit,
                    line,
                });
            } else {
                i += 1; // a lifetime or label: its name lexes as an identifier
            }
        } else if c.is_alphabetic() || c == '_' {
            let s = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            let word: String = cs[s..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && (at(i) == '"' || at(i) == '#') {
                let mut n = 0;
                while at(i + n) == '#' {
                    n += 1;
                }
                if at(i + n) == '"' {
                    i = skip_str(i + n + 1, &mut line, Some(n));
                    out.push(Token {
                        tok: Tok::Lit,
                        line: start_line,
                    });
                    continue;
                }
                if word == "r" && n == 1 {
                    continue; // `r#ident`: the identifier follows
                }
            }
            if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                i = skip_str(i + 1, &mut line, None);
                out.push(Token {
                    tok: Tok::Lit,
                    line: start_line,
                });
                continue;
            }
            if word == "b" && at(i) == '\'' {
                continue; // `b'x'`: the char literal follows
            }
            out.push(Token {
                tok: Tok::Ident(word),
                line,
            });
        } else if c.is_ascii_digit() {
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if c == ':' && at(i + 1) == ':' {
            i += 2;
            out.push(Token {
                tok: Tok::Sep,
                line,
            });
        } else {
            i += 1;
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
        }
    }
    out
}

pub(super) fn is_ident(t: Option<&Token>, s: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Ident(w), .. }) if w == s)
}

pub(super) fn is_punct(t: Option<&Token>, c: char) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
}

pub(super) fn is_sep(t: Option<&Token>) -> bool {
    matches!(t, Some(Token { tok: Tok::Sep, .. }))
}

/// Whether `#[cfg(test)]` (or with `!`, `#![cfg(test)]`) starts at `i`; the index after it.
pub(super) fn cfg_test_at(ts: &[Token], i: usize) -> Option<(usize, bool)> {
    if !is_punct(ts.get(i), '#') {
        return None;
    }
    let inner = is_punct(ts.get(i + 1), '!');
    let j = i + 1 + usize::from(inner);
    let shape = is_punct(ts.get(j), '[')
        && is_ident(ts.get(j + 1), "cfg")
        && is_punct(ts.get(j + 2), '(')
        && is_ident(ts.get(j + 3), "test")
        && is_punct(ts.get(j + 4), ')')
        && is_punct(ts.get(j + 5), ']');
    shape.then_some((j + 6, inner))
}

/// The index just after the item starting at `i`: its `;` or its closing `}` at depth 0.
pub(super) fn skip_item(ts: &[Token], mut i: usize) -> usize {
    let mut depth = 0i32;
    while let Some(t) = ts.get(i) {
        i += 1;
        match t.tok {
            Tok::Punct('{' | '(' | '[') => depth += 1,
            Tok::Punct('}' | ')' | ']') => {
                depth -= 1;
                if depth <= 0 && t.tok == Tok::Punct('}') {
                    return i;
                }
            }
            Tok::Punct(';') if depth == 0 => return i,
            _ => {}
        }
    }
    i
}

/// The names a path starting at `i` brings in: `NAME` or each first name of `{a, b::c}`.
pub(super) fn path_heads(ts: &[Token], i: usize) -> Vec<(String, usize)> {
    match ts.get(i) {
        Some(Token {
            tok: Tok::Ident(w),
            line,
        }) => vec![(w.clone(), *line)],
        Some(Token {
            tok: Tok::Punct('{'),
            ..
        }) => {
            let (mut out, mut depth, mut expect) = (Vec::new(), 0, true);
            for t in &ts[i..] {
                match &t.tok {
                    Tok::Punct('{') => {
                        depth += 1;
                        expect = depth == 1;
                    }
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(',') if depth == 1 => expect = true,
                    Tok::Ident(w) if expect && depth == 1 => {
                        out.push((w.clone(), t.line));
                        expect = false;
                    }
                    _ => expect = false,
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// A file's code without its `#[cfg(test)]` items.
pub(super) struct Code {
    pub(super) ts: Vec<Token>,
    /// `#[cfg(test)] mod NAME;` children: test-only files.
    pub(super) test_children: Vec<String>,
    /// `#![cfg(test)]`: the whole file is test-only.
    pub(super) test_only: bool,
}

pub(super) fn code(src: &str) -> Code {
    let all = lex(src);
    let mut out = Code {
        ts: Vec::with_capacity(all.len()),
        test_children: Vec::new(),
        test_only: false,
    };
    let mut i = 0;
    while i < all.len() {
        let Some((j, inner)) = cfg_test_at(&all, i) else {
            out.ts.push(all[i].clone());
            i += 1;
            continue;
        };
        if inner {
            out.test_only = true;
            out.ts.clear();
            return out;
        }
        let mut k = j;
        while is_punct(all.get(k), '#') {
            k = skip_group(&all, k + 1);
        }
        if is_ident(all.get(k), "pub") {
            k += 1;
            if is_punct(all.get(k), '(') {
                k = skip_group(&all, k);
            }
        }
        if is_ident(all.get(k), "mod") && is_punct(all.get(k + 2), ';') {
            if let Some(Token {
                tok: Tok::Ident(name),
                ..
            }) = all.get(k + 1)
            {
                out.test_children.push(name.clone());
            }
        }
        i = skip_item(&all, k);
    }
    out
}

/// How a file names the library's top-level modules.
#[derive(Clone, Copy)]
pub(super) enum Root<'a> {
    /// A library file `depth` modules below the crate root (`src/a.rs` is 1).
    Lib { depth: usize },
    /// A binary's file: the library is `LIB::`.
    Bin { lib: &'a str },
}

/// The names right after `crate::`, a `super::` path that reaches the crate root, or (in a
/// binary) `LIB::`, with their lines.
pub(super) fn scan(ts: &[Token], root: Root<'_>) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let (mut i, mut braces) = (0usize, 0usize);
    // Inline `mod x { … }` blocks open at these brace depths.
    let mut inline: Vec<usize> = Vec::new();
    while i < ts.len() {
        let prev_sep = i > 0 && is_sep(ts.get(i - 1));
        match (&ts[i].tok, root) {
            (Tok::Ident(w), _) if w == "mod" && is_punct(ts.get(i + 2), '{') => {
                inline.push(braces);
            }
            (Tok::Punct('{'), _) => braces += 1,
            (Tok::Punct('}'), _) => {
                braces = braces.saturating_sub(1);
                if inline.last() == Some(&braces) {
                    inline.pop();
                }
            }
            (Tok::Ident(w), Root::Lib { .. })
                if w == "crate" && !prev_sep && is_sep(ts.get(i + 1)) =>
            {
                out.extend(path_heads(ts, i + 2));
            }
            (Tok::Ident(w), Root::Lib { depth }) if w == "super" && !prev_sep => {
                let mut k = i;
                let mut ups = 0;
                while is_ident(ts.get(k), "super") && is_sep(ts.get(k + 1)) {
                    ups += 1;
                    k += 2;
                }
                if ups > 0 && ups == depth + inline.len() {
                    out.extend(path_heads(ts, k));
                }
                i = k.max(i + 1);
                continue;
            }
            (Tok::Ident(w), Root::Bin { lib })
                if w == lib && !prev_sep && is_sep(ts.get(i + 1)) =>
            {
                out.extend(path_heads(ts, i + 2));
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// At an opening bracket `i`: the index just after its matching close.
pub(super) fn skip_group(ts: &[Token], i: usize) -> usize {
    let mut depth = 0i32;
    let mut k = i;
    while let Some(t) = ts.get(k) {
        k += 1;
        match t.tok {
            Tok::Punct('{' | '(' | '[') => depth += 1,
            Tok::Punct('}' | ')' | ']') => {
                depth -= 1;
                if depth <= 0 {
                    return k;
                }
            }
            _ if depth == 0 => return k,
            _ => {}
        }
    }
    k
}
