//! The node's default group leader, `user`, writes to the OS process's
//! stdout (docs/semantics.md, "Group leaders and I/O"). Each case runs this
//! binary again as a child (`EMBER_IO_CHILD=<case>`) and reads the child's
//! stdout: what processes print arrives whole; a stdout that nobody reads
//! does not stop the scheduler; a closed stdout costs the output, never a
//! panic or a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ember_runtime::io::{self, IoRequest};
use ember_runtime::{receive, self_pid, send, spawn, Runtime};
use ember_term::Term;

/// How long the parent waits for any event from a child.
const WAIT: Duration = Duration::from_secs(30);

/// Lines each printing process writes in the `print` case.
const LINES: usize = 200;
/// Printing processes in the `print` case.
const PRINTERS: usize = 4;
/// Bytes the `blocked` case prints: far more than a pipe holds.
const BLOCKED_BYTES: usize = 4 << 20;

/// Receives the next `M` in a child's process, within [`WAIT`] (the parent
/// kills a child that outlives it anyway; this says what it waited for).
async fn recv<M: Send + 'static>() -> M {
    receive::<M>()
        .timeout(WAIT)
        .await
        .unwrap_or_else(|| panic!("no {} within {WAIT:?}", std::any::type_name::<M>()))
}

fn main() {
    match std::env::var("EMBER_IO_CHILD").as_deref() {
        Ok("print") => child_print(),
        Ok("blocked") => child_blocked(),
        Ok("closed") => child_closed(),
        Ok(other) => panic!("unknown child case {other:?}"),
        Err(_) => {
            for (name, case) in [
                (
                    "user_writes_what_processes_print_to_stdout",
                    parent_print as fn(),
                ),
                (
                    "a_stdout_nobody_reads_does_not_stop_the_scheduler",
                    parent_blocked,
                ),
                (
                    "a_closed_stdout_loses_the_output_not_the_node",
                    parent_closed,
                ),
            ] {
                print!("test {name} ... ");
                std::io::stdout().flush().unwrap();
                case();
                println!("ok");
            }
        }
    }
}

fn child(case: &str) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .env("EMBER_IO_CHILD", case)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child starts")
}

/// Reads `from` to its end on a thread; the text arrives on the channel.
fn read_all(mut from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// Waits for the child to exit and checks that it succeeded.
fn finish(mut child: Child, stderr: &mpsc::Receiver<String>) {
    let stderr = stderr.recv_timeout(WAIT).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the child did not finish within {WAIT:?}");
    });
    let status = child.wait().expect("the child's status");
    assert!(
        status.success(),
        "the child failed ({status}); its stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "a panic in the child:\n{stderr}"
    );
}

// ---------------------------------------------------------------- print

fn child_print() {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async {
        let me = self_pid();
        for p in 0..PRINTERS {
            spawn(async move {
                for line in 0..LINES {
                    io::println!("printer {p} line {line}").await;
                }
                send(me, p);
            });
        }
        for _ in 0..PRINTERS {
            let _: usize = recv().await;
        }
        // A latin1 request, as an Erlang client may send it, straight to `user`.
        let latin1 = Term::tuple([
            Term::atom("put_chars"),
            Term::atom("latin1"),
            Term::binary(vec![b'l', b'a', b't', b'i', b'n', b'1', b' ', 0xe9, b'\n']),
        ]);
        let reply = io::request(io::group_leader(), latin1, WAIT).await;
        assert_eq!(reply.ok(), Some(Term::atom("ok")));
        io::print!("prompt> ").await;
    });
    drop(rt);
    // Outside any process: straight to stdout.
    let outside = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(io::put_chars("\noutside a process\n"));
    outside.expect("stdout is open");
}

fn parent_print() {
    let mut child = child("print");
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let text = stdout
        .recv_timeout(WAIT)
        .expect("the child's stdout within the wait");
    finish(child, &stderr);
    for p in 0..PRINTERS {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("printer {p} ")))
            .collect();
        let expected: Vec<String> = (0..LINES)
            .map(|l| format!("printer {p} line {l}"))
            .collect();
        assert_eq!(lines, expected, "printer {p}'s lines, whole and in order");
    }
    assert!(text.contains("latin1 é\n"), "{text}");
    assert!(text.ends_with("prompt> \noutside a process\n"), "{text:?}");
}

// ---------------------------------------------------------------- blocked

/// One scheduler; a process prints far more than the pipe holds while the
/// parent reads nothing. The scheduler must still run other processes.
fn child_blocked() {
    let rt = Runtime::builder().schedulers(1).build().unwrap();
    rt.block_on(async {
        let me = self_pid();
        let printer = spawn(async move {
            let line = format!("{}\n", "x".repeat(1023));
            for _ in 0..BLOCKED_BYTES / line.len() {
                io::put_chars(line.clone()).await.expect("user answers");
            }
            send(me, "printed");
        });
        let echo = spawn(async {
            loop {
                let (from, n): (ember_runtime::Pid, u32) = receive().await;
                send(from, n);
            }
        });
        for n in 0..1000u32 {
            send(echo, (me, n));
            let back: u32 = recv().await;
            assert_eq!(back, n);
        }
        // The pipe holds far less than what the printer writes, and the
        // parent reads only after this line: it cannot be done.
        assert!(
            ember_runtime::try_receive::<&str>().is_none(),
            "the printer finished although nobody read its output"
        );
        eprintln!("scheduler free");
        let printed = receive::<&str>().timeout(WAIT).await;
        assert_eq!(printed, Some("printed"));
        let _ = printer;
    });
}

fn parent_blocked() {
    let mut child = child("blocked");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut first = String::new();
        let _ = stderr.read_line(&mut first);
        let _ = tx.send(first);
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    let first = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the scheduler stalled behind a full stdout");
    });
    assert_eq!(first, "scheduler free\n", "the child's first stderr line");
    // Now read: the printer completes.
    let stdout = read_all(child.stdout.take().unwrap());
    let text = stdout
        .recv_timeout(WAIT)
        .expect("the child's stdout within the wait");
    finish(child, &rx);
    assert_eq!(
        text.len(),
        BLOCKED_BYTES / 1024 * 1024,
        "every line arrived"
    );
}

// ---------------------------------------------------------------- closed

/// Stdout is a pipe whose reading end the parent closed: every print is
/// still answered, and the child exits normally.
fn child_closed() {
    // Wait until the parent has closed the pipe.
    let mut go = [0u8; 1];
    std::io::stdin()
        .read_exact(&mut go)
        .expect("the parent's go");
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    let answered = rt.block_on(async {
        let me = self_pid();
        for p in 0..10 {
            spawn(async move {
                let mut ok = 0usize;
                for line in 0..100 {
                    if io::put_chars(format!("{p} {line}\n")).await.is_ok() {
                        ok += 1;
                    }
                }
                send(me, ok);
            });
        }
        let mut answered = 0;
        for _ in 0..10 {
            answered += recv::<usize>().await;
        }
        // `user` is alive and still answers.
        let reply = io::request(
            io::group_leader(),
            IoRequest::put_chars(Term::nil(), Term::nil(), "late\n").request,
            WAIT,
        )
        .await;
        assert_eq!(reply.ok(), Some(Term::atom("ok")));
        answered
    });
    drop(rt);
    eprintln!("answered {answered}");
}

fn parent_closed() {
    let mut child = child("closed");
    drop(child.stdout.take());
    let stderr = read_all(child.stderr.take().unwrap());
    child.stdin.take().unwrap().write_all(b"g").unwrap();
    let (tx, rx) = mpsc::channel();
    // `finish` consumes the stderr; keep a copy of it for the check below.
    let text = stderr.recv_timeout(WAIT).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the child hung on a closed stdout");
    });
    tx.send(text.clone()).unwrap();
    finish(child, &rx);
    assert!(text.contains("answered 1000"), "{text}");
}
