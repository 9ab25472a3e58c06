//! Feeds arbitrary frames (each prefixed by a 2-byte length in the input) to
//! one connection's fragment reassembler and atom cache; nothing may panic,
//! and whatever message comes out must encode.
#![no_main]

use ember_term::dist::{encode_message, AtomCache, Fragments, SenderAtomCache};
use ember_term::DecodeLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    let mut cache = AtomCache::new();
    let mut fragments = Fragments::new(1 << 20, 8);
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        rest = &rest[2 + len..];
        if let Ok(Some(m)) = fragments.push(frame, &mut cache, &limits) {
            encode_message(&m.control, m.payload.as_ref(), &mut SenderAtomCache::new())
                .expect("a decoded message encodes");
        }
    }
});
