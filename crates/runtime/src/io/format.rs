//! `io_lib:format/2` for the output requests Erlang processes send to a
//! group leader as `{put_chars, Encoding, io_lib, format, [Format, Args]}`
//! (what `io:format/2` sends): a subset of the control sequences, enough
//! for what is printed in practice.
//!
//! Served: `~p` and `~w` (a term; `~p` prints printable lists as strings
//! and printable binaries as `<<"...">>`, on one line: no line breaking),
//! `~s` (chardata or an atom), `~c` (a character), `~b`/`~B` (an integer:
//! `~B` in base 10, `~.16B` in base 16), `~i` (skips an
//! argument), `~n` and `~~`; the modifiers `t` and `l`, and a field width
//! (right-justified with spaces, `-` for left). Anything else (floats
//! `~e/~f/~g`, padding characters, `~*`, a precision other than a base)
//! is refused: the format fails as a whole and the request is answered
//! `{error, {error, format}}`, as OTP's `group` answers a format that
//! does not evaluate.

use std::fmt::Write;

use ember_term::Term;

/// Why a format could not be served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unsupported;

/// Formats `format` (chardata) with `args` (a list) as `io_lib:format/2`.
pub(crate) fn format(format: &Term, args: &Term) -> Result<String, Unsupported> {
    let mut text = String::new();
    super::protocol::chardata(format, false, &mut text).map_err(|()| Unsupported)?;
    let mut args = args.as_list().ok_or(Unsupported)?.iter();
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        // ~[-][Width][.Precision]{t,l}Control
        let left = chars.next_if_eq(&'-').is_some();
        let width = number(&mut chars);
        let precision = match chars.next_if_eq(&'.') {
            Some(_) => Some(number(&mut chars).ok_or(Unsupported)?),
            None => None,
        };
        let mut latin1_lists = false;
        let control = loop {
            match chars.next().ok_or(Unsupported)? {
                't' => {}
                'l' => latin1_lists = true,
                other => break other,
            }
        };
        let mut next = || args.next().ok_or(Unsupported);
        let piece = match control {
            '~' => "~".to_string(),
            'n' => "\n".to_string(),
            'w' => next()?.to_string(),
            'p' => {
                let mut s = String::new();
                pretty(next()?, !latin1_lists, &mut s, 0);
                s
            }
            's' => match next()? {
                Term::Atom(a) => a.as_str().to_string(),
                chars => {
                    let mut s = String::new();
                    super::protocol::chardata(chars, false, &mut s).map_err(|()| Unsupported)?;
                    s
                }
            },
            'c' => {
                let c = next()?.as_int().ok_or(Unsupported)?;
                char::from_u32(u32::try_from(c).map_err(|_| Unsupported)?)
                    .ok_or(Unsupported)?
                    .to_string()
            }
            'b' | 'B' => {
                let base = precision.unwrap_or(10);
                integer(next()?, base, control == 'b')?
            }
            'i' => {
                next()?;
                String::new()
            }
            _ => return Err(Unsupported),
        };
        if precision.is_some() && !matches!(control, 'b' | 'B') {
            return Err(Unsupported);
        }
        let pad = width
            .unwrap_or(0)
            .saturating_sub(piece.chars().count())
            .min(1 << 16);
        if left {
            out.push_str(&piece);
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&piece);
        }
    }
    if args.next().is_some() {
        return Err(Unsupported); // io_lib:format fails on extra arguments
    }
    Ok(out)
}

fn number(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
    }
    n
}

/// An integer in `base` (2..=36), lower-case digits if `lower`.
fn integer(term: &Term, base: usize, lower: bool) -> Result<String, Unsupported> {
    if !(2..=36).contains(&base) {
        return Err(Unsupported);
    }
    let text = match term {
        Term::Int(i) => {
            let (negative, mut n) = (*i < 0, i.unsigned_abs());
            let mut digits = Vec::new();
            loop {
                digits.push(std::char::from_digit((n % base as u64) as u32, base as u32).unwrap());
                n /= base as u64;
                if n == 0 {
                    break;
                }
            }
            if negative {
                digits.push('-');
            }
            digits.iter().rev().collect::<String>()
        }
        // Big integers only in base 10.
        Term::BigInt(b) if base == 10 => b.to_string(),
        _ => return Err(Unsupported),
    };
    Ok(if lower {
        text.to_lowercase()
    } else {
        text.to_uppercase()
    })
}

/// Deeper than this, `~p` prints `...` (a term from another node can be
/// deep; the printer recurses).
const MAX_DEPTH: usize = 1000;

/// `~p` on one line: as `~w`, but printable lists as strings and
/// printable binaries as `<<"...">>`.
fn pretty(term: &Term, strings: bool, out: &mut String, depth: usize) {
    if depth > MAX_DEPTH {
        out.push_str("...");
        return;
    }
    let seq = |items: &[Term], out: &mut String| {
        for (i, t) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            pretty(t, strings, out, depth + 1);
        }
    };
    match term {
        Term::List(items) if strings && !items.is_empty() => match printable(items) {
            Some(s) => quote(&s, out),
            None => {
                out.push('[');
                seq(items, out);
                out.push(']');
            }
        },
        Term::List(items) => {
            out.push('[');
            seq(items, out);
            out.push(']');
        }
        Term::ImproperList(items, tail) => {
            out.push('[');
            seq(items, out);
            out.push('|');
            pretty(tail, strings, out, depth + 1);
            out.push(']');
        }
        Term::Tuple(items) => {
            out.push('{');
            seq(items, out);
            out.push('}');
        }
        Term::Map(m) => {
            out.push_str("#{");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pretty(k, strings, out, depth + 1);
                out.push_str(" => ");
                pretty(v, strings, out, depth + 1);
            }
            out.push('}');
        }
        Term::Binary(b) if !b.is_empty() => match std::str::from_utf8(b) {
            Ok(s) if s.chars().all(is_printable) => {
                out.push_str("<<");
                quote(s, out);
                out.push_str(">>");
            }
            _ => {
                let _ = write!(out, "{term}");
            }
        },
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// The text of a list of printable characters (Erlang's
/// `io_lib:printable_list/1` with the unicode range).
fn printable(items: &[Term]) -> Option<String> {
    items
        .iter()
        .map(|t| {
            let c = char::from_u32(u32::try_from(t.as_int()?).ok()?)?;
            is_printable(c).then_some(c)
        })
        .collect()
}

fn is_printable(c: char) -> bool {
    !c.is_control()
        || matches!(
            c,
            '\n' | '\r' | '\t' | '\u{b}' | '\u{8}' | '\u{c}' | '\u{1b}'
        )
}

/// `"..."` with Erlang's escapes.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{1b}' => out.push_str("\\e"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_term::term;

    fn f(fmt: &str, args: Term) -> Result<String, Unsupported> {
        format(&Term::binary(fmt.as_bytes()), &args)
    }

    /// An Erlang string: a list of code points.
    fn string(s: &str) -> Term {
        Term::list(s.chars().map(|c| Term::from(i64::from(u32::from(c)))))
    }

    #[test]
    fn serves_the_common_control_sequences() {
        let hi = string("hi");
        assert_eq!(
            f(
                "~p and ~w~n",
                term!([{a, (hi.clone()), [1, 2]}, (hi.clone())])
            )
            .unwrap(),
            "{a,\"hi\",[1,2]} and [104,105]\n"
        );
        assert_eq!(
            f(
                "~s|~s|~ts|~s",
                term!([(string("abc")), abc, (string("é")), "bin"])
            )
            .unwrap(),
            "abc|abc|é|bin"
        );
        assert_eq!(
            f("~B ~b ~.16B ~.2b", term!([42, -7, 255, 5])).unwrap(),
            "42 -7 FF 101"
        );
        assert_eq!(
            f("[~5w|~-4s]~~~c", term!([12, (string("ab")), 120])).unwrap(),
            "[   12|ab  ]~x"
        );
        assert_eq!(f("~i~p", term!([skipped, shown])).unwrap(), "shown");
        assert_eq!(f("~p", term!(["bin"])).unwrap(), "<<\"bin\">>");
        assert_eq!(f("~lp", term!([(hi)])).unwrap(), "[104,105]");
    }

    #[test]
    fn refuses_what_it_does_not_serve() {
        assert_eq!(f("~f", term!([1])), Err(Unsupported));
        assert_eq!(f("~p ~p", term!([1])), Err(Unsupported));
        assert_eq!(f("~p", term!([1, 2])), Err(Unsupported));
        assert_eq!(f("~.3p", term!([1])), Err(Unsupported));
        assert_eq!(f("~", term!([])), Err(Unsupported));
        assert_eq!(format(&term!(notchars), &term!([])), Err(Unsupported));
    }
}
