//! Sockets polled by the schedulers (docs/semantics.md §18): accept,
//! connect, read and write suspend only the calling process; a hang-up
//! watch kills a process stuck in a poll that never awaits; I/O keeps
//! flowing while every scheduler is busy.

mod support;

use std::time::Duration;

use ember_runtime::net::{TcpListener, TcpStream};
use ember_runtime::{
    monitor, receive, self_pid, send, should_stop, spawn, spawn_link, yield_point, ExitReason, Pid,
};
use support::{down_of, one_scheduler, recv, runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echoes every connection's bytes back until the peer closes.
async fn echo_server(listener: TcpListener) {
    loop {
        let (mut stream, _) = listener.accept().await.unwrap();
        spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// §18: many connections, each a process, echo many messages of every size
/// (up to several socket buffers, so writes block and resume).
#[test]
fn many_connections_echo_through_processes() {
    runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        spawn_link(echo_server(listener));
        let test = self_pid();
        const CLIENTS: usize = 20;
        for c in 0..CLIENTS {
            spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                for round in 0..20usize {
                    let len = 1 + (c * 7919 + round * 104_729) % 300_000;
                    let message: Vec<u8> = (0..len).map(|i| (i + c + round) as u8).collect();
                    // Write and read at once: a large echo fills both buffers.
                    let (mut r, mut w) = tokio::io::split(&mut s);
                    let writing = w.write_all(&message);
                    let mut back = vec![0u8; len];
                    let reading = r.read_exact(&mut back);
                    let (wrote, read) = tokio::join!(writing, reading);
                    wrote.unwrap();
                    read.unwrap();
                    assert!(back == message, "client {c} round {round}: echo differs");
                }
                send(test, c);
            });
        }
        let mut done = Vec::new();
        for _ in 0..CLIENTS {
            done.push(recv::<usize>().await);
        }
        done.sort_unstable();
        assert_eq!(done, (0..CLIENTS).collect::<Vec<_>>());
    });
}

/// §18: a peer that closes is an end of stream (read returns 0); connecting
/// to a port nobody listens on is an error, not a hang.
#[test]
fn end_of_stream_and_refused_connections_are_reported() {
    runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server_side, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        drop(client);
        let mut buf = [0u8; 16];
        assert_eq!(server_side.read(&mut buf).await.unwrap(), 0);

        drop(listener);
        let refused = TcpStream::connect(addr).await;
        assert!(refused.is_err(), "connected to a closed port: {refused:?}");
    });
}

/// §18: a hang-up watch kills its process when the connection is reset,
/// even while that process computes without awaiting (it notices through
/// `should_stop`); a FIN (half-close) is not a hang-up; a disarmed watch
/// kills nobody.
#[test]
fn a_hangup_kills_a_process_stuck_in_a_poll() {
    runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let test = self_pid();

        // Disarmed: the client leaves, the watcher lives on.
        let calm = spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            let watch = first.hangup_watch();
            watch.kill_on_hangup(self_pid());
            watch.disarm();
            // Unread by the client, so that its close is a reset.
            first.write_all(b"unread").await.unwrap();
            send(test, "armed and disarmed");
            let _keep = receive::<()>().await;
            // The client's reset has been seen, and the disarmed watch
            // killed nobody.
            let mut waited = 0;
            while !watch.hung_up() {
                assert!(waited < 10_000, "the reset was never seen");
                ember_runtime::sleep(Duration::from_millis(1)).await;
                waited += 1;
            }
            // The next connection: a watch that stays armed.
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.hangup_watch().kill_on_hangup(self_pid());
            // The client never reads this, so its close is a reset.
            stream.write_all(b"unread").await.unwrap();
            send(test, self_pid());
            // A FIN (the client half-closes) is not a hang-up: reading it
            // leaves the process alive.
            let mut buf = [0u8; 8];
            assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
            send(test, should_stop());
            while !should_stop() {
                std::hint::spin_loop();
            }
            let _stream = stream;
        });
        let calm_watch = monitor(calm);
        let first = TcpStream::connect(addr).await.unwrap();
        assert_eq!(recv::<&str>().await, "armed and disarmed");
        drop(first);

        // Armed around a computation that never awaits.
        send(calm, ());
        let mut second = TcpStream::connect(addr).await.unwrap();
        let spinner: Pid = recv().await;
        assert_eq!(spinner, calm, "the calm process survived the first hang-up");
        second.shutdown().await.unwrap();
        assert!(!recv::<bool>().await, "a FIN killed the watched process");
        // Closing with unread input sends a reset: that is a hang-up.
        drop(second);
        let down = down_of(calm_watch).await;
        assert_eq!(down.reason, ExitReason::Killed);
    });
}

/// §18: with one scheduler kept busy by a process that only yields, socket
/// wake-ups still arrive (busy schedulers look at the pollset between polls).
#[test]
fn io_flows_while_the_only_scheduler_is_busy() {
    one_scheduler().block_on(async {
        let busy = spawn(async {
            loop {
                yield_point().await;
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        spawn_link(echo_server(listener));
        let mut s = TcpStream::connect(addr).await.unwrap();
        for i in 0..200u32 {
            s.write_all(&i.to_le_bytes()).await.unwrap();
            let mut back = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
                .await
                .expect("the echo arrives while the scheduler is busy")
                .unwrap();
            assert_eq!(u32::from_le_bytes(back), i);
        }
        ember_runtime::exit(busy, ExitReason::Kill);
    });
}
