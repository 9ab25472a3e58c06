//! The demo as a distributed node (`--sname` / `--name`): the node's name
//! and cookie, the `ember_echo` process, the `ember_kv` server, the
//! `ember_tasks` task supervisor (Elixir's `Task.Supervisor` protocol) and
//! the `ember_demo` functions other nodes can spawn, call and run as
//! tasks. `ember_kv` and `ember_tasks` run under one supervisor.
//!
//! The node is started with `ember_dist::Node::start_in_runtime`: Ember
//! processes are the node's processes, messages from peers land in their
//! mailboxes as `ember_term::Term`s, and a `Term` sent to a remote pid
//! crosses (`ember_runtime::dist`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ember_dist::{tasks, Functions, Raise};
use ember_otp::gen::{ReplyTo, StartError, StartOptions};
use ember_otp::gen_server::{self, CallReturn, GenServer, Init};
use ember_otp::supervisor::{ChildSpec, Flags, SupervisorRef, SupervisorSpec};
use ember_runtime::{dist, receive, send, Exit, ExitReason, Spawn};
use ember_term::{BigInt, Term};

/// The name `ember_echo` is registered under.
pub(crate) const ECHO: &str = "ember_echo";

/// The name `ember_kv` is registered under.
pub(crate) const KV: &str = "ember_kv";

/// The name the task supervisor is registered under.
pub(crate) const TASKS: &str = "ember_tasks";

/// The name the supervisor of `ember_kv` and `ember_tasks` is registered
/// under.
pub(crate) const SERVICES: &str = "ember_services";

/// `ember_kv`: a key-value store other nodes call with `gen_server:call`:
/// `{put, K, V}` → `ok`, `{get, K}` → `{ok, V}` or `error`. Anything else
/// gets `{error, {bad_request, Request}}`.
pub(crate) struct Kv(HashMap<Term, Term>);

/// A request to [`Kv`].
pub(crate) enum KvCall {
    /// Store `V` under `K`.
    Put(Term, Term),
    /// Look `K` up.
    Get(Term),
}

impl GenServer for Kv {
    type Args = ();
    type Call = KvCall;
    type Reply = Term;
    type Cast = ();
    type Continue = ();

    async fn init(_: ()) -> Init<Self> {
        Init::Ok(Kv(HashMap::new()))
    }

    async fn handle_call(&mut self, request: KvCall, _from: &ReplyTo<Term>) -> CallReturn<Self> {
        CallReturn::Reply(match request {
            KvCall::Put(k, v) => {
                self.0.insert(k, v);
                Term::atom("ok")
            }
            KvCall::Get(k) => match self.0.get(&k) {
                Some(v) => Term::tuple([Term::atom("ok"), v.clone()]),
                None => Term::atom("error"),
            },
        })
    }

    fn call_from_term(request: Term) -> Result<KvCall, Term> {
        match request.as_tuple() {
            Some([put, k, v]) if put.is_atom("put") => Ok(KvCall::Put(k.clone(), v.clone())),
            Some([get, k]) if get.is_atom("get") => Ok(KvCall::Get(k.clone())),
            _ => Err(Term::tuple([Term::atom("bad_request"), request])),
        }
    }

    fn reply_to_term(reply: Term) -> Term {
        reply
    }
}

/// Starts the supervisor of the node's services, linked to the caller
/// (the binary's root, which traps exits): `ember_kv` and `ember_tasks`
/// (running `functions`), each restarted when it exits (one_for_one, at
/// most 10 restarts in 10 s, as `ember_echo`'s keeper).
pub(crate) async fn start_services(functions: Functions) -> Result<SupervisorRef, StartError> {
    let kv = ChildSpec::worker(KV, || async {
        gen_server::start_link_with::<Kv>((), StartOptions::new().name(KV)).await
    })
    .build()
    .expect("a valid child spec");
    let tasks = tasks::task_supervisor_spec(TASKS, TASKS, functions, None)
        .build()
        .expect("a valid child spec");
    let flags = Flags::new().intensity(10).period(Duration::from_secs(10));
    SupervisorSpec::new(flags, vec![kv, tasks])
        .expect("valid child specs")
        .start_link_with(StartOptions::new().name(SERVICES))
        .await
}

/// The largest `N` `ember_demo:fact_bits/1` computes.
const MAX_FACT: u64 = 20_000;

/// The `ember_demo` functions other nodes spawn and call, and
/// `erlang:processes/0`, `erlang:process_info/1,2` and
/// `ember_introspect:top/1` for other nodes' consoles and shells.
pub(crate) fn demo_functions() -> Functions {
    let mut f = Functions::new();
    ember_dist::register_introspection(&mut f);
    f.register("ember_demo", "fact_bits", 1, |args| async move {
        let n = args[0].as_int().and_then(|n| u64::try_from(n).ok());
        match n.filter(|&n| n <= MAX_FACT) {
            Some(n) => Ok(Term::from(fact_bits(n))),
            None => Err(Raise::Error(Term::atom("badarg"))),
        }
    });
    f.register("ember_demo", "sum", 1, |args| async move {
        let Some(n) = args[0].as_int().and_then(|n| u64::try_from(n).ok()) else {
            return Err(Raise::Error(Term::atom("badarg")));
        };
        if n == 13 {
            // As the console's Math page does.
            panic!("sum(13) crashes on purpose");
        }
        let n = u128::from(n);
        Ok(Term::from(n * (n + 1) / 2))
    });
    f.register("ember_demo", "node_info", 0, |_| async {
        let nodes = dist::nodes().into_iter().map(Term::Atom);
        Ok(Term::tuple([
            Term::Atom(dist::node()),
            Term::list(nodes),
            Term::from(ember_runtime::introspect::processes().len()),
        ]))
    });
    f.register("ember_demo", "echo_loop", 0, |_| async {
        loop {
            echo_one(&receive::<Term>().await);
        }
    });
    f.register("ember_demo", "print", 1, |args| async move {
        // Through the caller's group leader: an `rpc:call` from erl prints
        // on the erl side, as an Erlang function's `io:format` would.
        ember_runtime::io::println!("{}", args[0]).await;
        Ok(Term::atom("ok"))
    });
    f
}

/// The bit length of `n!`.
fn fact_bits(n: u64) -> u64 {
    let mut product = BigInt::from(1u32);
    for i in 2..=n {
        product *= i;
    }
    product.bits()
}

/// The node name for `--sname NAME` (`NAME@<short host name>`; a name
/// with a host is taken as it is, as `erl -sname` does) or `--name
/// NAME@HOST`.
pub(crate) fn node_name(sname: Option<&str>, name: Option<&str>) -> Result<String, String> {
    match (sname, name) {
        (Some(s), None) if s.contains('@') => Ok(s.to_string()),
        (Some(s), None) => Ok(format!("{s}@{}", short_host_name())),
        (None, Some(n))
            if n.split_once('@')
                .is_some_and(|(a, h)| !a.is_empty() && !h.is_empty()) =>
        {
            Ok(n.to_string())
        }
        (None, Some(n)) => Err(format!("--name wants NAME@HOST, not {n:?}")),
        _ => Err("give --sname or --name, not both".to_string()),
    }
}

/// This machine's host name up to its first dot (`localhost` when it
/// cannot be read).
fn short_host_name() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let short = full.trim().split('.').next().unwrap_or("").to_string();
    if short.is_empty() {
        "localhost".to_string()
    } else {
        short
    }
}

/// The cookie: `--cookie`, else `EMBER_COOKIE`, else `~/.erlang.cookie`
/// (created as erl creates it when missing: 20 random uppercase letters,
/// mode 0400).
pub(crate) fn cookie(flag: Option<&str>) -> Result<String, String> {
    if let Some(c) = flag {
        return non_empty(c.to_string(), "--cookie");
    }
    if let Some(c) = std::env::var_os("EMBER_COOKIE") {
        let c = c
            .into_string()
            .map_err(|_| "EMBER_COOKIE is not valid UTF-8".to_string())?;
        return non_empty(c, "EMBER_COOKIE");
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or("no --cookie, no EMBER_COOKIE and no HOME for ~/.erlang.cookie")?;
    cookie_file(&PathBuf::from(home).join(".erlang.cookie"))
}

fn non_empty(cookie: String, from: &str) -> Result<String, String> {
    if cookie.is_empty() {
        Err(format!("{from} is empty: a cookie must not be"))
    } else {
        Ok(cookie)
    }
}

fn cookie_file(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let c = s.lines().next().unwrap_or("").trim().to_string();
            if c.is_empty() {
                Err(format!("{} is empty", path.display()))
            } else {
                Ok(c)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let c = random_cookie()?;
            write_new_cookie(path, &c)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            Ok(c)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn random_cookie() -> Result<String, String> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a cookie: {e}"))?;
    // 256 is not a multiple of 26; the bias is irrelevant for a cookie
    // (erl's own generator is no better).
    Ok(bytes.iter().map(|b| char::from(b'A' + b % 26)).collect())
}

fn write_new_cookie(path: &Path, cookie: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)?;
    f.write_all(cookie.as_bytes())
}

/// Spawns `ember_echo` under a small keeper that restarts it when it
/// exits (giving up after 10 restarts within 10 s, as a supervisor would).
pub(crate) fn spawn_echo() {
    let keeper = Spawn::new()
        .trap_exit(true)
        .label("ember_echo keeper")
        .spawn(async move {
            let mut restarts: Vec<Instant> = Vec::new();
            loop {
                let spawned = Spawn::new().name(ECHO).link().label(ECHO).spawn(echo());
                let pid = match spawned {
                    Ok(s) => s.pid,
                    Err(e) => {
                        tracing::warn!("ember: cannot start {ECHO}: {e}");
                        return ExitReason::error("ember_echo did not start");
                    }
                };
                let exit: Exit = receive().matching(move |e: &Exit| e.from == pid).await;
                let now = Instant::now();
                restarts.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
                restarts.push(now);
                if restarts.len() > 10 {
                    tracing::warn!(
                        "ember: {ECHO} keeps exiting ({:?}); not restarted",
                        exit.reason
                    );
                    return ExitReason::error("ember_echo restarted too often");
                }
                tracing::info!("ember: {ECHO} exited ({:?}); restarting it", exit.reason);
            }
        });
    if let Err(e) = keeper {
        tracing::warn!("ember: cannot start {ECHO}'s keeper: {e}");
    }
}

/// `ember_echo`: on `{Pid, Term}` sends `Term` back to `Pid` unchanged.
pub(crate) async fn echo() {
    loop {
        let message = receive::<Term>().await;
        echo_one(&message);
    }
}

/// Answers one `{Pid, Term}` with `Term`; anything else is ignored.
pub(crate) fn echo_one(message: &Term) {
    let Some([to @ Term::Pid(_), term]) = message.as_tuple() else {
        tracing::debug!("ember: {ECHO} ignores {message}: not {{Pid, Term}}");
        return;
    };
    match dist::pid_from_term(to) {
        Some(pid) => send(pid, term.clone()),
        None => tracing::debug!("ember: {ECHO} cannot answer {to}: no room for its node"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_runtime::Handle;

    /// Waits (up to 10 s) until `ember_echo` is registered to a pid other
    /// than `not`.
    async fn echo_pid(h: &Handle, not: Option<ember_runtime::Pid>) -> ember_runtime::Pid {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match h.whereis(ECHO) {
                Some(p) if Some(p) != not => return p,
                _ => {}
            }
            assert!(Instant::now() < deadline, "{ECHO} is not (re)registered");
            ember_runtime::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn ember_echo_answers_pid_term_pairs_ignores_junk_and_is_restarted_when_killed() {
        let rt = ember_runtime::Runtime::builder()
            .schedulers(1)
            .build()
            .unwrap();
        rt.block_on(async {
            let h = Handle::current();
            spawn_echo();
            let first = echo_pid(&h, None).await;
            let me = dist::pid_to_term(ember_runtime::self_pid());
            send(first, Term::atom("junk"));
            send(first, 42u32); // not a term: stays in its mailbox
            send(first, Term::tuple([me, Term::from(7)]));
            let back = receive::<Term>().timeout(Duration::from_secs(10)).await;
            assert_eq!(back, Some(Term::from(7)));
            assert_eq!(h.whereis(ECHO), Some(first));
            // Killed, it is started again.
            h.exit(first, ExitReason::Kill);
            let second = echo_pid(&h, Some(first)).await;
            assert!(!h.is_alive(first));
            assert!(h.is_alive(second));
        });
    }

    #[test]
    fn ember_kv_is_supervised_a_killed_one_is_restarted_and_answers() {
        let rt = ember_runtime::Runtime::builder()
            .schedulers(1)
            .build()
            .unwrap();
        rt.block_on(async {
            let h = Handle::current();
            ember_runtime::trap_exit(true);
            start_services(demo_functions()).await.unwrap();
            let kv = gen_server::GenServerRef::<Kv>::from_name(KV);
            let put = KvCall::Put(Term::atom("k"), Term::from(1));
            assert_eq!(kv.call(put).await, Ok(Term::atom("ok")));
            let first = h.whereis(KV).expect("ember_kv runs");
            h.exit(first, ExitReason::Kill);
            let deadline = Instant::now() + Duration::from_secs(10);
            let second = loop {
                match h.whereis(KV) {
                    Some(p) if p != first => break p,
                    _ => {}
                }
                assert!(Instant::now() < deadline, "{KV} is not restarted");
                ember_runtime::sleep(Duration::from_millis(1)).await;
            };
            assert!(!h.is_alive(first));
            // A new server, with a new (empty) state, and the task
            // supervisor untouched beside it.
            let get = KvCall::Get(Term::atom("k"));
            assert_eq!(kv.call(get).await, Ok(Term::atom("error")));
            assert_eq!(h.whereis(KV), Some(second));
            assert!(h.whereis(TASKS).is_some());
        });
    }

    #[test]
    fn node_names() {
        assert_eq!(node_name(Some("a@b"), None).unwrap(), "a@b");
        assert!(node_name(Some("a"), None).unwrap().starts_with("a@"));
        assert!(!node_name(Some("a"), None).unwrap().contains('.'));
        assert_eq!(node_name(None, Some("a@b.c")).unwrap(), "a@b.c");
        assert!(node_name(None, Some("a")).is_err());
        assert!(node_name(None, Some("a@")).is_err());
    }

    #[test]
    fn an_empty_cookie_flag_is_an_error() {
        assert!(cookie(Some("")).is_err());
        assert_eq!(cookie(Some("c")).unwrap(), "c");
    }

    #[test]
    fn a_missing_cookie_file_is_created_read_only_with_20_uppercase_letters() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ember-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".erlang.cookie");
        let _ = std::fs::remove_file(&path);
        let c = cookie_file(&path).unwrap();
        assert_eq!(c.len(), 20);
        assert!(c.bytes().all(|b| b.is_ascii_uppercase()), "{c}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        // Read back as it is.
        assert_eq!(cookie_file(&path).unwrap(), c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
