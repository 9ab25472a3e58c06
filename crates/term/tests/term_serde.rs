//! The serde mapping of the crate docs, both ways.

use std::collections::BTreeMap;

use ember_term::{from_term, term, to_term, Term};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Job {
    id: u64,
    name: String,
    tags: Vec<String>,
    owner: Option<String>,
    weight: f64,
    state: State,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
enum State {
    Queued,
    Running(u32),
    Retrying(u32, String),
    Failed { reason: String },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Unit;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Meters(f64);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Pair(i32, bool);

fn round_trip<T>(value: T, term: Term)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(to_term(&value).unwrap(), term, "{value:?}");
    assert_eq!(from_term::<T>(term).unwrap(), value);
}

#[test]
fn structs_are_maps_with_atom_keys() {
    let job = Job {
        id: 7,
        name: "resize".into(),
        tags: vec!["img".into()],
        owner: None,
        weight: 0.5,
        state: State::Running(3),
    };
    round_trip(
        job,
        term!(#{id => 7, name => "resize", tags => ["img"], owner => nil, weight => 0.5, state => {running, 3}}),
    );
}

#[test]
fn enum_variants_are_atoms_and_tagged_tuples() {
    round_trip(State::Queued, term!(queued));
    round_trip(State::Running(1), term!({running, 1}));
    round_trip(State::Retrying(2, "io".into()), term!({retrying, 2, "io"}));
    round_trip(
        State::Failed { reason: "x".into() },
        term!({failed, #{reason => "x"}}),
    );
}

#[test]
fn primitives_map_as_documented() {
    round_trip(true, term!(true));
    round_trip(-5i8, Term::from(-5));
    round_trip(u64::MAX, Term::from(u64::MAX));
    round_trip(i128::MIN, Term::from(i128::MIN));
    round_trip(2.5f64, Term::from(2.5));
    round_trip('é', Term::from("é"));
    round_trip(String::from("hi"), Term::from("hi"));
    round_trip((), term!(nil));
    round_trip(Unit, term!(nil));
    round_trip(Some(3), Term::from(3));
    round_trip(None::<u8>, term!(nil));
    round_trip(Meters(1.5), Term::from(1.5));
    round_trip(Pair(-1, false), term!({(-1), false}));
    round_trip((1, "a".to_string()), term!({1, "a"}));
    round_trip(vec![1u8, 2], term!([1, 2]));
    let mut m = BTreeMap::new();
    m.insert(2, "b".to_string());
    m.insert(1, "a".to_string());
    round_trip(m, term!(#{1 => "a", 2 => "b"}));
}

#[test]
fn reading_accepts_erlang_spellings() {
    assert_eq!(from_term::<Option<u8>>(term!(undefined)).unwrap(), None);
    assert_eq!(from_term::<String>(term!(hello)).unwrap(), "hello");
    assert_eq!(from_term::<String>(term!([104, 105])).unwrap(), "hi");
    assert_eq!(from_term::<f64>(Term::from(2)).unwrap(), 2.0);
    assert_eq!(from_term::<Vec<i32>>(term!({1, 2})).unwrap(), [1, 2]);
    assert_eq!(from_term::<char>(Term::from(97)).unwrap(), 'a');
    // Binary keys (Elixir maps with string keys) name fields too.
    #[derive(Deserialize, Debug, PartialEq)]
    struct P {
        x: i32,
    }
    assert_eq!(from_term::<P>(term!(#{"x" => 1})).unwrap(), P { x: 1 });
}

#[test]
fn mismatches_are_errors_that_name_the_term() {
    let err = from_term::<u8>(Term::from(300)).unwrap_err();
    assert!(err.to_string().contains("300"), "{err}");
    let err = from_term::<String>(term!({ a })).unwrap_err();
    assert_eq!(err.to_string(), "expected text, got {a}");
    assert!(from_term::<State>(term!({queued, 1})).is_err());
    assert!(from_term::<State>(term!(running)).is_err());
    assert!(from_term::<Job>(term!(#{id => 1})).is_err());
}
