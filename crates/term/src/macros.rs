//! The `term!` macro.

/// Builds a [`Term`](crate::Term) in something close to Erlang syntax.
///
/// | written | builds |
/// |---|---|
/// | `ok` (an identifier) | the atom `ok` |
/// | `{a, b, ...}` | a tuple |
/// | `[a, b, ...]` | a proper list |
/// | `[a, b | t]` | an improper list (or a longer list, if `t` is a list) |
/// | `#{k => v, ...}` | a map |
/// | a literal (`1`, `-1`, `2.5`, `"text"`, `true`) | `Term::from(literal)`: a string literal is a binary |
/// | `(expr)` | `Term::from(expr)`, for anything else |
///
/// Elements are single tokens or bracketed groups, so wrap an expression
/// (`(x + 1)`, `(-y)`) or a quoted atom (`(Term::atom("EXIT"))`) in
/// parentheses.
///
/// ```
/// use ember_term::{term, Term};
/// let n = 3;
/// let t = term!({ok, [1, 2, (n)], #{name => "ember"}});
/// assert_eq!(
///     t,
///     Term::tuple([
///         Term::atom("ok"),
///         Term::list([1.into(), 2.into(), 3.into()]),
///         Term::map([(Term::atom("name"), Term::from("ember"))]),
///     ])
/// );
/// assert_eq!(term!([a | b]).to_string(), "[a|b]");
/// ```
#[macro_export]
macro_rules! term {
    ({ $($e:tt),* $(,)? }) => {
        $crate::Term::Tuple(::std::vec![$($crate::term!($e)),*])
    };
    ([ $($e:tt),+ | $tail:tt ]) => {
        $crate::Term::improper_list(::std::vec![$($crate::term!($e)),+], $crate::term!($tail))
    };
    ([ $($e:tt),* $(,)? ]) => {
        $crate::Term::List(::std::vec![$($crate::term!($e)),*])
    };
    (#{ $($k:tt => $v:tt),* $(,)? }) => {
        $crate::Term::map(::std::vec![$(($crate::term!($k), $crate::term!($v))),*])
    };
    (($e:expr)) => {
        $crate::Term::from($e)
    };
    (true) => {
        $crate::Term::from(true)
    };
    (false) => {
        $crate::Term::from(false)
    };
    ($atom:ident) => {
        $crate::Term::atom(::std::stringify!($atom))
    };
    ($lit:literal) => {
        $crate::Term::from($lit)
    };
    (- $lit:literal) => {
        $crate::Term::from(-$lit)
    };
}
