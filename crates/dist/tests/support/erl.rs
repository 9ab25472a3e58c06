//! The erl driver the interop tests share: a real `erl -sname` node that
//! evaluates one expression per line from stdin and prints `=> Result`,
//! plus free ports, unique names and random cookies.
#![allow(dead_code)] // each test file uses its own part of it

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// False when the test should be skipped; panics when erl is required.
pub(crate) fn erl_required() -> bool {
    let ok = Command::new("erl")
        .args(["-noshell", "-eval", "halt()."])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var_os("EMBER_TERM_SKIP_ERL").is_some() {
        eprintln!("skipping the erl interop test: erl is not installed (EMBER_TERM_SKIP_ERL set)");
        return false;
    }
    panic!("erl is not installed: install erlang-base (scripts/test does), or set EMBER_TERM_SKIP_ERL to skip");
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn random_cookie() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An `erl` node evaluating one expression per line read from stdin and
/// printing `=> Result` (`~w`).
pub(crate) struct Erl {
    pub(crate) child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    pub(crate) name: String,
}

const LOOP: &str = r#"L = fun L() -> case io:get_line("") of eof -> halt(); Line -> R = try {ok, T, _} = erl_scan:string(Line), {ok, E} = erl_parse:parse_exprs(T), {value, V, _} = erl_eval:exprs(E, []), V catch C:Er -> {caught, C, Er} end, io:format("=> ~w~n", [R]), L() end end, L()."#;

impl Erl {
    pub(crate) fn start(alive: &str, cookie: &str, epmd_port: u16) -> Erl {
        Erl::start_with(alive, cookie, epmd_port, &[])
    }

    pub(crate) fn start_with(alive: &str, cookie: &str, epmd_port: u16, extra: &[&str]) -> Erl {
        let name = format!("{alive}@localhost");
        let mut child = Command::new("erl")
            .args([
                "-noshell",
                "-start_epmd",
                "false",
                "-sname",
                &name,
                "-setcookie",
                cookie,
            ])
            .args(extra)
            .args(["-eval", LOOP])
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start erl");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("erl: {line}");
                if let Some(r) = line.strip_prefix("=> ") {
                    if tx.send(r.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let mut erl = Erl {
            child,
            stdin,
            lines,
            name,
        };
        // Up, distributed, and registered with epmd.
        assert_eq!(erl.eval("node()."), erl.name);
        erl
    }

    pub(crate) fn eval(&mut self, expr: &str) -> String {
        self.send(expr);
        self.answer(expr)
    }

    pub(crate) fn send(&mut self, expr: &str) {
        writeln!(self.stdin, "{expr}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub(crate) fn answer(&mut self, expr: &str) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("erl did not answer {expr} in time"))
    }
}

impl Drop for Erl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
