//! The Erlang I/O protocol as terms: building and reading `io_request`s,
//! decoding their characters, and the `io_reply`.
//!
//! Requests are [`Term`]s because what crosses nodes is a term: the request
//! a process sends to its group leader is the one an Erlang group leader on
//! another node would read, and a request from an Erlang process lands in a
//! local group leader's mailbox as the same `Term`.

use ember_term::Term;

// Pids and references cross as `crate::dist` makes them: the node's name
// once it is a node, so a reply reaches a requester on another node.
use crate::dist::pid_from_term;

/// One request of the Erlang I/O protocol:
/// `{io_request, From, ReplyAs, Request}`.
///
/// A group leader written in Rust reads its mailbox's terms with
/// [`IoRequest::from_term`], serves [`chars`](IoRequest::chars), and answers
/// with [`reply`](IoRequest::reply):
///
/// ```
/// use ember_runtime::io::IoRequest;
/// use ember_term::{term, Term};
///
/// let request = term!({io_request, (Term::atom("nobody")), 7, {put_chars, unicode, "hi\n"}});
/// let request = IoRequest::from_term(&request).unwrap();
/// assert_eq!(request.chars().unwrap(), "hi\n");
/// assert_eq!(request.reply_term(Term::atom("ok")), term!({io_reply, 7, ok}));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct IoRequest {
    /// Who gets the reply (a pid, as a term: it may be of another node).
    pub from: Term,
    /// Returned unchanged in the reply; the client matches on it.
    pub reply_as: Term,
    /// What is asked, e.g. `{put_chars, unicode, Chars}`.
    pub request: Term,
}

impl IoRequest {
    /// An output request for `text`: `{put_chars, unicode, <<Text/utf8>>}`.
    pub fn put_chars(from: Term, reply_as: Term, text: &str) -> IoRequest {
        IoRequest {
            from,
            reply_as,
            request: Term::tuple([
                Term::atom("put_chars"),
                Term::atom("unicode"),
                Term::binary(text.as_bytes()),
            ]),
        }
    }

    /// Reads `{io_request, From, ReplyAs, Request}`; `None` for any other term.
    pub fn from_term(term: &Term) -> Option<IoRequest> {
        match term.as_tuple()? {
            [tag, from, reply_as, request] if tag.is_atom("io_request") => Some(IoRequest {
                from: from.clone(),
                reply_as: reply_as.clone(),
                request: request.clone(),
            }),
            _ => None,
        }
    }

    /// The request as the term that is sent.
    pub fn to_term(&self) -> Term {
        Term::tuple([
            Term::atom("io_request"),
            self.from.clone(),
            self.reply_as.clone(),
            self.request.clone(),
        ])
    }

    /// The text an output request asks to write, or the reply to give
    /// instead: `{put_chars, unicode | latin1, Chars}`, the old
    /// `{put_chars, Chars}` (latin1) and `{requests, [...]}` of those are
    /// served; characters that do not decode get
    /// `{error, {put_chars, Encoding, Chars}}` (as OTP's `group` answers),
    /// `get_geometry` gets `{error, enotsup}`, anything else (input,
    /// options, `{put_chars, Encoding, M, F, A}`) `{error, request}`.
    pub fn chars(&self) -> Result<String, Term> {
        let mut text = String::new();
        request_chars(&self.request, &mut text)?;
        Ok(text)
    }

    /// `{io_reply, ReplyAs, Reply}`.
    pub fn reply_term(&self, reply: Term) -> Term {
        reply_term(&self.reply_as, reply)
    }

    /// Sends `{io_reply, ReplyAs, Reply}` to `From`; false if `From` names
    /// no pid this node can reach.
    ///
    /// # Panics
    ///
    /// Outside an Ember runtime.
    pub fn reply(&self, reply: Term) -> bool {
        match pid_from_term(&self.from) {
            Some(to) => {
                crate::send(to, self.reply_term(reply));
                true
            }
            None => false,
        }
    }
}

/// `{io_reply, ReplyAs, Reply}`.
pub(crate) fn reply_term(reply_as: &Term, reply: Term) -> Term {
    Term::tuple([Term::atom("io_reply"), reply_as.clone(), reply])
}

/// Whether `term` is `{io_reply, ReplyAs, _}` for this `reply_as`; its reply.
pub(crate) fn reply_of<'t>(term: &'t Term, reply_as: &Term) -> Option<&'t Term> {
    match term.as_tuple()? {
        [tag, tagged, reply] if tag.is_atom("io_reply") && tagged == reply_as => Some(reply),
        _ => None,
    }
}

fn error(reason: Term) -> Term {
    Term::tuple([Term::atom("error"), reason])
}

/// Appends the text of one output request (or `requests` list) to `out`.
fn request_chars(request: &Term, out: &mut String) -> Result<(), Term> {
    let unsupported = || error(Term::atom("request"));
    match request {
        Term::Tuple(fields) => match fields.as_slice() {
            [tag, encoding, chars] if tag.is_atom("put_chars") => {
                let latin1 = match encoding.as_atom() {
                    Some("unicode") => false,
                    Some("latin1") => true,
                    _ => return Err(unsupported()),
                };
                chardata(chars, latin1, out).map_err(|()| error(request.clone()))
            }
            [tag, encoding, m, f, args]
                if tag.is_atom("put_chars")
                    && matches!(encoding.as_atom(), Some("unicode" | "latin1"))
                    && m.is_atom("io_lib")
                    && f.is_atom("format") =>
            {
                io_lib_format(args, out)
            }
            // The same without an encoding: what `io` sends to a group
            // leader on a node without DFLAG_UNICODE_IO.
            [tag, m, f, args]
                if tag.is_atom("put_chars") && m.is_atom("io_lib") && f.is_atom("format") =>
            {
                io_lib_format(args, out)
            }
            [tag, chars] if tag.is_atom("put_chars") => {
                chardata(chars, true, out).map_err(|()| error(request.clone()))
            }
            [tag, requests] if tag.is_atom("requests") => {
                for each in requests.as_list().ok_or_else(unsupported)? {
                    request_chars(each, out)?;
                }
                Ok(())
            }
            _ => Err(unsupported()),
        },
        Term::Atom(a) if a.as_str() == "get_geometry" => Err(error(Term::atom("enotsup"))),
        _ => Err(unsupported()),
    }
}

/// `io_lib:format(Format, Args)` for `args` = `[Format, Args]`; a format
/// that cannot be served is `{error, {error, format}}`.
fn io_lib_format(args: &Term, out: &mut String) -> Result<(), Term> {
    let failed = || error(Term::tuple([Term::atom("error"), Term::atom("format")]));
    let [format, args] = args.as_list().unwrap_or(&[]) else {
        return Err(failed());
    };
    out.push_str(&super::format::format(format, args).map_err(|_| failed())?);
    Ok(())
}

/// Decodes Erlang chardata (binaries, code points, nested lists, a binary
/// as an improper tail) into `out`. With `latin1`, binaries are bytes of
/// ISO Latin-1 and code points stop at 255; otherwise binaries are UTF-8.
/// Iterative: a deeply nested list from another node cannot overflow the stack.
pub(super) fn chardata(chars: &Term, latin1: bool, out: &mut String) -> Result<(), ()> {
    if matches!(chars, Term::Int(_)) {
        return Err(()); // a code point alone is not chardata
    }
    let mut pending: Vec<&Term> = vec![chars];
    while let Some(item) = pending.pop() {
        match item {
            Term::Binary(bytes) if latin1 => out.extend(bytes.iter().map(|&b| char::from(b))),
            Term::Binary(bytes) => out.push_str(std::str::from_utf8(bytes).map_err(|_| ())?),
            Term::Int(c) => {
                let c = u32::try_from(*c).map_err(|_| ())?;
                if latin1 && c > 255 {
                    return Err(());
                }
                out.push(char::from_u32(c).ok_or(())?);
            }
            Term::List(items) => pending.extend(items.iter().rev()),
            Term::ImproperList(items, tail) if matches!(**tail, Term::Binary(_)) => {
                pending.push(tail);
                pending.extend(items.iter().rev());
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_term::term;

    fn chars_of(request: Term) -> Result<String, Term> {
        IoRequest {
            from: Term::nil(),
            reply_as: Term::nil(),
            request,
        }
        .chars()
    }

    #[test]
    fn decodes_unicode_latin1_and_nested_chardata() {
        assert_eq!(
            chars_of(term!({put_chars, unicode, "héllo"})).unwrap(),
            "héllo"
        );
        let latin1 = Term::tuple([
            Term::atom("put_chars"),
            Term::atom("latin1"),
            Term::binary(vec![b'h', 0xe9]),
        ]);
        assert_eq!(chars_of(latin1).unwrap(), "hé");
        let nested = term!({put_chars, unicode, [104, [105, "!"], 8364 | "\n"]});
        assert_eq!(chars_of(nested).unwrap(), "hi!€\n");
        assert_eq!(chars_of(term!({put_chars, [111, 107]})).unwrap(), "ok");
        let many = term!({requests, [{put_chars, unicode, "a"}, {put_chars, latin1, [98]}]});
        assert_eq!(chars_of(many).unwrap(), "ab");
    }

    #[test]
    fn refuses_what_it_cannot_decode() {
        let bad_utf8 = Term::tuple([
            Term::atom("put_chars"),
            Term::atom("unicode"),
            Term::binary(vec![0xff]),
        ]);
        assert_eq!(chars_of(bad_utf8.clone()), Err(term!({error, (bad_utf8)})));
        let wide_latin1 = term!({put_chars, latin1, [8364]});
        assert_eq!(
            chars_of(wide_latin1.clone()),
            Err(term!({error, (wide_latin1)}))
        );
        let bare_int = term!({put_chars, unicode, 65});
        assert!(chars_of(bare_int).is_err());
        let surrogate = term!({put_chars, unicode, [55296]});
        assert!(chars_of(surrogate).is_err());
        let mfa = term!({put_chars, unicode, io_lib, format, ["~p~n", [{a, 1}]]});
        assert_eq!(chars_of(mfa).unwrap(), "{a,1}\n");
        let old_style = term!({put_chars, io_lib, format, ["~w", [x]]});
        assert_eq!(chars_of(old_style).unwrap(), "x");
        let float = term!({put_chars, unicode, io_lib, format, ["~f", [1.5]]});
        assert_eq!(chars_of(float), Err(term!({error, {error, format}})));
        let other = term!({put_chars, unicode, lists, flatten, [["x"]]});
        assert_eq!(chars_of(other), Err(term!({error, request})));
        assert_eq!(
            chars_of(term!({get_line, unicode, ""})),
            Err(term!({error, request}))
        );
        assert_eq!(chars_of(term!(get_geometry)), Err(term!({error, enotsup})));
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut chars = Term::list([Term::from(120)]);
        for _ in 0..100_000 {
            chars = Term::List(vec![chars]);
        }
        let request = IoRequest {
            from: Term::nil(),
            reply_as: Term::nil(),
            request: term!({put_chars, unicode, (chars)}),
        };
        assert_eq!(request.chars().unwrap(), "x");
        // Dropping a term this deep recurses in `Term`'s own drop: unwind it by hand.
        let mut t = request.request;
        loop {
            t = match t {
                Term::Tuple(mut v) => v.pop().unwrap_or(Term::nil()),
                Term::List(mut v) if !v.is_empty() => v.pop().unwrap_or(Term::nil()),
                _ => break,
            };
        }
    }

    #[test]
    fn replies_match_only_their_tag() {
        let tag = term!(7);
        let reply = reply_term(&tag, term!(ok));
        assert_eq!(reply_of(&reply, &tag), Some(&term!(ok)));
        assert_eq!(reply_of(&reply, &term!(8)), None);
        assert_eq!(reply_of(&term!({io_reply, 7}), &tag), None);
    }
}
