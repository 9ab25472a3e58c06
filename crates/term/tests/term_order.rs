//! Erlang's term order (the erts guide's "Term Comparison"; pid, port and
//! reference order as OTP 25 sorts them, checked with `erl`; the interop
//! test also sorts a whole list of terms on both sides).

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use ember_term::{term, Atom, BigInt, BitBinary, Fun, Pid, Reference, Term};

fn hash(t: &Term) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

fn pid(node: &str, id: u32, serial: u32, creation: u32) -> Term {
    Term::from(Pid {
        node: Atom::new(node),
        id,
        serial,
        creation,
    })
}

fn reference(node: &str, creation: u32, ids: &[u32]) -> Term {
    Term::from(Reference {
        node: Atom::new(node),
        creation,
        ids: ids.to_vec(),
    })
}

#[test]
fn types_rank_number_atom_reference_fun_port_pid_tuple_map_nil_list_bitstring() {
    let ranked = vec![
        Term::from(1),
        Term::atom("a"),
        reference("n@h", 1, &[1, 2, 3]),
        Term::from(Fun::Export {
            module: Atom::new("m"),
            function: Atom::new("f"),
            arity: 0,
        }),
        Term::from(ember_term::Port {
            node: Atom::new("n@h"),
            id: 1,
            creation: 1,
        }),
        pid("n@h", 1, 0, 1),
        term!({}),
        term!(#{}),
        Term::nil(),
        term!([1]),
        Term::binary(vec![]),
    ];
    for (i, a) in ranked.iter().enumerate() {
        for (j, b) in ranked.iter().enumerate() {
            assert_eq!(a.cmp(b), i.cmp(&j), "{a} vs {b}");
        }
    }
}

#[test]
fn integers_and_floats_compare_by_exact_value() {
    assert!(Term::from(1) < Term::from(1.5));
    assert!(Term::from(1.5) < Term::from(2));
    assert!(Term::from(-1) > Term::from(-1.5));
    // 2^64 is exactly a float: equal to Erlang, integer first in Ord.
    let two_64 = Term::from(1u128 << 64);
    let two_64_f = Term::from(18446744073709551616.0);
    assert_eq!(two_64.erl_cmp(&two_64_f), Ordering::Equal);
    assert_eq!(two_64.cmp(&two_64_f), Ordering::Less);
    assert_ne!(two_64, two_64_f);
    // 2^64 + 1 is not representable: the bignum is larger, exactly.
    assert!(Term::from((1u128 << 64) + 1) > two_64_f);
    assert!(Term::from(-(BigInt::from(1) << 2000usize)) < Term::from(-1e300));
    assert!(Term::from(BigInt::from(1) << 2000usize) > Term::from(1e300));
    // Big integers against small ones.
    assert!(Term::from(i64::MAX) < Term::from(u64::MAX));
    assert!(Term::from(i64::MIN) > Term::from(-(BigInt::from(1) << 64usize)));
    // -0.0 and 0.0 are == but not =:=.
    assert_eq!(Term::from(0.0).erl_cmp(&Term::from(-0.0)), Ordering::Equal);
    assert_ne!(Term::from(0.0), Term::from(-0.0));
    assert_eq!(Term::from(0).erl_cmp(&Term::from(-0.0)), Ordering::Equal);
}

#[test]
fn a_bignum_holding_a_small_value_equals_the_small_integer_and_hashes_alike() {
    let small = Term::Int(5);
    let big = Term::BigInt(BigInt::from(5));
    assert_eq!(small, big);
    assert_eq!(hash(&small), hash(&big));
}

#[test]
fn map_keys_put_every_integer_before_every_float() {
    // maps:keys(#{5 => a, 1.0 => b, 1 => c, a => d}) =:= [1, 5, 1.0, a]
    let m = term!(#{5 => a, 1.0 => b, 1 => c, a => d});
    let keys: Vec<&Term> = m.as_map().unwrap().iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            &Term::from(1),
            &Term::from(5),
            &Term::from(1.0),
            &Term::atom("a")
        ]
    );
    // Maps compare by size, then keys, then values.
    assert!(term!(#{b => 1}) < term!(#{a => 1, b => 1}));
    assert!(term!(#{a => 2}) < term!(#{b => 1}));
    assert!(term!(#{a => 1}) < term!(#{a => 2}));
    // Keys are exact: #{1 => a} and #{1.0 => a} differ even to ==.
    assert_ne!(
        term!(#{1 => a}).erl_cmp(&term!(#{1.0 => a})),
        Ordering::Equal
    );
}

#[test]
fn lists_compare_cell_by_cell_and_improper_tails_as_terms() {
    assert!(Term::nil() < term!([0]));
    assert!(term!([1, 2]) < term!([1, 3]));
    assert!(term!([1, 2]) < term!([1, 2, 0]));
    // [1|2] vs [1,2]: tails 2 and [2]; a number is less than a list.
    assert!(term!([1 | 2]) < term!([1, 2]));
    // [1|z] vs [1]: tails z and []; an atom is less than [].
    assert!(term!([1 | z]) < term!([1]));
    // A hand-built, non-normalised improper list equals its normal form.
    let odd = Term::ImproperList(vec![Term::from(1)], Box::new(term!([2, 3])));
    assert_eq!(odd, term!([1, 2, 3]));
    assert_eq!(hash(&odd), hash(&term!([1, 2, 3])));
}

#[test]
fn tuples_compare_by_size_first() {
    assert!(term!({ z }) < term!({a, a}));
    assert!(term!({a, b}) < term!({a, c}));
}

#[test]
fn bitstrings_compare_bit_by_bit_a_prefix_first() {
    let bits3 = Term::from(BitBinary::new(vec![0b0010_0000], 3).unwrap()); // <<1:3>>
    assert!(bits3 > Term::binary(vec![1])); // erl: <<1:3>> < <<1>> is false
    assert!(bits3 < Term::binary(vec![32])); // erl: <<32>> < <<1:3>> is false
    assert!(Term::binary(vec![]) < Term::from(BitBinary::new(vec![0], 1).unwrap()));
    assert!(Term::binary(*b"abc") < Term::binary(*b"abd"));
    assert!(Term::binary(*b"ab") < Term::binary(*b"abc"));
}

#[test]
fn pids_compare_by_serial_then_number_then_node() {
    assert!(pid("b@h", 0, 0, 1) < pid("a@h", 1, 0, 1));
    assert!(pid("a@h", 0, 0, 2) < pid("a@h", 1, 0, 1));
    assert!(pid("a@h", 1, 0, 1) < pid("a@h", 0, 1, 1));
    assert!(pid("a@h", 1, 0, 1) < pid("b@h", 1, 0, 1));
    assert!(pid("a@h", 1, 0, 2) < pid("b@h", 1, 0, 1));
    assert!(pid("a@h", 1, 0, 1) < pid("a@h", 1, 0, 2));
}

#[test]
fn references_compare_by_node_then_creation_then_words_as_a_number() {
    assert!(reference("a@h", 1, &[1, 0, 0]) < reference("b@h", 1, &[0, 0, 0]));
    assert!(reference("a@h", 2, &[0, 0, 0]) < reference("b@h", 1, &[0, 0, 0]));
    assert!(reference("a@h", 1, &[1, 0, 0]) < reference("a@h", 1, &[0, 1, 0]));
    assert!(reference("a@h", 1, &[0, 0, 5]) < reference("a@h", 2, &[0, 0, 1]));
    assert!(reference("a@h", 1, &[5]) < reference("a@h", 1, &[1, 1]));
    // erl: [0,0,2] < [0,0,0,1], [0,0,0] < [7], and [0,0,0] =:= [0].
    assert!(reference("a@h", 1, &[0, 0, 2]) < reference("a@h", 1, &[0, 0, 0, 1]));
    assert!(reference("a@h", 1, &[0, 0, 0]) < reference("a@h", 1, &[7]));
    assert!(reference("a@h", 1, &[1, 0, 0, 0]) == reference("a@h", 1, &[1]));
    assert_eq!(
        hash(&reference("a@h", 1, &[1, 0, 0, 0])),
        hash(&reference("a@h", 1, &[1]))
    );
}

fn port(node: &str, id: u64, creation: u32) -> Term {
    Term::from(ember_term::Port {
        node: Atom::new(node),
        id,
        creation,
    })
}

#[test]
fn ports_compare_by_node_then_creation_then_number() {
    assert!(port("a@h", 2, 1) < port("b@h", 1, 1));
    assert!(port("a@h", 1, 2) < port("b@h", 1, 1));
    assert!(port("a@h", 2, 1) < port("a@h", 1, 2));
    assert!(port("a@h", 1, 1) < port("a@h", 2, 1));
}

#[test]
fn export_funs_compare_by_module_function_arity() {
    let export = |m: &str, f: &str, arity: u8| {
        Term::from(Fun::Export {
            module: Atom::new(m),
            function: Atom::new(f),
            arity,
        })
    };
    assert!(export("lists", "filter", 2) < export("lists", "map", 2));
    assert!(export("a", "a", 2) < export("a", "b", 1));
    assert!(export("a", "b", 1) < export("a", "b", 2));
}

#[test]
fn sorting_agrees_with_erl_cmp() {
    let mut v = [
        term!([a]),
        Term::from(2.0),
        Term::atom("b"),
        Term::from(2),
        term!({ 1 }),
        Term::from(1.5),
        Term::binary(*b"x"),
        Term::nil(),
    ];
    v.sort();
    for pair in v.windows(2) {
        assert_ne!(
            pair[0].erl_cmp(&pair[1]),
            Ordering::Greater,
            "{} then {}",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(v[1], Term::from(2));
    assert_eq!(v[2], Term::from(2.0));
}
