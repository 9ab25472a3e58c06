//! Reading requests: query parameters.

use std::collections::HashMap;

use crate::Request;

/// The request's query parameters, percent-decoded (`+` is a space). A key
/// given twice keeps its last value; a key without `=` maps to `""`; bytes
/// that do not decode to UTF-8 are replaced by `U+FFFD`.
///
/// ```
/// let req = http::Request::get("/fact?n=10&name=a%20b+c").body(bytes::Bytes::new()).unwrap();
/// let q = ember_web::query(&req);
/// assert_eq!(q["n"], "10");
/// assert_eq!(q["name"], "a b c");
/// ```
pub fn query(req: &Request) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let Some(query) = req.uri().query() else {
        return params;
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(decode(key), decode(value));
    }
    params
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn percent_escapes_and_plus_decode_and_broken_escapes_stay() {
        assert_eq!(decode("a%2Fb+c"), "a/b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%41"), "A");
    }
}
