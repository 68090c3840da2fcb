//! Text to tokens, strings with Go's escapes, and durations.

use std::time::Duration;

use super::ast::{syntax, ParseError};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    /// The raw text between `[` and `]`.
    Range(String),
    P(&'static str),
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) kind: Tok,
    pub(super) pos: usize,
}

const PUNCT: [&str; 21] = [
    "|=", "|~", "!=", "!~", "=~", "==", ">=", "<=", "{", "}", "(", ")", ",", "|", "=", ">", "<",
    "+", "-", "*", "/",
];

pub(super) fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let pos = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'`' {
            let (s, next) = string(src, i)?;
            out.push(Token {
                kind: Tok::Str(s),
                pos,
            });
            i = next;
        } else if c == b'[' {
            let end = src[i..].find(']').ok_or(ParseError::Syntax {
                pos,
                msg: "unclosed [".into(),
            })?;
            out.push(Token {
                kind: Tok::Range(src[i + 1..i + end].trim().to_owned()),
                pos,
            });
            i += end + 1;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            let text = &src[start..i];
            // `10s`, `5KB`: durations and sizes, for the parser to name (or refuse).
            let kind = match text.parse::<f64>() {
                Ok(n) => Tok::Num(n),
                Err(_) => Tok::Ident(text.to_owned()),
            };
            out.push(Token { kind, pos });
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push(Token {
                kind: Tok::Ident(src[start..i].to_owned()),
                pos,
            });
        } else if let Some(p) = PUNCT.iter().find(|p| src[i..].starts_with(**p)) {
            out.push(Token {
                kind: Tok::P(p),
                pos,
            });
            i += p.len();
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return syntax(pos, format!("unexpected character {ch:?}"));
        }
    }
    Ok(out)
}

/// A double-quoted string with Go escapes, or a raw backquoted one; (value, next index).
fn string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = src.as_bytes()[start];
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        if c as u32 == u32::from(quote) {
            return Ok((out, at + 1));
        }
        if c == '\\' && quote == b'"' {
            let Some((_, e)) = chars.next() else { break };
            let ch = match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '"' => '"',
                '\\' => '\\',
                '`' => '`',
                'u' => {
                    let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                    u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or(ParseError::Syntax {
                            pos: at,
                            msg: format!("bad escape \\u{hex}"),
                        })?
                }
                // Regexes keep their own escapes: `\.` stays `\.`.
                other => {
                    out.push('\\');
                    other
                }
            };
            out.push(ch);
        } else {
            out.push(c);
        }
    }
    syntax(start, "unclosed string")
}

/// A Prometheus duration: `5m`, `1h30m`, `250ms`, `2d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 604_800.0,
            "y" => 31_536_000.0,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    (total > 0.0).then(|| Duration::from_secs_f64(total))
}
