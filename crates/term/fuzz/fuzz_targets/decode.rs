//! Decodes arbitrary bytes. Whatever decodes must encode, decode back to the
//! same term, and encode to the same bytes again; nothing may panic.
#![no_main]

use ember_term::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(term) = decode(data) {
        let bytes = encode(&term).expect("a decoded term encodes");
        let again = decode(&bytes).expect("an encoded term decodes");
        assert_eq!(again, term);
        assert_eq!(encode(&again).expect("encodes"), bytes);
        assert_eq!(term.cmp(&term), std::cmp::Ordering::Equal);
        let _ = term.to_string();
    }
});
