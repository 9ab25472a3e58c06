//! The README's cluster walk-through (`examples/cluster_walkthrough.rs`)
//! runs to the end and prints what the README shows, within a deadline.
//!
//! The example is built with the cargo that runs this test (a no-op when
//! `cargo test` already built it) and run on a port mapper port of its own
//! (`ERL_EPMD_PORT`, free when the test starts), so its embedded epmd
//! never meets another test's.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ember_testkit::free_port;

/// How long the example may take once built.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The example's binary, built for this test's profile.
fn example_binary() -> PathBuf {
    let test = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test>
    let profile_dir = test
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "ember",
        "--example",
        "cluster_walkthrough",
    ]);
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the example failed: {status}");
    profile_dir.join("examples").join("cluster_walkthrough")
}

#[test]
fn the_cluster_walkthrough_runs_and_prints_each_step() {
    let binary = example_binary();
    let mut child = Command::new(&binary)
        .env("ERL_EPMD_PORT", free_port().to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the walkthrough did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    eprintln!("{out}");
    assert!(
        status.success(),
        "the walkthrough failed ({status}):\n{out}"
    );
    for line in [
        "I am foo@localhost",
        // Printed on bar, through foo's group leader.
        "hello from bar@localhost",
        // A process spawned and linked on bar (dist::spawn_link).
        "on bar@localhost answered {pong,bar@localhost}",
        "rpc: walkthrough:fact_bits(1000) on bar@localhost = 8530",
        "gen_server call: counter on bar@localhost says 3",
        // A supervised task on bar: its pid is bar's, its result 1000!'s bits.
        "on bar@localhost: 8530",
        "walkthrough done",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}
