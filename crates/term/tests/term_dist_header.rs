//! The distribution header and fragments, from bytes written by hand after
//! the erts guide's "Distribution Header" section, and round trips through
//! the encoder.

use ember_term::dist::{decode_message, encode_message, AtomCache, Fragments, SenderAtomCache};
use ember_term::{term, DecodeErrorKind, DecodeLimits, Term};

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

#[test]
fn a_header_with_new_entries_fills_the_cache_and_later_headers_refer_to_it() {
    let mut cache = AtomCache::new();
    // Two new entries: 'ok' in segment 0 slot 5, 'error' in segment 1 slot 3.
    // Flag half-bytes: ref 0 = 0x8 (new, segment 0), ref 1 = 0x9 (new,
    // segment 1), then 0 (short atoms): bytes 0x98, 0x00.
    let first = [
        131, 68, 2, 0x98, 0x00, 5, 2, b'o', b'k', 3, 5, b'e', b'r', b'r', b'o',
        b'r', // header
        104, 2, 82, 0, 82, 1, // {ok, error}
    ];
    let m = decode_message(&first, &mut cache, &limits()).unwrap();
    assert_eq!(m.control, term!({ok, error}));
    assert_eq!(m.payload, None);
    assert_eq!(cache.get(5).unwrap().as_str(), "ok");
    assert_eq!(cache.get(256 + 3).unwrap().as_str(), "error");

    // One old entry (segment 1 slot 3): half-bytes 0x1 then 0: byte 0x01.
    let second = [131, 68, 1, 0x01, 3, 104, 1, 82, 0, 97, 7];
    let m = decode_message(&second, &mut cache, &limits()).unwrap();
    assert_eq!(m.control, term!({ error }));
    assert_eq!(m.payload, Some(Term::from(7)));
}

#[test]
fn long_atoms_take_two_length_bytes() {
    let mut cache = AtomCache::new();
    // One new entry, segment 0; last half-byte says LongAtoms: 0x8 | 0x1 << 4.
    let bytes = [131, 68, 1, 0x18, 9, 0, 2, b'h', b'i', 82, 0];
    let m = decode_message(&bytes, &mut cache, &limits()).unwrap();
    assert_eq!(m.control, Term::atom("hi"));
}

#[test]
fn references_to_empty_slots_or_missing_refs_are_errors() {
    let mut cache = AtomCache::new();
    let err = decode_message(&[131, 68, 1, 0x00, 3, 82, 0], &mut cache, &limits()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::AtomCacheRef(0));
    let err = decode_message(&[131, 68, 0, 82, 0], &mut cache, &limits()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::AtomCacheRef(0));
    assert_eq!(err.offset, 3);
    // Truncated flags.
    assert!(decode_message(&[131, 68, 4, 0x88], &mut cache, &limits()).is_err());
}

#[test]
fn encoded_messages_decode_and_repeat_atoms_as_one_byte() {
    let mut sender = SenderAtomCache::new();
    let mut receiver = AtomCache::new();
    let control = term!({6, (Term::atom("from")), (Term::atom("")), net_kernel});
    let payload = term!({(Term::atom("$gen_call")), [alias | x], {is_auth, (Term::atom("a@h"))}});
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let bytes = encode_message(&control, Some(&payload), &mut sender).unwrap();
        sizes.push(bytes.len());
        let m = decode_message(&bytes, &mut receiver, &limits()).unwrap();
        assert_eq!(m.control, control);
        assert_eq!(m.payload.as_ref(), Some(&payload));
    }
    assert!(sizes[1] < sizes[0], "{sizes:?}");
    assert_eq!(sizes[1], sizes[2]);
    // A message without atoms has an empty header.
    let bytes = encode_message(&term!({1, 2}), None, &mut sender).unwrap();
    assert_eq!(bytes, [131, 68, 0, 104, 2, 97, 1, 97, 2]);
}

/// Splits an encoded DIST_HEADER message into fragments of sequence `seq`;
/// `scratch` follows the sender's cache to find where the terms start.
fn fragment(message: &[u8], seq: u64, chunk: usize, scratch: &mut AtomCache) -> Vec<Vec<u8>> {
    let (_, start) = ember_term::dist::decode_header(message, scratch).unwrap();
    let data = &message[start..];
    let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
    let n = chunks.len() as u64;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = n - i as u64;
            let mut f = vec![131, if i == 0 { 69 } else { 70 }];
            f.extend(seq.to_be_bytes());
            f.extend(id.to_be_bytes());
            if i == 0 {
                f.extend(&message[2..start]);
            }
            f.extend(*c);
            f
        })
        .collect()
}

#[test]
fn interleaved_fragments_reassemble_per_sequence() {
    let mut sender = SenderAtomCache::new();
    let a = encode_message(
        &term!({2, x, y}),
        Some(&Term::binary(vec![7; 100])),
        &mut sender,
    )
    .unwrap();
    let b = encode_message(
        &term!({2, x, z}),
        Some(&Term::binary(vec![9; 50])),
        &mut sender,
    )
    .unwrap();
    let mut scratch = AtomCache::new();
    let fa = fragment(&a, 1, 30, &mut scratch);
    let fb = fragment(&b, 2, 30, &mut scratch);
    assert!(fa.len() >= 3 && fb.len() >= 2);
    let mut cache = AtomCache::new();
    let mut frags = Fragments::default();
    let mut done = Vec::new();
    let (mut ia, mut ib) = (fa.iter(), fb.iter());
    loop {
        let (x, y) = (ia.next(), ib.next());
        if x.is_none() && y.is_none() {
            break;
        }
        for f in [x, y].into_iter().flatten() {
            if let Some(m) = frags.push(f, &mut cache, &limits()).unwrap() {
                done.push(m);
            }
        }
    }
    assert_eq!(done.len(), 2);
    assert!(done.iter().any(|m| m.control == term!({2, x, z})));
    assert!(done
        .iter()
        .any(|m| m.payload == Some(Term::binary(vec![7; 100]))));
}

#[test]
fn fragments_out_of_order_unknown_or_too_large_are_errors() {
    let mut sender = SenderAtomCache::new();
    let a = encode_message(
        &term!({2, x, y}),
        Some(&Term::binary(vec![7; 100])),
        &mut sender,
    )
    .unwrap();
    let fa = fragment(&a, 1, 30, &mut AtomCache::new());
    let mut cache = AtomCache::new();
    let mut frags = Fragments::default();
    // A continuation of a sequence never started.
    let err = frags.push(&fa[1], &mut cache, &limits()).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::Fragment(_)));
    // Skipping a fragment.
    assert!(frags.push(&fa[0], &mut cache, &limits()).unwrap().is_none());
    let err = frags.push(&fa[2], &mut cache, &limits()).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::Fragment(_)));
    // Too large.
    let mut small = Fragments::new(40, 4);
    let mut cache = AtomCache::new();
    assert!(small.push(&fa[0], &mut cache, &limits()).unwrap().is_none());
    let err = small.push(&fa[1], &mut cache, &limits()).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::MessageTooLarge { .. }));
}
