//! A throw-away PostgreSQL server for tests: [`TempPostgres::start`] runs
//! `initdb` and `pg_ctl start` in a fresh temporary directory, on a free
//! port of 127.0.0.1 (and a Unix socket in that directory, never the
//! system's), and stops the server and removes the directory when dropped.
//!
//! The binaries come from `EMBER_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package),
//! else `PATH`. PostgreSQL refuses to run as root: as root, the server runs
//! as the `postgres` user (which Debian's package creates), through
//! `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{free_port, TempDir};

/// The variable that lets PostgreSQL tests skip where it is not installed
/// (`scripts/test --quick` sets it then).
pub const SKIP_VAR: &str = "EMBER_SKIP_POSTGRES";

/// The directory of `initdb` and `pg_ctl`, if PostgreSQL is installed.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("EMBER_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let found = Command::new("initdb")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found.then(PathBuf::new)
}

/// True when PostgreSQL is installed; false (skip the test, saying so) when
/// it is not and `EMBER_SKIP_POSTGRES` is set; a panic otherwise.
pub fn required() -> bool {
    if bin_dir().is_some() {
        return true;
    }
    if std::env::var_os(SKIP_VAR).is_some() {
        eprintln!("skipping the PostgreSQL test: PostgreSQL is not installed ({SKIP_VAR} set)");
        return false;
    }
    panic!(
        "PostgreSQL is not installed: install Debian's postgresql (scripts/test does), \
         or set {SKIP_VAR} to skip"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A running PostgreSQL server in a temporary directory.
#[derive(Debug)]
pub struct TempPostgres {
    dir: TempDir,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
}

impl TempPostgres {
    /// Creates a cluster (trust authentication, superuser `postgres`, no
    /// fsync: it is thrown away) and starts it, waiting until it accepts
    /// connections. Panics with the server's log if it cannot.
    pub fn start() -> TempPostgres {
        let bin = bin_dir().expect("PostgreSQL is not installed");
        let dir = TempDir::new("ember-pg");
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand {} to the postgres user", dir.arg());
        }
        let mut pg = TempPostgres {
            dir,
            bin,
            as_postgres,
            port: 0,
        };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A port taken between free_port and the start: try a few.
        for _ in 0..5 {
            pg.port = free_port();
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=100",
                pg.port,
                pg.dir.arg()
            );
            let status = pg
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-o", &opts, "-l"])
                .arg(pg.log())
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null())
                .status()
                .expect("pg_ctl runs");
            if status.success() {
                return pg;
            }
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(pg.log()).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn command(&self, program: &str) -> Command {
        let exe = if self.bin.as_os_str().is_empty() {
            PathBuf::from(program)
        } else {
            self.bin.join(program)
        };
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `postgres` as the superuser.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` as the superuser.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` (letters, digits, `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a plain database name"
        );
        let psql = if self.bin.as_os_str().is_empty() {
            PathBuf::from("psql")
        } else {
            self.bin.join("psql")
        };
        let out = Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.url(), "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "CREATE DATABASE {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url_of(name)
    }

    /// The directory the server lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
