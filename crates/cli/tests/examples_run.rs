//! The README's examples run to the end within a deadline and print what
//! the README shows: the cluster walk-through
//! (`examples/cluster_walkthrough.rs`) and the rolling upgrade
//! (`examples/rolling_upgrade.rs`: the service moves from the v1 node to
//! the v2 node with its state migrated by `code_change`, and the client
//! calling it throughout saw no error beyond the retryable `Moving`).
//!
//! Each example is built with the cargo that runs this test (a no-op when
//! `cargo test --workspace` already built it, with the features in
//! `EMBER_TEST_FEATURES` if set) and run on a port mapper port of its own
//! (`ERL_EPMD_PORT`, free when the test starts), so its embedded epmd
//! never meets another test's.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ember_testkit::free_port;

/// How long the example may take once built.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Example `name`'s binary, built for this test's profile.
fn example_binary(name: &str) -> PathBuf {
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
    // `--workspace`, as `cargo test --workspace` resolves features: with
    // `-p ember` alone the dependencies (tokio's features among them)
    // resolve differently and this build compiled the whole tree again.
    build.args(["build", "--quiet", "--workspace", "--example", name]);
    if release {
        build.arg("--release");
    }
    // And with the features the test build was made with (`scripts/test`
    // turns on the loom models' features, and says so here): other
    // features would build every crate above them again.
    if let Ok(features) = std::env::var("EMBER_TEST_FEATURES") {
        if !features.is_empty() {
            build.args(["--features", &features]);
        }
    }
    // The variables cargo sets for this test process describe this test's
    // package, not the build: a build script that tracks one (ring's tracks
    // `CARGO_MANIFEST_DIR`) would rerun and everything above it rebuild,
    // here and again in the next `cargo test`.
    for (var, _) in std::env::vars_os() {
        let Some(var) = var.to_str() else { continue };
        if var.starts_with("CARGO_PKG_")
            || matches!(
                var,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            )
        {
            build.env_remove(var);
        }
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the example failed: {status}");
    profile_dir.join("examples").join(name)
}

/// Builds and runs example `name`; its output, once it succeeded and
/// printed every one of `expected`.
fn run_example(name: &str, expected: &[&str]) -> String {
    let binary = example_binary(name);
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
            panic!("example {name} did not finish within {RUN_DEADLINE:?}");
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
    assert!(status.success(), "example {name} failed ({status}):\n{out}");
    for line in expected {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    out
}

#[test]
fn the_cluster_walkthrough_runs_and_prints_each_step() {
    run_example(
        "cluster_walkthrough",
        &[
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
        ],
    );
}

#[test]
fn the_rolling_upgrade_example_migrates_the_state_without_client_errors() {
    run_example(
        "rolling_upgrade",
        &[
            "runs counter version 1 on v1@localhost: 5 calls answered",
            "v2@localhost joined, running counter version 2",
            "now on v2@localhost: version 2",
            "state migrated from version 1",
            " 0 errors",
            "rolling upgrade done",
        ],
    );
}
