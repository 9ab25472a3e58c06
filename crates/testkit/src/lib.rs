//! Helpers shared by Ember's interop tests: start real `erl` and `elixir`
//! nodes and talk to them, with unique names, random cookies and a
//! deadline on every wait.
//!
//! * [`Erl`] and [`Elixir`]: a node that evaluates one expression per line
//!   written to it and answers with one line (`~w` for erl, `inspect/1`
//!   for elixir). The OS process is killed when the value is dropped.
//! * [`run_erl`]: a fresh `erl` node that runs one script and halts.
//! * [`tls`]: a throw-away certificate authority for TLS distribution.
//! * [`http`]: a tiny HTTP client for tests of Ember's HTTP servers.
//! * [`postgres::TempPostgres`]: a throw-away PostgreSQL server.
//! * [`erl_required`] / [`elixir_required`]: whether the tool is there, or
//!   a panic, unless `EMBER_TERM_SKIP_ERL` / `EMBER_SKIP_ELIXIR` say to
//!   skip (`scripts/test --quick` sets them when the tool is missing).
//!
//! Every node is started with `-start_epmd false` and `ERL_EPMD_PORT` set
//! to the port mapper port the test chose, so tests never meet each other
//! or a system epmd.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod http;
pub mod postgres;
pub mod tls;

/// How long any answer from a node may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

fn tool_required(program: &str, args: &[&str], skip_var: &str, package: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var_os(skip_var).is_some() {
        eprintln!(
            "skipping the {program} interop test: {program} is not installed ({skip_var} set)"
        );
        return false;
    }
    panic!("{program} is not installed: install {package} (scripts/test does), or set {skip_var} to skip");
}

/// True when `erl` runs; false (skip the test) when it does not and
/// `EMBER_TERM_SKIP_ERL` is set; a panic otherwise.
pub fn erl_required() -> bool {
    tool_required(
        "erl",
        &["-noshell", "-eval", "halt()."],
        "EMBER_TERM_SKIP_ERL",
        "erlang-base",
    )
}

/// True when `erl` runs and has the `ssl` application (for
/// `-proto_dist inet_tls`); false (skip the test) when not and
/// `EMBER_SKIP_ERL_SSL` is set; a panic otherwise.
pub fn erl_ssl_required() -> bool {
    tool_required(
        "erl",
        &[
            "-noshell",
            "-eval",
            "halt(case application:ensure_all_started(ssl) of {ok, _} -> 0; _ -> 1 end).",
        ],
        "EMBER_SKIP_ERL_SSL",
        "erlang-ssl, erlang-public-key and erlang-crypto",
    )
}

/// True when `elixir` runs; false (skip the test) when it does not and
/// `EMBER_SKIP_ELIXIR` is set; a panic otherwise.
pub fn elixir_required() -> bool {
    tool_required(
        "elixir",
        &["-e", "System.halt(0)"],
        "EMBER_SKIP_ELIXIR",
        "elixir",
    )
}

/// A TCP port that was free a moment ago, never handed out before in this
/// process, and below the kernel's ephemeral range when there is room
/// there: a port from `bind(0)` is released at once, and a socket bound to
/// port 0 meanwhile (another test's listener or client) could be given the
/// same one, so a test's port mapper would answer another test's nodes.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // Ports 10000 up to the ephemeral range (32768 by default).
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral > 12_000 {
        for _ in 0..1000 {
            let port =
                10_000 + (getrandom::u32().unwrap_or(0) % u32::from(ephemeral - 10_000)) as u16;
            if !given.contains(&port) && TcpListener::bind(("0.0.0.0", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// `prefix_<os pid>_<counter>`: a node name no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// 24 random hex digits.
pub fn random_cookie() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A node evaluating one expression per line read from stdin and printing
/// `=> Result`.
pub struct Repl {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// `alive@host`.
    pub name: String,
    label: &'static str,
}

impl Repl {
    fn spawn(mut cmd: Command, name: String, label: &'static str) -> Repl {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("{label}: {line}");
                if let Some(r) = line.strip_prefix("=> ") {
                    if tx.send(r.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Repl {
            child,
            stdin,
            lines,
            name,
            label,
        }
    }

    /// Evaluates `expr` and returns what it printed.
    pub fn eval(&mut self, expr: &str) -> String {
        self.send(expr);
        self.answer(expr)
    }

    /// Writes `expr` without waiting for its answer.
    pub fn send(&mut self, expr: &str) {
        writeln!(self.stdin, "{expr}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next answer (to `expr`, for the failure message).
    pub fn answer(&mut self, expr: &str) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("{} did not answer {expr} in time", self.label))
    }

    /// The node's OS process id.
    pub fn os_pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the node's OS process (as `kill -9` would).
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the node");
    }

    /// Stops the node's OS process (SIGSTOP): it reads, writes and ticks
    /// no more until [`Repl::resume`].
    ///
    /// Returns once every thread of the process is stopped (SIGSTOP is
    /// delivered asynchronously: a thread running on another core stops
    /// only when it next handles signals), within [`DEADLINE`].
    pub fn pause(&mut self) {
        self.signal("-STOP");
        let pid = self.child.id();
        let start = Instant::now();
        while !all_threads_stopped(pid) {
            assert!(
                start.elapsed() < DEADLINE,
                "{} (pid {pid}) did not stop within {DEADLINE:?}",
                self.label
            );
            std::thread::yield_now();
        }
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} {} failed", self.child.id());
    }

    /// Whether the OS process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/<pid>/task/*/stat`); true where `/proc` is missing.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // `pid (comm) S ...`: the state follows the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state == 'T' || state == 't')
        })
    })
}

impl Drop for Repl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `erl -sname` node answering expressions with `=> ~w`.
pub type Erl = Repl;

const ERL_LOOP: &str = r#"L = fun L() -> case io:get_line("") of eof -> halt(); Line -> R = try {ok, T, _} = erl_scan:string(Line), {ok, E} = erl_parse:parse_exprs(T), {value, V, _} = erl_eval:exprs(E, []), V catch C:Er -> {caught, C, Er} end, io:format("=> ~w~n", [R]), L() end end, L()."#;

/// Starts `erl -sname alive@localhost` with `cookie`, registered with the
/// port mapper on `epmd_port`, and `extra` flags; waits until it is up.
pub fn start_erl(alive: &str, cookie: &str, epmd_port: u16, extra: &[&str]) -> Erl {
    let name = format!("{alive}@localhost");
    let mut cmd = Command::new("erl");
    cmd.args(["-noshell", "-start_epmd", "false", "-sname", &name])
        .args(["-setcookie", cookie])
        .args(extra)
        .args(["-eval", ERL_LOOP])
        .env("ERL_EPMD_PORT", epmd_port.to_string());
    let mut erl = Repl::spawn(cmd, name, "erl");
    assert_eq!(erl.eval("node()."), erl.name);
    erl
}

/// An `elixir --sname` node answering expressions with `=> inspect(R)`.
pub type Elixir = Repl;

const ELIXIR_LOOP: &str = r#"defmodule EmberTestRepl do
  def loop do
    case IO.gets("") do
      :eof -> :ok
      line ->
        r = try do
          elem(Code.eval_string(line), 0)
        rescue
          e -> {:caught, e}
        catch
          k, v -> {:caught, k, v}
        end
        IO.puts("=> " <> inspect(r, limit: :infinity, printable_limit: :infinity))
        loop()
    end
  end
end
EmberTestRepl.loop()"#;

/// Starts `elixir --sname alive@localhost --cookie cookie`, registered
/// with the port mapper on `epmd_port`; waits until it is up.
pub fn start_elixir(alive: &str, cookie: &str, epmd_port: u16) -> Elixir {
    let name = format!("{alive}@localhost");
    let mut cmd = Command::new("elixir");
    cmd.args(["--sname", &name, "--cookie", cookie])
        .args(["--erl", "-start_epmd false"])
        .args(["-e", ELIXIR_LOOP])
        .env("ERL_EPMD_PORT", epmd_port.to_string());
    let mut ex = Repl::spawn(cmd, name, "elixir");
    assert_eq!(ex.eval("Node.self()"), format!(":{}", ex.name));
    ex
}

/// Runs `script` (Erlang expressions, `E` bound to the atom `ember_node`)
/// on a fresh `erl` node named with `name_flag` (`-sname` or `-name`) and
/// `name`, and returns what the script evaluated to (`~w`). erl is killed
/// if it has not finished by the deadline.
pub fn run_erl(
    name_flag: &str,
    name: &str,
    cookie: &str,
    epmd_port: u16,
    ember_node: &str,
    script: &str,
) -> String {
    let eval = format!(
        "R = try E = '{ember_node}', {script} catch C:Er -> {{caught, C, Er}} end, \
         io:format(\"RESULT ~w~n\", [R]), halt()."
    );
    let mut child = Command::new("erl")
        .args(["-noshell", "-start_epmd", "false", name_flag, name])
        .args(["-setcookie", cookie, "-eval", &eval])
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start erl");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            eprintln!("erl: {line}");
            if let Some(r) = line.strip_prefix("RESULT ") {
                let _ = tx.send(r.to_string());
            }
        }
    });
    let result = rx.recv_timeout(DEADLINE);
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap_or_else(|_| panic!("erl printed no result in time for {script}"))
}

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped: e.g. the `--data` directory of a node a
/// test starts, so tests never share a store.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Its path as a string (for a command line).
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
