//! The `ember` binary as a distributed node, run as a user would, with a
//! real `erl` as its peer: `--sname`/`--cookie`, `net_adm:ping`, the
//! `ember_echo` process sending every kind of term back unchanged, a wrong
//! cookie refused while HTTP stays healthy, and no distribution at all
//! without the flags.
//!
//! Every test gives the binary and erl a port mapper port of their own
//! (`ERL_EPMD_PORT`, free when the test starts): no epmd answers there, so
//! the binary starts its embedded one, and erl (`-start_epmd false`)
//! registers with it. Names and cookies are unique. Every wait has a
//! deadline.
//!
//! `erl` must be installed (`scripts/test` installs `erlang-base` for its
//! full run). Without it the tests that need it fail, unless
//! `EMBER_TERM_SKIP_ERL` is set (`scripts/test --quick` sets it when `erl`
//! is missing, and says so).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_testkit::{erl_required, free_port, random_cookie, unique, DEADLINE};

/// The binary, stopped (killed) when the test ends however it ends.
struct Ember {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
}

impl Ember {
    fn start(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> Ember {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ember"));
        cmd.args(["--listen", "127.0.0.1:0", "--schedulers", "2"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        for k in remove {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("the ember binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("ember: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut ember = Ember {
            child,
            lines,
            addr: ([0, 0, 0, 0], 0).into(),
        };
        // The first line is the HTTP address, as before.
        let first = ember.line();
        ember.addr = first
            .strip_prefix("ember: listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        ember
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("ember said nothing more in time")
    }

    /// The node name from the line after the address.
    fn node_name(&mut self) -> String {
        let line = self.line();
        line.strip_prefix("ember: distributed as ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no node name in {line:?}"))
            .to_string()
    }

    /// Ctrl-C, then everything it still says until it exits.
    fn stop(self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + DEADLINE;
        let mut rest = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("ember did not stop on Ctrl-C"),
            }
        }
        rest
    }
}

impl Drop for Ember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /ping`, which answers `pong` on a healthy node.
fn ping_http(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    write!(
        stream,
        "GET /ping HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Runs `script` (Erlang expressions, `E` bound to the Ember node's
/// name) on a fresh `erl -sname` node and returns what it evaluated to.
fn run_erl(cookie: &str, epmd_port: u16, ember_node: &str, script: &str) -> String {
    ember_testkit::run_erl(
        "-sname",
        &unique("erl"),
        cookie,
        epmd_port,
        ember_node,
        script,
    )
}

/// One term of each kind, sent to `ember_echo` and expected back as it is.
const ECHO_ALL: &str = r#"
    pong = net_adm:ping(E),
    Terms = [1 bsl 200, -(1 bsl 200), -1, 0, 1.5, -0.0, <<"bin">>, <<>>, <<1:3>>,
             #{a => 1, "k" => [1.0, {x}], <<"b">> => #{}},
             [1, [2, 3 | 4], "str" | tail], [], "", self(), make_ref(),
             {a, b, {c, []}}, {}, an_atom, 'ünïcödé', fun erlang:node/0],
    [begin
         {ember_echo, E} ! {self(), T},
         receive T -> ok after 5000 -> exit({timeout, T}) end
     end || T <- Terms],
    {ok, length(Terms)}"#;

#[test]
fn erl_pings_the_binary_and_ember_echo_sends_every_term_back() {
    if !erl_required() {
        return;
    }
    let epmd_port = free_port();
    let cookie = random_cookie();
    let alive = unique("ember");
    let mut ember = Ember::start(
        &["--sname", &alive, "--cookie", &cookie],
        &[("ERL_EPMD_PORT", &epmd_port.to_string())],
        &[],
    );
    let node = ember.node_name();
    assert!(node.starts_with(&format!("{alive}@")), "{node}");
    assert!(!node.contains('.'), "a short name: {node}");

    assert_eq!(run_erl(&cookie, epmd_port, &node, ECHO_ALL), "{ok,20}");
    // Again from a second erl node, over a new connection.
    assert_eq!(run_erl(&cookie, epmd_port, &node, ECHO_ALL), "{ok,20}");
    // Junk to ember_echo is ignored, and it keeps answering.
    let junk = r#"
        pong = net_adm:ping(E),
        {ember_echo, E} ! not_a_pair,
        {ember_echo, E} ! {not_a_pid, x},
        {nobody_here, E} ! {self(), x},
        {ember_echo, E} ! {self(), still_here},
        receive still_here -> ok after 5000 -> timeout end"#;
    assert_eq!(run_erl(&cookie, epmd_port, &node, junk), "ok");
    // A 1 MiB binary there and back (in fragments both ways).
    let big = r#"
        pong = net_adm:ping(E),
        B = list_to_binary([I rem 251 || I <- lists:seq(0, 1048575)]),
        {ember_echo, E} ! {self(), {big, B}},
        receive {big, B} -> ok after 10000 -> timeout end"#;
    assert_eq!(run_erl(&cookie, epmd_port, &node, big), "ok");

    assert_eq!(ping_http(ember.addr).as_deref(), Some("pong"));
    let rest = ember.stop();
    assert_eq!(rest.last().map(String::as_str), Some("ember: stopped"));
}

/// `ember_kv` answers gen_server calls as the issue's contract says.
const KV_CALLS: &str = r#"
    ok = gen_server:call({ember_kv, E}, {put, k, #{v => [1, 2.5]}}),
    ok = gen_server:call({ember_kv, E}, {put, 1 bsl 100, <<"big">>}),
    {ok, #{v := [1, 2.5]}} = gen_server:call({ember_kv, E}, {get, k}),
    {ok, <<"big">>} = gen_server:call({ember_kv, E}, {get, 1 bsl 100}),
    error = gen_server:call({ember_kv, E}, {get, nope}),
    Bad = gen_server:call({ember_kv, E}, frobnicate),
    {'EXIT', {noproc, _}} = (catch gen_server:call({nobody_here, E}, x, 1000)),
    {ok, Bad}"#;

/// rpc, erpc and remote spawn_link of the `ember_demo` functions.
const RPC_AND_SPAWN: &str = r#"
    8530 = rpc:call(E, ember_demo, fact_bits, [1000]),
    8530 = erpc:call(E, ember_demo, fact_bits, [1000]),
    55 = rpc:call(E, ember_demo, sum, [10]),
    {badrpc, {'EXIT', {undef, [{ember_demo, nosuch, [1], []}]}}} = rpc:call(E, ember_demo, nosuch, [1]),
    {badrpc, {'EXIT', {{panic, Why}, _}}} = rpc:call(E, ember_demo, sum, [13]),
    {badrpc, {'EXIT', {badarg, _}}} = rpc:call(E, ember_demo, fact_bits, [x]),
    {E, Nodes, Count} = rpc:call(E, ember_demo, node_info, []),
    true = lists:member(node(), Nodes),
    true = is_integer(Count) andalso Count > 0,
    process_flag(trap_exit, true),
    P = spawn_link(E, ember_demo, echo_loop, []),
    E = node(P),
    P ! {self(), [hello, 1.5]},
    [hello, 1.5] = receive [hello, 1.5] = M -> M after 5000 -> timeout end,
    exit(P, kill),
    killed = receive {'EXIT', P, Why1} -> Why1 after 5000 -> no_exit end,
    {P2, Ref} = spawn_monitor(E, ember_demo, nosuch, []),
    {undef, _} = receive {'DOWN', Ref, process, P2, Why2} -> Why2 after 5000 -> no_down end,
    {ok, Why}"#;

/// `ember_demo:print/1` by `rpc:call` and `erpc:call` from an erl process
/// whose group leader is a collector speaking the I/O protocol: the text
/// must reach the collector (the caller's group leader), not Ember's
/// stdout, and each call must return `ok`.
const PRINT_TO_CALLERS_GROUP_LEADER: &str = r#"
    Parent = self(),
    Collector = spawn(fun Loop() ->
        receive
            {io_request, From, ReplyAs, Req} ->
                Parent ! {printed, Req},
                From ! {io_reply, ReplyAs, ok},
                Loop()
        end
    end),
    Caller = spawn(fun() ->
        group_leader(Collector, self()),
        Parent ! {called, rpc:call(E, ember_demo, print, [hello]),
                  erpc:call(E, ember_demo, print, [{world, 1, [2]}])}
    end),
    Called = receive {called, R1, R2} -> {R1, R2} after 10000 -> {no_reply, Caller} end,
    Text = fun() -> receive {printed, {put_chars, unicode, C}} -> unicode:characters_to_list(C);
                            {printed, Other} -> {unexpected, Other}
                    after 10000 -> no_output end end,
    T1 = Text(),
    T2 = Text(),
    {Called, T1, T2}"#;

#[test]
fn erl_calls_ember_kv_and_runs_ember_demo_functions_by_rpc_and_spawn() {
    if !erl_required() {
        return;
    }
    let epmd_port = free_port();
    let cookie = random_cookie();
    let mut ember = Ember::start(
        &["--sname", &unique("ember"), "--cookie", &cookie],
        &[("ERL_EPMD_PORT", &epmd_port.to_string())],
        &[],
    );
    let node = ember.node_name();
    assert_eq!(
        run_erl(&cookie, epmd_port, &node, KV_CALLS),
        "{ok,{error,{bad_request,frobnicate}}}"
    );
    assert_eq!(
        run_erl(&cookie, epmd_port, &node, RPC_AND_SPAWN),
        "{ok,<<115,117,109,40,49,51,41,32,99,114,97,115,104,101,115,32,111,110,32,112,117,114,112,111,115,101>>}"
    );
    assert_eq!(
        run_erl(&cookie, epmd_port, &node, PRINT_TO_CALLERS_GROUP_LEADER),
        "{{ok,ok},[104,101,108,108,111,10],[123,119,111,114,108,100,44,49,44,91,50,93,125,10]}",
        "hello and {{world,1,[2]}} reach the erl caller's group leader"
    );
    assert_eq!(ping_http(ember.addr).as_deref(), Some("pong"));
    ember.stop();
}

#[test]
fn a_wrong_cookie_gets_pang_and_the_http_server_stays_healthy() {
    if !erl_required() {
        return;
    }
    let epmd_port = free_port();
    let cookie = random_cookie();
    let mut ember = Ember::start(
        &["--sname", &unique("ember"), "--cookie", &cookie],
        &[("ERL_EPMD_PORT", &epmd_port.to_string())],
        &[],
    );
    let node = ember.node_name();
    let script = format!(
        "A = net_adm:ping(E), \
         true = erlang:set_cookie(E, '{cookie}'), \
         {{A, net_adm:ping(E)}}"
    );
    assert_eq!(
        run_erl(&random_cookie(), epmd_port, &node, &script),
        "{pang,pong}"
    );
    assert_eq!(ping_http(ember.addr).as_deref(), Some("pong"));
    // And a peer with the right cookie from the start.
    assert_eq!(
        run_erl(&cookie, epmd_port, &node, "net_adm:ping(E)"),
        "pong"
    );
    assert_eq!(ping_http(ember.addr).as_deref(), Some("pong"));
}

#[test]
fn long_names_work_with_name() {
    if !erl_required() {
        return;
    }
    let epmd_port = free_port();
    let cookie = random_cookie();
    let name = format!("{}@127.0.0.1", unique("ember"));
    let mut ember = Ember::start(
        &["--name", &name, "--cookie", &cookie],
        &[("ERL_EPMD_PORT", &epmd_port.to_string())],
        &[],
    );
    assert_eq!(ember.node_name(), name);
    let erl = format!("{}@127.0.0.1", unique("erl"));
    assert_eq!(
        ember_testkit::run_erl("-name", &erl, &cookie, epmd_port, &name, ECHO_ALL),
        "{ok,20}"
    );
}

#[test]
fn without_sname_or_name_the_binary_is_not_a_node() {
    // A port mapper that would see any registration attempt.
    let epmd = TcpListener::bind("127.0.0.1:0").unwrap();
    let epmd_port = epmd.local_addr().unwrap().port();
    let ember = Ember::start(
        &[],
        &[
            ("ERL_EPMD_PORT", &epmd_port.to_string()),
            ("EMBER_COOKIE", "unused"),
        ],
        &[],
    );
    assert_eq!(ping_http(ember.addr).as_deref(), Some("pong"));
    let rest = ember.stop();
    assert_eq!(rest.last().map(String::as_str), Some("ember: stopped"));
    assert!(rest.iter().all(|l| !l.contains("distributed")), "{rest:?}");
    // The binary has exited: it never connected.
    epmd.set_nonblocking(true).unwrap();
    let accepted = epmd.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the binary tried to reach epmd: {accepted:?}"
    );
}

#[test]
fn a_node_name_already_taken_is_an_error_at_start() {
    let epmd_port = free_port();
    let alive = unique("ember");
    let port = epmd_port.to_string();
    let env = [("ERL_EPMD_PORT", port.as_str())];
    let mut first = Ember::start(&["--sname", &alive, "--cookie", "c"], &env, &[]);
    let node = first.node_name();
    // The second says why on stderr and exits with a failure, after its
    // HTTP line (the server it started is shut down again).
    let mut second = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["--listen", "127.0.0.1:0", "--schedulers", "1"])
        .args(["--sname", &alive, "--cookie", "c"])
        .env("ERL_EPMD_PORT", &port)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = second.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let stderr = rx.recv_timeout(DEADLINE);
    if stderr.is_err() {
        let _ = second.kill();
    }
    let stderr = stderr.expect("the second node did not exit in time");
    let status = second.wait().unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot start the distributed node {node}")),
        "{stderr}"
    );
    // The first is unaffected.
    assert_eq!(ping_http(first.addr).as_deref(), Some("pong"));
    let rest = first.stop();
    assert_eq!(rest.last().map(String::as_str), Some("ember: stopped"));
}

#[test]
fn the_cookie_is_ember_cookie_else_a_created_erlang_cookie() {
    let home = std::env::temp_dir().join(unique("ember-home"));
    std::fs::create_dir_all(&home).unwrap();
    let cookie_path = home.join(".erlang.cookie");
    let home_s = home.to_str().unwrap().to_string();

    // EMBER_COOKIE wins over the file (which is then not created).
    let epmd_port = free_port();
    let mut ember = Ember::start(
        &["--sname", &unique("ember")],
        &[
            ("ERL_EPMD_PORT", &epmd_port.to_string()),
            ("HOME", &home_s),
            ("EMBER_COOKIE", "from_env"),
        ],
        &[],
    );
    let node = ember.node_name();
    assert!(!cookie_path.exists());
    let with_erl = erl_required();
    if with_erl {
        assert_eq!(
            run_erl("from_env", epmd_port, &node, "net_adm:ping(E)"),
            "pong"
        );
    }
    drop(ember);

    // Neither: ~/.erlang.cookie is created as erl creates it.
    let epmd_port = free_port();
    let mut ember = Ember::start(
        &["--sname", &unique("ember")],
        &[("ERL_EPMD_PORT", &epmd_port.to_string()), ("HOME", &home_s)],
        &["EMBER_COOKIE"],
    );
    let node = ember.node_name();
    let cookie = std::fs::read_to_string(&cookie_path).unwrap();
    assert_eq!(cookie.len(), 20, "{cookie:?}");
    assert!(cookie.bytes().all(|b| b.is_ascii_uppercase()), "{cookie:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cookie_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
    }
    if with_erl {
        assert_eq!(
            run_erl(&cookie, epmd_port, &node, "net_adm:ping(E)"),
            "pong"
        );
    }
    drop(ember);
    remove_dir(&home);
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_elixir_node_pings_lists_and_talks_to_the_binary() {
    if !ember_testkit::elixir_required() {
        return;
    }
    let epmd_port = free_port();
    let cookie = random_cookie();
    let mut ember = Ember::start(
        &["--sname", &unique("ember"), "--cookie", &cookie],
        &[("ERL_EPMD_PORT", &epmd_port.to_string())],
        &[],
    );
    let node = ember.node_name();
    let mut ex = ember_testkit::start_elixir(&unique("ex"), &cookie, epmd_port);
    assert_eq!(ex.eval(&format!(r#"Node.ping(:"{node}")"#)), ":pong");
    assert_eq!(
        ex.eval(&format!(r#"Enum.member?(Node.list(), :"{node}")"#)),
        "true"
    );
    let echo = format!(
        r#"send({{:ember_echo, :"{node}"}}, {{self(), {{:hi, "from elixir", [1, 2.5, %{{a: 1}}]}}}}); receive do m -> m after 5000 -> :timeout end"#
    );
    assert_eq!(ex.eval(&echo), r#"{:hi, "from elixir", [1, 2.5, %{a: 1}]}"#);
    // global on the Elixir node counts Ember as synced.
    assert_eq!(
        ex.eval("t = Task.async(fn -> :global.sync() end); Task.yield(t, 10_000) || :sync_hung"),
        "{:ok, :ok}"
    );
    assert!(ex.alive());
    assert_eq!(ping_http(ember.addr).as_deref(), Some("pong"));
}
