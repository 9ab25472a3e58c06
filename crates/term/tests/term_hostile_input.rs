//! Hostile input: every truncation of valid encodings, length prefixes that
//! lie (4 GiB), nesting a million deep, bombs. Each must be an error with an
//! offset, quickly and with bounded memory, and never a panic or a stack
//! overflow. A counting allocator measures the largest single allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use ember_term::{
    decode, decode_with, encode, encode_compressed, term, Atom, BigInt, BitBinary, Closure,
    DecodeErrorKind, DecodeLimits, Fun, Pid, Port, Reference, Term,
};

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = TOTAL.try_with(|t| t.set(t.get() + size));
}

// SAFETY: forwards every call to `System` unchanged; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`, returning the largest single allocation it made on this thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get))
}

/// Runs `f`, returning the bytes it allocated on this thread, in total.
fn total_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    TOTAL.with(|t| t.set(0));
    let r = f();
    (r, TOTAL.with(Cell::get))
}

fn node() -> Atom {
    Atom::new("n@h")
}

/// Valid encodings of every kind of term.
fn samples() -> Vec<Vec<u8>> {
    let pid = Pid {
        node: node(),
        id: 1,
        serial: 2,
        creation: 3,
    };
    let terms = vec![
        term!({ok, [1, 2, 3], "text", #{a => 1.5, (-7) => [x | y]}}),
        Term::from(BigInt::from(-1) << 300usize),
        Term::from(i64::MIN),
        Term::from(BitBinary::new(vec![1, 2, 0xf0], 4).unwrap()),
        Term::from(pid.clone()),
        Term::from(Port {
            node: node(),
            id: 1 << 40,
            creation: 1,
        }),
        Term::from(Reference {
            node: node(),
            creation: 9,
            ids: vec![1, 2, 3],
        }),
        Term::from(Fun::Export {
            module: node(),
            function: Atom::new("f"),
            arity: 2,
        }),
        Term::from(Fun::Closure(Box::new(Closure {
            arity: 0,
            uniq: [1; 16],
            index: 1,
            module: Atom::new("m"),
            old_index: 1,
            old_uniq: 99_999_999,
            pid,
            free_vars: vec![term!([1 | 2]), Term::atom("é")],
        }))),
        Term::tuple((0..300).map(Term::from)),
        Term::list((0..10).map(|i| Term::from(i * 1000))),
        Term::atom(&"ü".repeat(200)),
    ];
    let mut out: Vec<Vec<u8>> = terms.iter().map(|t| encode(t).unwrap()).collect();
    out.push(encode_compressed(&Term::list((0..500).map(|_| Term::atom("abc"))), 6).unwrap());
    out.push({
        let mut old = vec![131, 99];
        old.extend_from_slice(b"1.5e0");
        old.resize(33, 0);
        old
    });
    out
}

#[test]
fn every_truncation_of_a_valid_encoding_is_an_error_within_the_input() {
    for bytes in samples() {
        assert!(decode(&bytes).is_ok());
        for n in 0..bytes.len() {
            let err = decode(&bytes[..n]).expect_err("a strict prefix never decodes");
            let compressed = bytes.get(1) == Some(&80);
            assert!(
                err.offset <= n || err.in_compressed || compressed,
                "offset {} past the {n} bytes given: {err}",
                err.offset
            );
        }
    }
}

#[test]
fn length_prefixes_of_4_gib_fail_at_once_without_allocating_for_them() {
    let huge = [255, 255, 255, 255];
    let cases: Vec<Vec<u8>> = vec![
        [&[131, 108][..], &huge, &[97, 1]].concat(), // LIST_EXT
        [&[131, 105][..], &huge, &[97, 1]].concat(), // LARGE_TUPLE_EXT
        [&[131, 116][..], &huge, &[97, 1, 97, 2]].concat(), // MAP_EXT
        [&[131, 109][..], &huge, &[1, 2, 3]].concat(), // BINARY_EXT
        [&[131, 77][..], &huge, &[3, 1, 2]].concat(), // BIT_BINARY_EXT
        [&[131, 111][..], &huge, &[0, 1]].concat(),  // LARGE_BIG_EXT
        [&[131, 80][..], &huge, &[0x78, 0x9c]].concat(), // compressed, 4 GiB declared
        vec![131, 107, 255, 255, 1],                 // STRING_EXT, 64 KiB
        vec![131, 118, 255, 255, b'a'],              // ATOM_UTF8_EXT, 64 KiB
        vec![131, 90, 255, 255, 119, 1, b'n', 0, 0, 0, 0], // reference of 65,535 words
        {
            // A fun claiming 4 G free variables.
            let mut f = vec![131, 112, 0, 0, 0, 60, 0];
            f.extend([0; 16]);
            f.extend([0, 0, 0, 0]);
            f.extend(huge);
            f.extend([119, 1, b'm', 97, 0, 97, 0]);
            f.extend([88, 119, 1, b'n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            f
        },
    ];
    for bytes in cases {
        let started = Instant::now();
        let (result, largest) = largest_allocation(|| decode(&bytes));
        let err = result.expect_err("a lying length prefix is an error");
        // Microseconds; seconds of slack for a busy machine, against a
        // decoder that would walk the claimed length.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{err} took too long"
        );
        assert!(
            largest < 64 * 1024,
            "{err}: allocated {largest} bytes at once"
        );
        assert!(err.offset <= bytes.len(), "{err}");
    }
}

#[test]
fn counts_that_the_input_could_back_still_preallocate_little() {
    // A tuple of 100,000 elements, all present: fine, and the vector grows
    // with the elements decoded rather than from the count.
    let mut bytes = vec![131, 105, 0, 1, 134, 160];
    bytes.extend(std::iter::repeat_n(106, 100_000));
    assert_eq!(decode(&bytes).unwrap().as_tuple().unwrap().len(), 100_000);
    // 100 nested tuples that each claim 65,536 elements, which the input
    // could back: without the cap, each level would reserve room for all of
    // them (100 times 3 MiB); with it, only the innermost, which really
    // decodes 65,536 elements, grows that large.
    let mut nested = vec![131];
    for _ in 0..100 {
        nested.extend([105, 0, 1, 0, 0]);
    }
    nested.extend(std::iter::repeat_n(106, 70_000));
    let (result, total) = total_allocation(|| decode(&nested));
    assert!(result.is_err());
    assert!(total < 32 * 1024 * 1024, "allocated {total} bytes in all");
}

/// The stack the depth tests run on: Rust's default for spawned threads
/// (what the runtime's workers get). Debug builds need most of it at the
/// default depth limit; release builds a tenth.
const STACK: usize = 2 * 1024 * 1024;

fn nested(open: &[u8], leaf: &[u8], close: &[u8], depth: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + depth * (open.len() + close.len()) + leaf.len());
    bytes.push(131);
    for _ in 0..depth {
        bytes.extend_from_slice(open);
    }
    bytes.extend_from_slice(leaf);
    for _ in 0..depth {
        bytes.extend_from_slice(close);
    }
    bytes
}

#[test]
fn a_million_nested_lists_tuples_or_maps_are_too_deep_not_a_stack_overflow() {
    let million = 1_000_000;
    let cases = [
        nested(&[108, 0, 0, 0, 1], &[106], &[106], million), // [[[...]]]
        nested(&[104, 1], &[97, 0], &[], million),           // {{{...}}}
        nested(&[116, 0, 0, 0, 1, 97, 0], &[97, 0], &[], million), // #{0 => #{0 => ...}}
    ];
    for bytes in cases {
        let handle = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || decode(&bytes).map(|_| ()))
            .unwrap();
        let err = handle
            .join()
            .expect("no stack overflow")
            .expect_err("too deep");
        assert_eq!(err.kind, DecodeErrorKind::TooDeep { limit: 512 });
    }
}

#[test]
fn a_million_chained_list_tails_decode_flat() {
    // [0 | [0 | [0 | ... []]]] written as a million nested LIST_EXT tails:
    // one flat list, no depth used.
    let mut bytes = vec![131];
    for _ in 0..1_000_000 {
        bytes.extend([108, 0, 0, 0, 1, 97, 0]);
    }
    bytes.push(106);
    let t = decode(&bytes).unwrap();
    assert_eq!(t.as_list().unwrap().len(), 1_000_000);
}

#[test]
fn terms_at_the_depth_limit_decode_on_a_small_stack() {
    let limit = DecodeLimits::default().max_depth;
    let bytes = nested(&[104, 1], &[97, 0], &[], limit);
    let handle = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let t = decode(&bytes).unwrap();
            // Encoding, comparing and dropping recurse too.
            assert_eq!(encode(&t).unwrap(), bytes);
            assert_eq!(t, t.clone());
        })
        .unwrap();
    handle.join().expect("no stack overflow");
    let too_deep = nested(&[104, 1], &[97, 0], &[], limit + 1);
    assert!(decode(&too_deep).is_err());
}

#[test]
fn limits_are_configurable() {
    let mut limits = DecodeLimits::default();
    limits.max_depth = 2;
    limits.max_bignum_bytes = 8;
    limits.max_decompressed_size = 100;
    assert!(decode_with(&[131, 104, 1, 104, 1, 104, 0], &limits).is_ok());
    assert!(decode_with(&[131, 104, 1, 104, 1, 104, 1, 104, 0], &limits).is_err());
    let mut big = vec![131, 110, 9, 0];
    big.extend([1; 9]);
    assert_eq!(
        decode_with(&big, &limits).unwrap_err().kind,
        DecodeErrorKind::BignumTooLarge { bytes: 9, limit: 8 }
    );
    assert!(decode(&big).is_ok());
    let packed = encode_compressed(&Term::binary(vec![0; 1000]), 6).unwrap();
    assert_eq!(packed[1], 80);
    assert_eq!(
        decode_with(&packed, &limits).unwrap_err().kind,
        DecodeErrorKind::DecompressedTooLarge {
            size: 1005,
            limit: 100
        }
    );
}

#[test]
fn a_compressed_term_that_inflates_past_its_declared_size_is_refused() {
    // Declares 10 bytes; inflates to 1,000,005.
    let mut packed = encode_compressed(&Term::binary(vec![0; 1_000_000]), 9).unwrap();
    packed[2..6].copy_from_slice(&10u32.to_be_bytes());
    let (result, largest) = largest_allocation(|| decode(&packed));
    assert_eq!(result.unwrap_err().kind, DecodeErrorKind::BadCompressed);
    assert!(largest < 64 * 1024, "allocated {largest} bytes at once");
    // A compressed term inside a term.
    assert_eq!(
        decode(&[131, 104, 1, 80, 0, 0, 0, 1]).unwrap_err().kind,
        DecodeErrorKind::NestedCompressed
    );
}

#[test]
fn errors_say_what_and_where() {
    let err = decode(&[131, 104, 2, 97, 1, 100, 0, 5, b'a']).unwrap_err();
    assert_eq!(err.offset, 8);
    assert_eq!(
        err.to_string(),
        "input ends early: 5 bytes needed, 1 left at byte 8"
    );
    let err = decode(&[131, 88, 97, 1]).unwrap_err();
    assert_eq!(err.offset, 2);
    assert_eq!(err.to_string(), "expected an atom, found tag 97 at byte 2");
    let err = decode(&[131, 119, 2, 0xff, 0xfe]).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::AtomNotUtf8);
    let mut long = vec![131, 100, 1, 0];
    long.extend([b'a'; 256]);
    assert_eq!(
        decode(&long).unwrap_err().kind,
        DecodeErrorKind::AtomTooLong { chars: 256 }
    );
}
