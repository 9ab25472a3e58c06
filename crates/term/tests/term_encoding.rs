//! Exact bytes for every tag, written by hand from the erts guide's
//! "External Term Format" chapter (and checked against OTP 25's
//! `term_to_binary(T, [{minor_version, 2}, deterministic])`), and round trips.

use ember_term::{
    decode, encode, encode_compressed, term, Atom, BitBinary, Closure, DecodeErrorKind, Fun, Pid,
    Port, Reference, Term,
};
use num_bigint::BigInt;

fn node() -> Atom {
    Atom::new("a@h")
}

/// Encodes to exactly `bytes`, and `bytes` decodes back to the term.
#[track_caller]
fn exact(term: Term, bytes: &[u8]) {
    assert_eq!(encode(&term).unwrap(), bytes, "encoding {term}");
    assert_eq!(decode(bytes).unwrap(), term, "decoding {bytes:?}");
}

/// `bytes` (an older or alternative encoding) decodes to `term`.
#[track_caller]
fn reads(bytes: &[u8], term: Term) {
    assert_eq!(decode(bytes).unwrap(), term, "decoding {bytes:?}");
}

#[test]
fn atoms_encode_as_utf8_atoms_and_all_four_atom_tags_decode() {
    exact(Term::atom("ok"), &[131, 119, 2, b'o', b'k']);
    exact(Term::atom(""), &[131, 119, 0]);
    exact(Term::atom("é"), &[131, 119, 2, 0xc3, 0xa9]);
    let long = "x".repeat(255);
    let mut bytes = vec![131, 119, 255];
    bytes.extend_from_slice(long.as_bytes());
    exact(Term::atom(&long), &bytes);
    // 255 two-byte characters: 510 bytes, ATOM_UTF8_EXT with a 16-bit length.
    let wide = "é".repeat(255);
    let mut bytes = vec![131, 118, 0x01, 0xfe];
    bytes.extend_from_slice(wide.as_bytes());
    exact(Term::atom(&wide), &bytes);
    // Latin-1 ATOM_EXT and SMALL_ATOM_EXT (OTP 25's default), and ATOM_UTF8_EXT.
    reads(&[131, 100, 0, 2, b'o', b'k'], Term::atom("ok"));
    reads(&[131, 115, 1, 0xe9], Term::atom("é"));
    reads(&[131, 100, 0, 1, 0xe9], Term::atom("é"));
    reads(&[131, 118, 0, 2, b'o', b'k'], Term::atom("ok"));
}

#[test]
fn booleans_are_atoms() {
    exact(Term::from(true), &[131, 119, 4, b't', b'r', b'u', b'e']);
    assert_eq!(Term::from(false), Term::atom("false"));
}

#[test]
fn integers_take_the_smallest_erlang_tag() {
    exact(Term::from(0), &[131, 97, 0]);
    exact(Term::from(255), &[131, 97, 255]);
    exact(Term::from(256), &[131, 98, 0, 0, 1, 0]);
    exact(Term::from(-1), &[131, 98, 255, 255, 255, 255]);
    exact(Term::from(i32::MIN), &[131, 98, 128, 0, 0, 0]);
    exact(Term::from(1i64 << 31), &[131, 110, 4, 0, 0, 0, 0, 128]);
    exact(
        Term::from(-(1i64 << 40)),
        &[131, 110, 6, 1, 0, 0, 0, 0, 0, 1],
    );
    exact(
        Term::from(i64::MIN),
        &[131, 110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128],
    );
    exact(
        Term::from(1u128 << 64),
        &[131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    // 2^2040 needs 256 bytes: LARGE_BIG_EXT.
    let big = BigInt::from(1) << 2040usize;
    let mut bytes = vec![131, 111, 0, 0, 1, 0, 0];
    bytes.extend(std::iter::repeat_n(0, 255));
    bytes.push(1);
    exact(Term::from(big.clone()), &bytes);
    exact(Term::from(-big), &{
        let mut b = bytes.clone();
        b[6] = 1;
        b
    });
}

#[test]
fn bignums_inside_i64_decode_as_small_integers() {
    reads(&[131, 110, 1, 0, 5], Term::Int(5));
    reads(&[131, 110, 0, 0], Term::Int(0));
    reads(&[131, 111, 0, 0, 0, 2, 1, 1, 0], Term::Int(-1));
    assert!(matches!(
        decode(&[131, 110, 1, 0, 5]).unwrap(),
        Term::Int(5)
    ));
}

#[test]
fn floats_encode_as_new_float_ext_and_old_float_ext_decodes() {
    exact(Term::from(1.0), &[131, 70, 63, 240, 0, 0, 0, 0, 0, 0]);
    exact(Term::from(-0.0), &[131, 70, 128, 0, 0, 0, 0, 0, 0, 0]);
    let mut old = vec![131, 99];
    old.extend_from_slice(b"1.25000000000000000000e+01");
    old.resize(2 + 31, 0);
    reads(&old, Term::from(12.5));
    assert!(encode(&Term::Float(f64::NAN)).is_err());
    assert_eq!(
        decode(&[131, 70, 127, 240, 0, 0, 0, 0, 0, 0])
            .unwrap_err()
            .kind,
        DecodeErrorKind::BadFloat
    );
}

#[test]
fn tuples_small_and_large() {
    exact(Term::tuple([]), &[131, 104, 0]);
    exact(term!({ok, 1}), &[131, 104, 2, 119, 2, b'o', b'k', 97, 1]);
    let big = Term::tuple((0..256).map(|_| Term::nil()));
    let mut bytes = vec![131, 105, 0, 0, 1, 0];
    bytes.extend(std::iter::repeat_n(106, 256));
    exact(big, &bytes);
}

#[test]
fn lists_strings_and_improper_lists() {
    exact(Term::nil(), &[131, 106]);
    exact(term!([1, 2, 3]), &[131, 107, 0, 3, 1, 2, 3]);
    exact(
        term!([1, 2, 3, 300]),
        &[
            131, 108, 0, 0, 0, 4, 97, 1, 97, 2, 97, 3, 98, 0, 0, 1, 44, 106,
        ],
    );
    exact(
        term!([a | b]),
        &[131, 108, 0, 0, 0, 1, 119, 1, b'a', 119, 1, b'b'],
    );
    exact(
        term!([1, 2 | 3]),
        &[131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 97, 3],
    );
    // A list of 65,536 bytes is too long for STRING_EXT.
    let long = Term::list((0..65536).map(|i| Term::from(i % 256)));
    let bytes = encode(&long).unwrap();
    assert_eq!(bytes[1], 108);
    assert_eq!(decode(&bytes).unwrap(), long);
    // Nested LIST_EXT tails and a STRING_EXT tail splice into one list.
    reads(
        &[
            131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 107, 0, 1, 3,
        ],
        term!([1, 2, 3]),
    );
    // LIST_EXT of no elements with a tail is just the tail.
    reads(&[131, 108, 0, 0, 0, 0, 97, 7], Term::from(7));
    assert_eq!(
        Term::improper_list([Term::from(1)], term!([2, 3])),
        term!([1, 2, 3])
    );
}

#[test]
fn binaries_and_bitstrings() {
    exact(Term::binary(*b"hi"), &[131, 109, 0, 0, 0, 2, b'h', b'i']);
    exact(Term::binary(vec![]), &[131, 109, 0, 0, 0, 0]);
    let bits = BitBinary::new(vec![0xff], 3).unwrap();
    assert_eq!(bits.bytes(), [0xe0]);
    exact(Term::from(bits), &[131, 77, 0, 0, 0, 1, 3, 0xe0]);
    // Unused bits are cleared, as erl does.
    reads(
        &[131, 77, 0, 0, 0, 1, 3, 0xff],
        Term::from(BitBinary::new(vec![0xe0], 3).unwrap()),
    );
    reads(&[131, 77, 0, 0, 0, 1, 8, 7], Term::binary(vec![7]));
    reads(&[131, 77, 0, 0, 0, 0, 0], Term::binary(vec![]));
    for bad in [
        &[131, 77, 0, 0, 0, 0, 8][..],
        &[131, 77, 0, 0, 0, 1, 0, 1],
        &[131, 77, 0, 0, 0, 1, 9, 1],
    ] {
        assert!(
            matches!(
                decode(bad).unwrap_err().kind,
                DecodeErrorKind::BadBitCount { .. }
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn maps_encode_in_map_key_order_and_reject_duplicate_keys() {
    // #{5 => a, 1.0 => b}: every integer key before every float key.
    let m = Term::map([
        (Term::from(1.0), Term::atom("b")),
        (Term::from(5), Term::atom("a")),
    ]);
    exact(
        m,
        &[
            131, 116, 0, 0, 0, 2, 97, 5, 119, 1, b'a', 70, 63, 240, 0, 0, 0, 0, 0, 0, 119, 1, b'b',
        ],
    );
    // Entries out of order on the wire are sorted.
    reads(
        &[
            131, 116, 0, 0, 0, 2, 119, 1, b'b', 97, 2, 119, 1, b'a', 97, 1,
        ],
        term!(#{a => 1, b => 2}),
    );
    assert_eq!(
        decode(&[131, 116, 0, 0, 0, 2, 97, 1, 97, 2, 97, 1, 97, 3])
            .unwrap_err()
            .kind,
        DecodeErrorKind::DuplicateMapKey
    );
    exact(Term::map([]), &[131, 116, 0, 0, 0, 0]);
}

#[test]
fn pids_ports_and_references_of_other_nodes() {
    let pid = Pid {
        node: node(),
        id: 9,
        serial: 1,
        creation: 0x0102_0304,
    };
    exact(
        Term::from(pid.clone()),
        &[
            131, 88, 119, 3, b'a', b'@', b'h', 0, 0, 0, 9, 0, 0, 0, 1, 1, 2, 3, 4,
        ],
    );
    reads(
        &[
            131, 103, 100, 0, 3, b'a', b'@', b'h', 0, 0, 0, 9, 0, 0, 0, 1, 4,
        ],
        Term::from(Pid { creation: 4, ..pid }),
    );

    let port = Port {
        node: node(),
        id: 5,
        creation: 1,
    };
    exact(
        Term::from(port.clone()),
        &[131, 89, 119, 3, b'a', b'@', b'h', 0, 0, 0, 5, 0, 0, 0, 1],
    );
    let wide = Port {
        id: 1 << 32,
        ..port.clone()
    };
    exact(
        Term::from(wide),
        &[
            131, 120, 119, 3, b'a', b'@', b'h', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1,
        ],
    );
    reads(
        &[131, 102, 100, 0, 3, b'a', b'@', b'h', 0, 0, 0, 5, 1],
        Term::from(port),
    );

    let r = Reference {
        node: node(),
        creation: 1,
        ids: vec![1, 2, 3],
    };
    exact(
        Term::from(r.clone()),
        &[
            131, 90, 0, 3, 119, 3, b'a', b'@', b'h', 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
        ],
    );
    reads(
        &[
            131, 114, 0, 3, 100, 0, 3, b'a', b'@', b'h', 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
        ],
        Term::from(r),
    );
    reads(
        &[131, 101, 100, 0, 3, b'a', b'@', b'h', 0, 0, 0, 7, 2],
        Term::from(Reference {
            node: node(),
            creation: 2,
            ids: vec![7],
        }),
    );
    // Five words are allowed (OTP 24+ pid references), six are not.
    let mut five = vec![131, 90, 0, 5, 119, 3, b'a', b'@', b'h', 0, 0, 0, 1];
    five.extend(std::iter::repeat_n(0, 20));
    assert!(decode(&five).is_ok());
    let mut six = vec![131, 90, 0, 6, 119, 3, b'a', b'@', b'h', 0, 0, 0, 1];
    six.extend(std::iter::repeat_n(0, 24));
    assert_eq!(
        decode(&six).unwrap_err().kind,
        DecodeErrorKind::BadReferenceLength(6)
    );
}

#[test]
fn export_funs_round_trip() {
    exact(
        Term::from(Fun::Export {
            module: Atom::new("erlang"),
            function: Atom::new("abs"),
            arity: 1,
        }),
        &[
            131, 113, 119, 6, b'e', b'r', b'l', b'a', b'n', b'g', 119, 3, b'a', b'b', b's', 97, 1,
        ],
    );
}

#[test]
fn closures_round_trip_byte_for_byte() {
    let closure = Term::from(Fun::Closure(Box::new(Closure {
        arity: 1,
        uniq: [7; 16],
        index: 42,
        module: Atom::new("m"),
        old_index: 42,
        old_uniq: 50_000_000,
        pid: Pid {
            node: node(),
            id: 1,
            serial: 0,
            creation: 3,
        },
        free_vars: vec![Term::from(1), Term::atom("x")],
    })));
    let mut body = vec![1];
    body.extend([7; 16]);
    body.extend([0, 0, 0, 42, 0, 0, 0, 2, 119, 1, b'm', 97, 42, 98]);
    body.extend(50_000_000u32.to_be_bytes());
    body.extend([
        88, 119, 3, b'a', b'@', b'h', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3,
    ]);
    body.extend([97, 1, 119, 1, b'x']);
    let mut bytes = vec![131, 112];
    bytes.extend((body.len() as u32 + 4).to_be_bytes());
    bytes.extend(body);
    exact(closure, &bytes);
    // A wrong size field is an error, not a misparse.
    let mut bad = bytes.clone();
    bad[5] += 1;
    assert!(matches!(
        decode(&bad).unwrap_err().kind,
        DecodeErrorKind::BadFunSize { .. }
    ));
}

#[test]
fn compressed_terms_decode_and_encode_when_smaller() {
    let t = Term::list((0..1000).map(|_| Term::atom("hello")));
    let packed = encode_compressed(&t, 6).unwrap();
    assert_eq!(packed[1], 80);
    assert!(packed.len() < encode(&t).unwrap().len() / 10);
    assert_eq!(decode(&packed).unwrap(), t);
    // Too small to gain: left plain.
    assert_eq!(
        encode_compressed(&Term::atom("ok"), 6).unwrap(),
        encode(&Term::atom("ok")).unwrap()
    );
}

#[test]
fn trailing_bytes_and_bad_versions_are_errors() {
    let err = decode(&[131, 97, 1, 0]).unwrap_err();
    assert_eq!(
        (err.offset, err.kind),
        (3, DecodeErrorKind::TrailingBytes(1))
    );
    assert_eq!(
        decode(&[130, 97, 1]).unwrap_err().kind,
        DecodeErrorKind::BadVersion(130)
    );
    assert_eq!(
        decode(&[131, 82, 0]).unwrap_err().kind,
        DecodeErrorKind::AtomCacheRef(0)
    );
    assert_eq!(
        decode(&[131, 117]).unwrap_err().kind,
        DecodeErrorKind::UnknownTag(117)
    );
}

#[test]
fn decode_prefix_reads_terms_one_after_another() {
    let mut bytes = encode(&term!({2, a, b})).unwrap();
    bytes.extend(encode(&Term::from("msg")).unwrap());
    let limits = ember_term::DecodeLimits::default();
    let (ctrl, used) = ember_term::decode_prefix(&bytes, &limits).unwrap();
    assert_eq!(ctrl, term!({2, a, b}));
    assert_eq!(decode(&bytes[used..]).unwrap(), Term::from("msg"));
}

#[test]
fn display_prints_erlang_syntax() {
    let t = term!({ok, [1 | x], #{"k" => (-2)}, q});
    assert_eq!(t.to_string(), "{ok,[1|x],#{<<107>> => -2},q}");
    assert_eq!(Term::atom("EXIT").to_string(), "'EXIT'");
    assert_eq!(Term::atom("end").to_string(), "'end'");
    assert_eq!(Term::atom("a@h").to_string(), "a@h");
    assert_eq!(Term::from(1e300).to_string(), "1.0e300");
    assert_eq!(Term::from(2.5).to_string(), "2.5");
    assert_eq!(
        Term::from(BitBinary::new(vec![1, 0xe0], 3).unwrap()).to_string(),
        "<<1,7:3>>"
    );
}

#[test]
fn conversions_and_accessors() {
    assert_eq!(Term::from((1, "a", true)).as_tuple().unwrap().len(), 3);
    assert_eq!(Term::from(u64::MAX).as_int(), None);
    assert_eq!(
        Term::from(u64::MAX).as_bigint(),
        Some(BigInt::from(u64::MAX))
    );
    assert_eq!(Term::from(vec![1, 2]), term!([1, 2]));
    assert_eq!(Term::from(vec![1u8, 2]), Term::binary(vec![1, 2]));
    assert_eq!(Term::from(None::<i32>), Term::atom("nil"));
    assert_eq!(i64::try_from(Term::from(3)).unwrap(), 3);
    assert_eq!(String::try_from(Term::from("s")).unwrap(), "s");
    assert!(bool::try_from(Term::atom("maybe")).is_err());
    assert_eq!(Term::from("é").as_str(), Some("é"));
    assert!(Atom::try_new(&"x".repeat(256)).is_err());
    // A later entry replaces an earlier one, as in maps:from_list/1.
    let m = Term::map([
        (Term::atom("k"), Term::from(1)),
        (Term::atom("j"), Term::from(0)),
        (Term::atom("k"), Term::from(2)),
    ]);
    assert_eq!(m, term!(#{j => 0, k => 2}));
    assert_eq!(m.as_map().unwrap().len(), 2);
    let m = term!(#{a => 1});
    assert_eq!(m.as_map().unwrap().get_atom("a"), Some(&Term::from(1)));
}
