//! Interop with a real Erlang node: `erl` encodes a list of representative
//! terms (`tests/erl/ember_term_interop.erl`), Rust decodes them, checks the
//! values it knows, re-encodes them byte for byte, and `erl` decodes Rust's
//! bytes and compares them with the originals (`=:=`).
//!
//! `erl` must be installed (`scripts/test` installs `erlang-base` for its
//! full run). Without it this test fails, unless `EMBER_TERM_SKIP_ERL` is set
//! (`scripts/test --quick` sets it when `erl` is missing, and says so).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_term::{decode, encode, term, BigInt, BitBinary, Fun, Term};

const DEADLINE: Duration = Duration::from_secs(120);

fn erl_available() -> bool {
    Command::new("erl")
        .args(["-noshell", "-eval", "halt()."])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The values the Rust side knows in advance, by index in `terms()` of the
/// Erlang module (pids, references, ports and funs are only round-tripped).
fn expected() -> BTreeMap<usize, Term> {
    let mut e = BTreeMap::new();
    let mut put = |i: usize, t: Term| {
        e.insert(i, t);
    };
    put(0, Term::atom("ok"));
    put(1, Term::atom("hello world"));
    put(2, Term::atom("ünïcödé"));
    put(3, Term::from(0));
    put(4, Term::from(255));
    put(5, Term::from(256));
    put(6, Term::from(-1));
    put(7, Term::from(2147483647));
    put(8, Term::from(2147483648i64));
    put(9, Term::from(i64::MIN));
    put(10, Term::from(1u128 << 64));
    put(11, Term::from(BigInt::from(1) << 2040usize));
    put(12, Term::from(-(BigInt::from(1) << 3000usize)));
    put(13, Term::from(1.5));
    put(14, Term::from(-0.0));
    put(15, Term::from(1.0e300));
    put(16, Term::binary(vec![]));
    put(17, Term::from("hello"));
    put(
        18,
        Term::from(BitBinary::new(vec![0b0010_0000], 3).unwrap()),
    );
    put(
        19,
        Term::from(BitBinary::new(vec![1, 2, 3 << 3], 5).unwrap()),
    );
    put(20, Term::nil());
    put(21, term!([1, 2, 3]));
    put(
        22,
        Term::list("hello".bytes().map(|b| Term::from(i64::from(b)))),
    );
    put(23, term!([1, 2, 300]));
    put(24, term!([a | b]));
    put(25, term!([1, 2 | 3]));
    put(26, term!({}));
    put(27, term!({ok, 1}));
    put(28, Term::tuple((1..=300).map(Term::from)));
    put(29, term!(#{}));
    put(30, term!(#{a => 1, b => 2}));
    put(
        31,
        Term::map([
            (Term::from(5), Term::atom("a")),
            (Term::from(1.0), Term::atom("b")),
            (Term::from(1), Term::atom("c")),
            (term!([107]), Term::atom("v")),
            (Term::from("k"), Term::atom("w")),
            (term!({ t }), Term::atom("x")),
            (term!([l]), Term::atom("y")),
        ]),
    );
    put(
        32,
        Term::map((1..=100).map(|i| (Term::from(i), Term::from(i * i)))),
    );
    put(38, Term::list((1..=70000).map(Term::from)));
    put(
        39,
        (0..100).fold(Term::atom("x"), |acc, _| Term::tuple([acc])),
    );
    put(
        41,
        term!([
            (Term::atom("Ω")),
            (Term::atom("EXIT")),
            (Term::atom("")),
            (Term::atom("'quoted'"))
        ]),
    );
    put(42, Term::binary(b"ab".repeat(50000)));
    put(43, term!(#{a => #{b => [1.5, "x"]}}));
    e
}

/// The Erlang node, with its output lines arriving on a channel so that
/// every read has a deadline.
struct Erl {
    child: Child,
    dir: PathBuf,
    lines: mpsc::Receiver<String>,
    started: Instant,
}

impl Erl {
    fn start() -> Erl {
        let dir = std::env::temp_dir().join(format!("ember-term-interop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/erl/ember_term_interop.erl");
        let status = Command::new("erlc")
            .arg("-o")
            .arg(&dir)
            .arg(&source)
            .status()
            .expect("erlc runs");
        assert!(status.success(), "erlc failed on {}", source.display());
        let mut child = Command::new("erl")
            .arg("-noshell")
            .arg("-pa")
            .arg(&dir)
            .args(["-eval", "ember_term_interop:main()"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("erl starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Erl {
            child,
            dir,
            lines,
            started: Instant::now(),
        }
    }

    fn line(&self) -> String {
        let left = DEADLINE.saturating_sub(self.started.elapsed());
        self.lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no line from erl within {DEADLINE:?}: {e}"))
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Erl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn terms_from_erl_decode_reencode_identically_and_erl_reads_them_back() {
    if !erl_available() {
        if std::env::var_os("EMBER_TERM_SKIP_ERL").is_some() {
            eprintln!(
                "skipping the erl interop test: erl is not installed (EMBER_TERM_SKIP_ERL set)"
            );
            return;
        }
        panic!("erl is not installed: install erlang-base (scripts/test does), or set EMBER_TERM_SKIP_ERL to skip");
    }
    let mut erl = Erl::start();

    // Everything erl prints before END, by kind and index.
    let mut encodings: BTreeMap<(String, usize), Vec<u8>> = BTreeMap::new();
    let mut erl_order: Vec<usize> = Vec::new();
    loop {
        let line = erl.line();
        if line == "END" {
            break;
        }
        if let Some(indices) = line.strip_prefix("S ") {
            erl_order = indices.split(' ').map(|i| i.parse().unwrap()).collect();
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(kind), Some(index), Some(hex)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("unexpected line from erl: {line}");
        };
        encodings.insert((kind.to_string(), index.parse().unwrap()), unhex(hex));
    }
    let count = encodings.keys().filter(|(k, _)| k == "T").count();
    assert_eq!(count, 48, "erl printed {count} terms");

    let expected = expected();
    let mut decoded = BTreeMap::new();
    for ((kind, i), bytes) in &encodings {
        let term = decode(bytes).unwrap_or_else(|e| panic!("{kind} {i}: {e}"));
        if kind == "T" {
            if let Some(want) = expected.get(i) {
                assert_eq!(&term, want, "term {i}");
            }
            // Deterministic, UTF-8-atom encodings come back byte for byte.
            assert_eq!(
                &encode(&term).unwrap(),
                bytes,
                "re-encoding term {i} ({term})"
            );
            decoded.insert(*i, term);
        }
    }
    // The other encodings (Latin-1 atoms, compressed) decode to the same terms.
    for ((kind, i), bytes) in &encodings {
        if kind != "T" {
            assert_eq!(&decode(bytes).unwrap(), &decoded[i], "{kind} {i}");
        }
    }
    assert!(
        encodings.iter().any(|((k, _), b)| k == "C" && b[1] == 80),
        "some compressed encodings really are compressed"
    );

    // A few decoded values the table cannot spell out.
    let pid = decoded[&33].as_pid().expect("self() is a pid");
    assert_eq!(pid.node.as_str(), "nonode@nohost");
    assert_eq!(decoded[&34].as_reference().unwrap().ids.len(), 3);
    assert!(matches!(
        decoded[&36],
        Term::Fun(Fun::Export { arity: 1, .. })
    ));
    match &decoded[&37] {
        Term::Fun(Fun::Closure(c)) => {
            assert_eq!(c.module.as_str(), "ember_term_interop");
            assert_eq!(c.free_vars, [Term::from(42)]);
        }
        other => panic!("term 37 is not a closure: {other}"),
    }
    assert_eq!(decoded[&44].as_pid().unwrap().creation, 7);
    assert_eq!(decoded[&45].as_reference().unwrap().ids, [1, 2, 3, 4, 5]);
    assert!(matches!(&decoded[&46], Term::Port(p) if p.id == 5));
    assert!(matches!(&decoded[&47], Term::ImproperList(..)));

    // Term order: Rust's Ord sorts the terms as erl's lists:sort does (the
    // list has no two terms that are == but not =:= in a different order).
    let mut rust_order: Vec<usize> = decoded.keys().copied().collect();
    rust_order.sort_by(|a, b| decoded[a].cmp(&decoded[b]));
    assert_eq!(rust_order, erl_order, "term order");
    for pair in rust_order.windows(2) {
        assert_ne!(
            decoded[&pair[0]].erl_cmp(&decoded[&pair[1]]),
            std::cmp::Ordering::Greater
        );
    }

    // Rust's bytes back to erl, which compares them with the originals.
    for (i, term) in &decoded {
        erl.send(&format!("{i} {}", hex(&encode(term).unwrap())));
        let reply = erl.line();
        assert_eq!(reply, format!("OK {i}"), "erl on term {i}");
    }
    // Rust-built terms erl did not send: erl must read them as the table says.
    for (i, term) in &expected {
        erl.send(&format!("{i} {}", hex(&encode(term).unwrap())));
        assert_eq!(erl.line(), format!("OK {i}"), "erl on Rust-built term {i}");
    }
    erl.send("DONE");
}
