//! The fuzz target's property under plain `cargo test`: the seed corpus
//! (`fuzz/corpus/decode/`) decodes, and 100,000 deterministic mutations of it
//! (xorshift, fixed seed) never panic; whatever decodes round-trips. The
//! libFuzzer target is `fuzz/fuzz_targets/decode.rs`.

use std::path::PathBuf;

use ember_term::dist::{encode_message, AtomCache, Fragments, SenderAtomCache};
use ember_term::{decode, encode, DecodeLimits};

const CASES: usize = 100_000;

fn corpus() -> Vec<(String, Vec<u8>)> {
    seeds("decode")
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// What the fuzz target checks.
fn check(data: &[u8]) -> bool {
    match decode(data) {
        Ok(term) => {
            let bytes = encode(&term).expect("a decoded term encodes");
            let again = decode(&bytes).expect("an encoded term decodes");
            assert_eq!(again, term, "round trip of {data:?}");
            assert_eq!(encode(&again).unwrap(), bytes);
            assert_eq!(term.cmp(&term), std::cmp::Ordering::Equal);
            let _ = term.to_string();
            true
        }
        Err(e) => {
            assert!(
                e.offset <= data.len() || e.in_compressed,
                "{e} for {data:?}"
            );
            false
        }
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u8; 10] = [0, 1, 2, 7, 8, 0x7f, 0x80, 0xfe, 0xff, 131];

fn mutate(rng: &mut XorShift, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            3 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            4 if len > 0 => {
                input.remove(rng.below(len));
            }
            5 => input.truncate(rng.below(len + 1)),
            6 if len >= 4 => {
                // A length field that lies.
                let i = rng.below(len - 3);
                let v: [u8; 4] = match rng.below(4) {
                    0 => [0xff; 4],
                    1 => [0x7f, 0xff, 0xff, 0xff],
                    2 => [0, 1, 0, 0],
                    _ => (rng.next() as u32).to_be_bytes(),
                };
                input[i..i + 4].copy_from_slice(&v);
            }
            7 if len > 1 => {
                // Repeat a chunk (deeper nesting, longer lists).
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                let chunk = input[a..b].to_vec();
                for _ in 0..1 + rng.below(8) {
                    input.splice(a..a, chunk.iter().copied());
                }
            }
            _ if !other.is_empty() => {
                // Splice in part of another seed (past its version byte).
                let from = 1 + rng.below(other.len().saturating_sub(1));
                let to = (from + rng.below(32)).min(other.len());
                let at = rng.below(len + 1);
                input.splice(at..at, other[from..to].iter().copied());
            }
            _ => {}
        }
    }
}

#[test]
fn every_seed_in_the_fuzz_corpus_decodes_and_round_trips() {
    let corpus = corpus();
    assert!(corpus.len() >= 30, "only {} seeds", corpus.len());
    for (name, bytes) in &corpus {
        assert!(
            check(bytes),
            "seed {name} does not decode: {:?}",
            decode(bytes)
        );
    }
}

#[test]
fn a_hundred_thousand_mutations_of_the_corpus_never_panic() {
    let corpus = corpus();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    for _ in 0..CASES {
        let (_, seed) = &corpus[rng.below(corpus.len())];
        let (_, other) = &corpus[rng.below(corpus.len())];
        let mut input = seed.clone();
        mutate(&mut rng, &mut input, other);
        if check(&input) {
            decoded += 1;
        }
    }
    // The mutator must neither break everything nor change nothing.
    assert!(
        decoded > CASES / 100,
        "only {decoded} of {CASES} mutants decoded"
    );
    assert!(
        decoded < CASES * 9 / 10,
        "{decoded} of {CASES} mutants decoded"
    );
}

/// What the dist fuzz target checks; the number of messages that came out.
fn check_dist(data: &[u8]) -> usize {
    let limits = DecodeLimits::default();
    let mut cache = AtomCache::new();
    let mut fragments = Fragments::new(1 << 20, 8);
    let mut messages = 0;
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        rest = &rest[2 + len..];
        if let Ok(Some(m)) = fragments.push(frame, &mut cache, &limits) {
            encode_message(&m.control, m.payload.as_ref(), &mut SenderAtomCache::new())
                .expect("a decoded message encodes");
            messages += 1;
        }
    }
    messages
}

#[test]
fn every_seed_in_the_dist_corpus_yields_messages_and_mutations_never_panic() {
    let corpus = seeds("dist");
    assert!(corpus.len() >= 5, "only {} seeds", corpus.len());
    for (name, bytes) in &corpus {
        assert!(check_dist(bytes) > 0, "seed {name} yields no message");
    }
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..CASES / 5 {
        let (_, seed) = &corpus[rng.below(corpus.len())];
        let (_, other) = &corpus[rng.below(corpus.len())];
        let mut input = seed.clone();
        mutate(&mut rng, &mut input, other);
        check_dist(&input);
    }
}
