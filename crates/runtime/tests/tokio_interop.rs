//! tokio futures inside Ember processes: sockets, timers, channels, spawning
//! tokio tasks, and killing a process blocked on tokio I/O
//! (docs/semantics.md §14).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ember_runtime::{exit, monitor, self_pid, send, spawn, spawn_monitor, ExitReason, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{down_of, recv, runtime, WAIT};

// §14: a TCP echo between two Ember processes over tokio::net on loopback.
#[test]
fn tcp_echo_between_two_processes_over_tokio_sockets() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let (server, server_watch) = spawn_monitor(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            send(me, listener.local_addr().expect("address"));
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut buffer = Vec::new();
                socket.read_to_end(&mut buffer).await.expect("read");
                socket.write_all(&buffer).await.expect("write");
                socket.shutdown().await.expect("shutdown");
            }
        });
        let address: SocketAddr = recv().await;
        for text in ["hello ember", "a second connection"] {
            let (_, client_watch) = spawn_monitor(async move {
                let mut socket = TcpStream::connect(address).await.expect("connect");
                socket.write_all(text.as_bytes()).await.expect("write");
                socket.shutdown().await.expect("shutdown");
                let mut echoed = String::new();
                socket.read_to_string(&mut echoed).await.expect("read");
                send(me, echoed);
            });
            assert_eq!(recv::<String>().await, text);
            assert_eq!(down_of(client_watch).await.reason, ExitReason::Normal);
        }
        let down = down_of(server_watch).await;
        assert_eq!(down.pid, server);
        assert_eq!(down.reason, ExitReason::Normal);
    });
}

// §14: tokio::time::sleep inside a process waits no less than asked, and other
// processes run meanwhile.
#[test]
fn tokio_sleep_inside_a_process_waits_no_less_than_asked() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let started = Instant::now();
        spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            send(me, Instant::now());
        });
        spawn(async move { send(me, "meanwhile") });
        assert_eq!(recv::<&str>().await, "meanwhile");
        let woke: Instant = recv().await;
        let slept = woke - started;
        assert!(slept >= Duration::from_millis(30), "{slept:?}");
        assert!(slept < Duration::from_secs(5), "{slept:?}");
    });
}

// §14: tokio channels and tokio::time::timeout work between processes.
#[test]
fn tokio_channels_and_timeouts_work_between_processes() {
    let rt = runtime();
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
        spawn(async move {
            for n in 0..100 {
                tx.send(n).await.expect("receiver alive");
            }
        });
        let mut got = Vec::new();
        while let Some(n) = rx.recv().await {
            got.push(n);
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        let (_keep, never) = tokio::sync::oneshot::channel::<()>();
        let timed_out = tokio::time::timeout(Duration::from_millis(10), never).await;
        assert!(timed_out.is_err());
    });
}

// §14: tokio::spawn from a process runs the task on the runtime's tokio
// thread; the process can await its JoinHandle.
#[test]
fn tokio_spawn_from_a_process_runs_and_can_be_awaited() {
    let rt = runtime();
    rt.block_on(async {
        let task = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            6 * 7
        });
        assert_eq!(task.await.expect("the task ran"), 42);
    });
}

// §14, §9.3: a process waiting on tokio I/O can be killed; its body (and so
// its socket) is dropped, which closes the listener.
#[test]
fn a_process_blocked_on_tokio_io_can_be_killed_and_its_socket_closes() {
    /// Signals when dropped.
    struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
        let acceptor = spawn(async move {
            // Declared first, so dropped after the listener.
            let _guard = Dropped(Some(dropped_tx));
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            send(me, listener.local_addr().expect("address"));
            while listener.accept().await.is_ok() {}
        });
        let address: SocketAddr = recv().await;
        assert!(TcpStream::connect(address).await.is_ok(), "listening");
        let watch = monitor(acceptor);
        exit(acceptor, ExitReason::Kill);
        assert_eq!(down_of(watch).await.reason, ExitReason::Killed);
        tokio::time::timeout(WAIT, dropped)
            .await
            .expect("the body was dropped")
            .expect("signalled");
        assert!(
            TcpStream::connect(address).await.is_err(),
            "the listener outlived its process"
        );
    });
}

// §14: with tokio turned off, a tokio timer inside a process is a crash of
// that process (tokio panics without a runtime), contained like any panic.
#[test]
fn without_tokio_a_tokio_future_crashes_only_its_process() {
    let rt = Runtime::builder()
        .schedulers(2)
        .enable_tokio(false)
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (_, watch) = spawn_monitor(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
        });
        let reason = down_of(watch).await.reason;
        assert!(matches!(reason, ExitReason::Panic(_)), "{reason}");
    });
}

/// Whether `rt`'s tokio driver thread runs.
fn tokio_driver_runs(rt: &Runtime) -> bool {
    rt.handle().runtime_info().threads.tokio_driver
}

// §14: tokio's driver thread starts when a process first needs it. Messages,
// monitors, Ember's own timers and Ember's own sockets never start it.
#[test]
fn tokio_driver_thread_starts_only_when_a_process_needs_it() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let listener = ember_runtime::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let (_, server_watch) = spawn_monitor(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buffer = Vec::new();
            socket.read_to_end(&mut buffer).await.expect("read");
            socket.write_all(&buffer).await.expect("write");
        });
        let (_, client_watch) = spawn_monitor(async move {
            ember_runtime::time::sleep(Duration::from_millis(2)).await;
            let mut socket = ember_runtime::net::TcpStream::connect(address)
                .await
                .expect("connect");
            socket
                .write_all(b"over ember's reactor")
                .await
                .expect("write");
            socket.shutdown().await.expect("shutdown");
            let mut echoed = String::new();
            socket.read_to_string(&mut echoed).await.expect("read");
            send(me, echoed);
        });
        assert_eq!(recv::<String>().await, "over ember's reactor");
        assert_eq!(down_of(client_watch).await.reason, ExitReason::Normal);
        assert_eq!(down_of(server_watch).await.reason, ExitReason::Normal);
        let timed_out = ember_runtime::receive::<u8>()
            .timeout(Duration::from_millis(2))
            .await;
        assert!(timed_out.is_none());
    });
    assert!(
        !tokio_driver_runs(&rt),
        "tokio's driver started though no process used tokio"
    );
    let slept = rt.block_on(async {
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        started.elapsed()
    });
    assert!(slept >= Duration::from_millis(5), "slept {slept:?}");
    assert!(
        tokio_driver_runs(&rt),
        "a tokio timer ran without the driver"
    );
}

// §14: a tokio task spawned from a process and never awaited still runs:
// its driver starts without a waker to clone.
#[test]
fn a_tokio_task_left_to_run_starts_the_driver() {
    let rt = runtime();
    let handle = rt.handle().clone();
    rt.block_on(async move {
        let me = self_pid();
        drop(tokio::spawn(
            async move { handle.send(me, "from a tokio task") },
        ));
        assert_eq!(recv::<&str>().await, "from a tokio task");
    });
    assert!(tokio_driver_runs(&rt));
}

// §14: Ember's channels, and any future run `woken_by_ember`, keep their
// wakers without starting tokio's driver; tokio's own channel outside it
// starts it (its waker clone is the sign).
#[test]
fn embers_channels_and_quiet_futures_do_not_start_the_driver_but_tokios_channel_does() {
    use ember_runtime::sync::{mpsc, oneshot, woken_by_ember};

    let rt = runtime();
    rt.block_on(async {
        let (tx, mut rx) = mpsc::channel::<u32>(1);
        let (reply, answer) = oneshot::channel();
        spawn(async move {
            for n in 0..3 {
                tx.send(n).await.unwrap();
            }
            let (tokio_tx, tokio_rx) = tokio::sync::oneshot::channel();
            // Woken from another process: the waiter polls it quietly.
            spawn(async move {
                ember_runtime::time::sleep(Duration::from_millis(2)).await;
                let _ = tokio_tx.send("quiet");
            });
            let _ = reply.send(woken_by_ember(tokio_rx).await.unwrap());
        });
        let mut got = Vec::new();
        while let Some(n) = rx.recv().await {
            got.push(n);
        }
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(answer.await, Ok("quiet"));
    });
    assert!(
        !tokio_driver_runs(&rt),
        "Ember's channels or a quiet future started tokio's driver"
    );
    rt.block_on(async {
        let (tokio_tx, tokio_rx) = tokio::sync::oneshot::channel();
        spawn(async move {
            ember_runtime::time::sleep(Duration::from_millis(2)).await;
            let _ = tokio_tx.send(());
        });
        tokio_rx.await.unwrap();
    });
    assert!(
        tokio_driver_runs(&rt),
        "a waker kept by tokio's channel did not start the driver"
    );
}
