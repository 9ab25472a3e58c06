//! The README's rolling upgrade example (`examples/rolling_upgrade.rs`)
//! runs to the end within a deadline: the service moves from the v1 node
//! to the v2 node with its state migrated by `code_change`, and the client
//! calling it throughout saw no error beyond the retryable `Moving`.
//!
//! Built and run like the walkthrough (see `example_walkthrough.rs`).

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
        "rolling_upgrade",
    ]);
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the example failed: {status}");
    profile_dir.join("examples").join("rolling_upgrade")
}

#[test]
fn the_rolling_upgrade_example_migrates_the_state_without_client_errors() {
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
            panic!("the example did not finish within {RUN_DEADLINE:?}");
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
    assert!(status.success(), "the example failed ({status}):\n{out}");
    for line in [
        "runs counter version 1 on v1@localhost: 5 calls answered",
        "v2@localhost joined, running counter version 2",
        "now on v2@localhost: version 2",
        "state migrated from version 1",
        " 0 errors",
        "rolling upgrade done",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}
