//! The `term!` macro.

/// Builds a [`Term`](crate::Term) in something close to Erlang syntax.
///
/// | written | builds |
/// |---|---|
/// | `ok` (an identifier) | the atom `ok` |
/// | `{a, b, ...}` | a tuple (elements are any of these forms) |
/// | `[a, b, ...]` | a proper list |
/// | `[a, b | t]` | an improper list (or a longer list, if `t` is a list) |
/// | `#{k => v, ...}` | a map |
/// | a literal (`1`, `-1`, `2.5`, `"text"`, `true`) | `Term::from(literal)`: a string literal is a binary |
/// | `(expr)` | `Term::from(expr)`, for anything else |
///
/// Anything else goes in parentheses: an expression (`(x + 1)`, `(-y)`), a
/// quoted atom (`(Term::atom("EXIT"))`), a term you already have (`(t)`).
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
/// assert_eq!(term!(#{-1 => #{}, x => [-2]}).to_string(), "#{-1 => #{},x => [-2]}");
/// ```
#[macro_export]
macro_rules! term {
    // Internal: elements of a tuple or list, one at a time into `[...]`.
    (@seq $kind:ident [$($o:expr,)*]) => {
        $crate::term!(@end $kind [$($o,)*])
    };
    (@seq list [$($o:expr,)*] | $($tail:tt)+) => {
        $crate::Term::improper_list(::std::vec![$($o,)*], $crate::term!($($tail)+))
    };
    (@seq $kind:ident [$($o:expr,)*] # $m:tt $($rest:tt)*) => {
        $crate::term!(@sep $kind [$($o,)* $crate::term!(# $m),] $($rest)*)
    };
    (@seq $kind:ident [$($o:expr,)*] - $l:literal $($rest:tt)*) => {
        $crate::term!(@sep $kind [$($o,)* $crate::term!(- $l),] $($rest)*)
    };
    (@seq $kind:ident [$($o:expr,)*] $e:tt $($rest:tt)*) => {
        $crate::term!(@sep $kind [$($o,)* $crate::term!($e),] $($rest)*)
    };
    (@sep $kind:ident [$($o:expr,)*]) => {
        $crate::term!(@end $kind [$($o,)*])
    };
    (@sep $kind:ident [$($o:expr,)*] , $($rest:tt)*) => {
        $crate::term!(@seq $kind [$($o,)*] $($rest)*)
    };
    (@sep list [$($o:expr,)*] | $($tail:tt)+) => {
        $crate::Term::improper_list(::std::vec![$($o,)*], $crate::term!($($tail)+))
    };
    (@end tuple [$($o:expr,)*]) => {
        $crate::Term::Tuple(::std::vec![$($o,)*])
    };
    (@end list [$($o:expr,)*]) => {
        $crate::Term::List(::std::vec![$($o,)*])
    };
    // Internal: map entries, key then value.
    (@map [$($o:expr,)*]) => {
        $crate::Term::map(::std::vec![$($o,)*])
    };
    (@map [$($o:expr,)*] # $k:tt => $($rest:tt)*) => {
        $crate::term!(@value [$($o,)*] ($crate::term!(# $k)) $($rest)*)
    };
    (@map [$($o:expr,)*] - $k:literal => $($rest:tt)*) => {
        $crate::term!(@value [$($o,)*] ($crate::term!(- $k)) $($rest)*)
    };
    (@map [$($o:expr,)*] $k:tt => $($rest:tt)*) => {
        $crate::term!(@value [$($o,)*] ($crate::term!($k)) $($rest)*)
    };
    (@value [$($o:expr,)*] ($k:expr) # $v:tt $(, $($rest:tt)*)?) => {
        $crate::term!(@map [$($o,)* ($k, $crate::term!(# $v)),] $($($rest)*)?)
    };
    (@value [$($o:expr,)*] ($k:expr) - $v:literal $(, $($rest:tt)*)?) => {
        $crate::term!(@map [$($o,)* ($k, $crate::term!(- $v)),] $($($rest)*)?)
    };
    (@value [$($o:expr,)*] ($k:expr) $v:tt $(, $($rest:tt)*)?) => {
        $crate::term!(@map [$($o,)* ($k, $crate::term!($v)),] $($($rest)*)?)
    };
    // The forms.
    ({ $($e:tt)* }) => {
        $crate::term!(@seq tuple [] $($e)*)
    };
    ([ $($e:tt)* ]) => {
        $crate::term!(@seq list [] $($e)*)
    };
    (# { $($e:tt)* }) => {
        $crate::term!(@map [] $($e)*)
    };
    (($e:expr)) => {
        $crate::Term::from($e)
    };
    ($atom:ident) => {
        $crate::Term::from($crate::term!(@atom $atom))
    };
    (@atom true) => {
        true
    };
    (@atom false) => {
        false
    };
    (@atom $atom:ident) => {
        $crate::Atom::new(::std::stringify!($atom))
    };
    ($lit:literal) => {
        $crate::Term::from($lit)
    };
    (- $lit:literal) => {
        $crate::Term::from(-$lit)
    };
}
