//! Registered names: `register` and its errors, `unregister`, `whereis`,
//! `registered`, and release on exit (docs/semantics.md §11).
//!
//! Includes ports of erts' `emulator/test/register_SUITE.erl` (`otp_8099`) and
//! `process_SUITE.erl` (`bad_register`).

mod support;

use ember_runtime::introspect::process_info;
use ember_runtime::{
    exit, register, registered, self_pid, send, send_named, spawn, spawn_monitor, unregister,
    whereis, ExitReason, NotRegistered, Pid, RegisterError,
};

use support::{down_of, recv, runtime, wait_forever};

// §11.1, §11.2: register, whereis, registered, unregister round trip.
#[test]
fn register_whereis_registered_and_unregister_round_trip() {
    let rt = runtime();
    rt.block_on(async {
        let server = spawn(wait_forever());
        assert_eq!(whereis("server"), None);
        register("server", server).expect("free name");
        assert_eq!(whereis("server"), Some(server));
        assert!(registered()
            .iter()
            .any(|(name, pid)| &**name == "server" && *pid == server));
        assert_eq!(
            process_info(server).expect("alive").name.as_deref(),
            Some("server")
        );
        unregister("server").expect("registered");
        assert_eq!(whereis("server"), None);
        assert!(registered().iter().all(|(name, _)| &**name != "server"));
        assert_eq!(process_info(server).expect("alive").name, None);
    });
}

// §11.1: a name held by another live process cannot be taken.
#[test]
fn registering_a_taken_name_fails_with_name_taken_and_the_owner() {
    let rt = runtime();
    rt.block_on(async {
        let owner = spawn(wait_forever());
        let other = spawn(wait_forever());
        register("busy", owner).expect("free name");
        let error = register("busy", other).expect_err("taken");
        assert_eq!(
            error,
            RegisterError::NameTaken {
                name: "busy".into(),
                owner
            }
        );
        assert_eq!(
            error.to_string(),
            format!("name \"busy\" is already registered to {owner}")
        );
        assert_eq!(whereis("busy"), Some(owner));
        assert_eq!(process_info(other).expect("alive").name, None);
    });
}

// §11.1: a process has at most one name.
#[test]
fn registering_a_second_name_for_a_process_fails_with_already_named() {
    let rt = runtime();
    rt.block_on(async {
        let pid = spawn(wait_forever());
        register("first", pid).expect("free name");
        let error = register("second", pid).expect_err("already named");
        assert_eq!(
            error,
            RegisterError::AlreadyNamed {
                pid,
                name: "first".into()
            }
        );
        assert_eq!(whereis("second"), None);
        assert_eq!(whereis("first"), Some(pid));
    });
}

// §11.1, §3.3: a dead process cannot be registered, and sending to the name
// fails. Port of process_SUITE:bad_register (the cases Rust's types allow).
#[test]
fn registering_a_dead_process_fails_with_noproc() {
    let rt = runtime();
    rt.block_on(async {
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        let error = register("a_long_and_unused_name", dead).expect_err("dead");
        assert_eq!(error, RegisterError::NoProc(dead));
        assert_eq!(error.to_string(), format!("noproc: {dead} is not alive"));
        assert_eq!(whereis("a_long_and_unused_name"), None);
        assert!(send_named("a_long_and_unused_name", "anything goes").is_err());
    });
}

// §11.2: unregistering a name nobody holds fails.
#[test]
fn unregistering_an_unknown_name_fails() {
    let rt = runtime();
    rt.block_on(async {
        let error = unregister("nobody").expect_err("not registered");
        assert_eq!(error, NotRegistered("nobody".into()));
        assert_eq!(error.to_string(), "no process is registered as \"nobody\"");
        assert_eq!(whereis("nobody"), None);
    });
}

// §11.2: any process may unregister any name; the process lives on unnamed
// and may take a new name.
#[test]
fn unregister_frees_the_name_and_the_process_keeps_running() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let pid = spawn(async move {
            let n: u32 = recv().await;
            send(me, n);
        });
        register("temp", pid).expect("free name");
        unregister("temp").expect("registered");
        register("temp", me).expect("free again");
        register("renamed", pid).expect("no name any more");
        send(pid, 7u32);
        assert_eq!(recv::<u32>().await, 7);
    });
}

// §11.3: a name is released when its process exits, however it exits.
#[test]
fn a_name_is_released_when_its_process_exits() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        // Normal return.
        let (pid, watch) = spawn_monitor(async {
            let _: u32 = recv().await;
        });
        register("normal_exit", pid).expect("free name");
        send(pid, 1u32);
        down_of(watch).await;
        assert_eq!(whereis("normal_exit"), None);
        // Crash.
        let (pid, watch) = spawn_monitor(async {
            let _: u32 = recv().await;
            ExitReason::error("crash")
        });
        register("crash_exit", pid).expect("free name");
        send(pid, 1u32);
        down_of(watch).await;
        assert_eq!(whereis("crash_exit"), None);
        // Killed: released before exit returns (§9.1).
        let pid = spawn(wait_forever());
        register("killed_exit", pid).expect("free name");
        exit(pid, ExitReason::Kill);
        assert_eq!(whereis("killed_exit"), None);
        register("killed_exit", me).expect("the name is free at once");
    });
}

// §11.1, §11.3: registering, killing and re-registering the same name in a
// tight loop never finds the name taken by a dead process.
// Port of register_SUITE:otp_8099 (1000 rounds instead of a million).
#[test]
fn register_and_kill_in_a_loop_never_finds_the_name_taken() {
    const NAME: &str = "otp_8099_reg_proc";
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..1000 {
            let pid = spawn(wait_forever());
            if register(NAME, pid).is_err() {
                // What OTP tolerates: clean up whoever holds it, then retry.
                if let Some(old) = whereis(NAME) {
                    let _ = unregister(NAME);
                    exit(old, ExitReason::Kill);
                }
                register(NAME, pid).expect("free after cleanup");
            }
            assert_eq!(whereis(NAME), Some(pid));
            exit(pid, ExitReason::Kill);
        }
        assert_eq!(whereis(NAME), None);
    });
}

// §11.2: whereis of an unknown name is None, from inside and outside.
#[test]
fn whereis_of_an_unknown_name_is_none() {
    let rt = runtime();
    assert_eq!(rt.handle().whereis("nobody"), None);
    rt.block_on(async {
        assert_eq!(whereis("nobody"), None);
        assert_eq!(whereis(""), None);
    });
}

// §11.2: registered lists every name with its pid.
#[test]
fn registered_lists_every_name() {
    let rt = runtime();
    rt.block_on(async {
        // What the runtime registers itself (`user`, the default group leader).
        let mut expected: Vec<(String, Pid)> = registered()
            .into_iter()
            .map(|(name, pid)| (name.to_string(), pid))
            .collect();
        assert!(expected.iter().any(|(name, _)| name == "user"));
        for name in ["alpha", "beta", "gamma"] {
            let pid = spawn(wait_forever());
            register(name, pid).expect("free name");
            expected.push((name.to_string(), pid));
        }
        let mut listed: Vec<(String, Pid)> = registered()
            .into_iter()
            .map(|(name, pid)| (name.to_string(), pid))
            .collect();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected);
    });
}
