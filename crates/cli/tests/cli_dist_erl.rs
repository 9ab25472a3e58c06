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

use ember_testkit::tls::{self, TestCa};
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique, DEADLINE};

/// The binary, stopped (killed) when the test ends however it ends.
struct Ember {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
    /// Its own `--data` directory.
    _data: ember_testkit::TempDir,
}

impl Ember {
    fn start(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> Ember {
        let data = ember_testkit::TempDir::new("ember-cli-dist");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ember"));
        cmd.args(["--listen", "127.0.0.1:0", "--schedulers", "2"])
            .args(["--data", &data.arg()])
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
            _data: data,
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

/// The binary started as `--sname <alive> --cookie <cookie>` with a
/// random cookie, on a port mapper port of its own, and its node name.
struct Named {
    ember: Ember,
    node: String,
    cookie: String,
    epmd_port: u16,
}

impl Named {
    fn start(alive: &str) -> Named {
        let epmd_port = free_port();
        let cookie = random_cookie();
        let mut ember = Ember::start(
            &["--sname", alive, "--cookie", &cookie],
            &[("ERL_EPMD_PORT", &epmd_port.to_string())],
            &[],
        );
        let node = ember.node_name();
        Named {
            ember,
            node,
            cookie,
            epmd_port,
        }
    }

    /// Runs `script` on a fresh erl node with the right cookie (see
    /// [`run_erl`]).
    fn run_erl(&self, script: &str) -> String {
        run_erl(&self.cookie, self.epmd_port, &self.node, script)
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
    let alive = unique("ember");
    let named = Named::start(&alive);
    let node = &named.node;
    assert!(node.starts_with(&format!("{alive}@")), "{node}");
    assert!(!node.contains('.'), "a short name: {node}");

    assert_eq!(named.run_erl(ECHO_ALL), "{ok,20}");
    // Again from a second erl node, over a new connection.
    assert_eq!(named.run_erl(ECHO_ALL), "{ok,20}");
    // Junk to ember_echo is ignored, and it keeps answering.
    let junk = r#"
        pong = net_adm:ping(E),
        {ember_echo, E} ! not_a_pair,
        {ember_echo, E} ! {not_a_pid, x},
        {nobody_here, E} ! {self(), x},
        {ember_echo, E} ! {self(), still_here},
        receive still_here -> ok after 5000 -> timeout end"#;
    assert_eq!(named.run_erl(junk), "ok");
    // A 1 MiB binary there and back (in fragments both ways).
    let big = r#"
        pong = net_adm:ping(E),
        B = list_to_binary([I rem 251 || I <- lists:seq(0, 1048575)]),
        {ember_echo, E} ! {self(), {big, B}},
        receive {big, B} -> ok after 10000 -> timeout end"#;
    assert_eq!(named.run_erl(big), "ok");

    assert_eq!(ping_http(named.ember.addr).as_deref(), Some("pong"));
    let rest = named.ember.stop();
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
    %% Introspection as on an Erlang node: processes(), process_info/1,2.
    Pids = rpc:call(E, erlang, processes, []),
    true = length(Pids) > 5 andalso lists:all(fun(X) -> node(X) =:= E end, Pids),
    [{registered_name, Named} | _] = [I || Pd <- Pids,
        [{registered_name, _} = I] <- [rpc:call(E, erlang, process_info, [Pd, [registered_name]])],
        I =/= {registered_name, []}],
    true = is_atom(Named),
    Info = rpc:call(E, erlang, process_info, [hd(Pids)]),
    true = is_integer(proplists:get_value(reductions, Info)),
    true = is_list(proplists:get_value(links, Info)),
    {badrpc, {'EXIT', {badarg, _}}} = rpc:call(E, erlang, process_info, [self()]),
    {badrpc, {'EXIT', {badarg, _}}} = rpc:call(E, erlang, process_info, [hd(Pids), nosuch_item]),
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
    let named = Named::start(&unique("ember"));
    assert_eq!(
        named.run_erl(KV_CALLS),
        "{ok,{error,{bad_request,frobnicate}}}"
    );
    assert_eq!(
        named.run_erl(RPC_AND_SPAWN),
        "{ok,<<115,117,109,40,49,51,41,32,99,114,97,115,104,101,115,32,111,110,32,112,117,114,112,111,115,101>>}"
    );
    assert_eq!(
        named.run_erl(PRINT_TO_CALLERS_GROUP_LEADER),
        "{{ok,ok},[104,101,108,108,111,10],[123,119,111,114,108,100,44,49,44,91,50,93,125,10]}",
        "hello and {{world,1,[2]}} reach the erl caller's group leader"
    );
    assert_eq!(ping_http(named.ember.addr).as_deref(), Some("pong"));
    named.ember.stop();
}

#[test]
fn a_wrong_cookie_gets_pang_and_the_http_server_stays_healthy() {
    if !erl_required() {
        return;
    }
    let named = Named::start(&unique("ember"));
    let script = format!(
        "A = net_adm:ping(E), \
         true = erlang:set_cookie(E, '{}'), \
         {{A, net_adm:ping(E)}}",
        named.cookie
    );
    assert_eq!(
        run_erl(&random_cookie(), named.epmd_port, &named.node, &script),
        "{pang,pong}"
    );
    assert_eq!(ping_http(named.ember.addr).as_deref(), Some("pong"));
    // And a peer with the right cookie from the start.
    assert_eq!(named.run_erl("net_adm:ping(E)"), "pong");
    assert_eq!(ping_http(named.ember.addr).as_deref(), Some("pong"));
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
    let second_data = ember_testkit::TempDir::new("ember-cli-dist-second");
    let mut second = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["--listen", "127.0.0.1:0", "--schedulers", "1"])
        .args(["--data", &second_data.arg()])
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
    let named = Named::start(&unique("ember"));
    let node = &named.node;
    let mut ex = ember_testkit::start_elixir(&unique("ex"), &named.cookie, named.epmd_port);
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
    assert_eq!(ping_http(named.ember.addr).as_deref(), Some("pong"));
}

/// `Task.Supervisor` calls from Elixir to the binary's `ember_tasks`, each
/// with the line it must print.
fn task_supervisor_lines(node: &str) -> Vec<(String, String)> {
    let sup = format!(r#"{{:ember_tasks, :"{node}"}}"#);
    // A caller that is not the REPL itself: it may be taken down.
    let caller_exit = |body: &str| {
        format!(
            "({{_, ref}} = spawn_monitor(fn -> {body} end); \
             receive do {{:DOWN, ^ref, _, _, r}} -> r after 10_000 -> :no_exit end)"
        )
    };
    vec![
        (
            format!("Task.Supervisor.async({sup}, :ember_demo, :fact_bits, [1000]) |> Task.await()"),
            "8530".into(),
        ),
        (
            format!("Task.Supervisor.async_nolink({sup}, :ember_demo, :sum, [100]) |> Task.await()"),
            "5050".into(),
        ),
        // A crash reaches the awaiting caller as its exit (through the
        // link or through Task.await's monitor, whichever comes first).
        (
            format!(
                "case {} do {{{{{{:panic, m}}, [{{:ember_demo, :sum, [13], []}}]}}, {{Task, :await, _}}}} -> m; {{{{:panic, m}}, [{{:ember_demo, :sum, [13], []}}]}} -> m; other -> other end",
                caller_exit(&format!(
                    "Task.Supervisor.async({sup}, :ember_demo, :sum, [13]) |> Task.await()"
                ))
            ),
            r#""sum(13) crashes on purpose""#.into(),
        ),
        (
            format!("Task.Supervisor.async_nolink({sup}, :ember_demo, :nope, [1]) |> Task.yield(10_000)"),
            "{:exit, {:undef, [{:ember_demo, :nope, [1], []}]}}".into(),
        ),
        // An anonymous function is refused with an ArgumentError that says
        // why; an external fun names a registered function and runs.
        (
            format!(
                "case Task.Supervisor.async_nolink({sup}, fn -> 1 end) |> Task.yield(10_000) do {{:exit, {{%ArgumentError{{message: m}}, _}}}} -> m; other -> other end"
            ),
            format!(
                r#""an anonymous function cannot run on the Ember node {node}: it runs only functions registered in Rust; call Task.Supervisor.async({{:ember_tasks, :\"{node}\"}}, module, :function, args) with a registered function""#
            ),
        ),
        (
            format!("Task.Supervisor.async({sup}, &:ember_demo.node_info/0) |> Task.await() |> elem(0)"),
            format!(":{node}"),
        ),
        // Task.await times out: the caller exits, its link kills the task.
        (
            format!(
                "elem({}, 0)",
                caller_exit(&format!(
                    "Task.Supervisor.async({sup}, :ember_demo, :echo_loop, []) |> Task.await(200)"
                ))
            ),
            ":timeout".into(),
        ),
        (
            format!(
                "Enum.reduce_while(1..200, :running, fn _, _ -> case Task.Supervisor.children({sup}) do [] -> {{:halt, []}}; c -> Process.sleep(50); {{:cont, c}} end end)"
            ),
            "[]".into(),
        ),
        (
            format!(
                "{{:ok, p}} = Task.Supervisor.start_child({sup}, :ember_demo, :fact_bits, [10]); node(p)"
            ),
            format!(":{node}"),
        ),
        (
            format!(
                "t = Task.Supervisor.async_nolink({sup}, :ember_demo, :echo_loop, []); \
                 [Supervisor.count_children({sup}), Task.Supervisor.terminate_child({sup}, t.pid), \
                 Task.Supervisor.terminate_child({sup}, t.pid), Task.yield(t, 10_000)]"
            ),
            "[%{active: 1, specs: 1, supervisors: 0, workers: 1}, :ok, {:error, :not_found}, {:exit, :shutdown}]".into(),
        ),
        // The caller's shutdown: a brutal_kill task is killed.
        (
            format!(
                "t = Task.Supervisor.async_nolink({sup}, :ember_demo, :echo_loop, [], shutdown: :brutal_kill); \
                 [Task.Supervisor.terminate_child({sup}, t.pid), Task.yield(t, 10_000)]"
            ),
            "[:ok, {:exit, :killed}]".into(),
        ),
        // A permanent start_child task runs again when killed, until
        // terminate_child; a transient one that ends normally is not.
        (
            format!(
                "{{:ok, p}} = Task.Supervisor.start_child({sup}, :ember_demo, :echo_loop, [], restart: :permanent); \
                 Process.exit(p, :kill); \
                 q = Enum.reduce_while(1..200, nil, fn _, _ -> case Task.Supervisor.children({sup}) do [q] when q != p -> {{:halt, q}}; _ -> Process.sleep(50); {{:cont, nil}} end end); \
                 [is_pid(q), Task.Supervisor.terminate_child({sup}, q), Task.Supervisor.children({sup})]"
            ),
            "[true, :ok, []]".into(),
        ),
        (
            format!(
                "{{:ok, p}} = Task.Supervisor.start_child({sup}, :ember_demo, :sum, [10], restart: :transient, shutdown: 100); \
                 ref = Process.monitor(p); \
                 receive do {{:DOWN, ^ref, _, _, r}} -> [r in [:normal, :noproc], Task.Supervisor.children({sup})] after 10_000 -> :no_exit end"
            ),
            "[true, []]".into(),
        ),
        // Bad requests get clear answers.
        (
            format!(
                "[GenServer.call({sup}, :frobnicate), \
                 GenServer.call({sup}, {{:start_task, [:nobody, :monitor], :temporary, nil}}), \
                 Task.Supervisor.start_child({sup}, :ember_demo, :sum, [1], restart: :sometimes), \
                 Task.Supervisor.start_child({sup}, :ember_demo, :sum, [1], shutdown: :later)]"
            ),
            "[error: {:bad_request, :frobnicate}, error: {:bad_request, {:start_task, [:nobody, :monitor], :temporary, nil}}, error: {:invalid_restart_type, :sometimes}, error: {:invalid_shutdown, :later}]".into(),
        ),
        // A task that gets no {M, F, A}, or a malformed one, exits.
        (
            format!(
                "{{:ok, p}} = GenServer.call({sup}, {{:start_task, [{{node(), self(), self()}}, :monitor], :temporary, nil}}); \
                 ref = Process.monitor(p); send(p, {{self(), :r, :r, [], :not_mfa}}); \
                 receive do {{:DOWN, ^ref, _, _, r}} -> r after 10_000 -> :no_exit end"
            ),
            "{:badarg, [{:ember_tasks, :run, [:not_mfa], []}]}".into(),
        ),
        (
            format!(
                "{{:ok, p}} = GenServer.call({sup}, {{:start_task, [{{node(), self(), self()}}, :monitor], :temporary, nil}}); \
                 ref = Process.monitor(p); \
                 receive do {{:DOWN, ^ref, _, _, r}} -> r after 20_000 -> :no_exit end"
            ),
            ":timeout".into(),
        ),
        // The node and the supervisor carry on.
        (
            format!("Task.Supervisor.async({sup}, :ember_demo, :fact_bits, [1000]) |> Task.await()"),
            "8530".into(),
        ),
    ]
}

#[test]
fn elixir_runs_ember_demo_functions_as_tasks_under_ember_tasks() {
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
    for (line, expected) in task_supervisor_lines(&node) {
        assert_eq!(ex.eval(&line), expected, "{line}");
    }
    // A task's output goes where a BEAM Task.Supervisor's does: to the
    // supervisor's node (its group leader), not to the remote caller's.
    let sup = format!(r#"{{:ember_tasks, :"{node}"}}"#);
    assert_eq!(
        ex.eval(&format!(
            "parent = self(); \
             c = spawn(fn -> receive do {{:io_request, f, ra, req}} -> send(f, {{:io_reply, ra, :ok}}); send(parent, {{:printed, req}}) end end); \
             Task.start(fn -> Process.group_leader(self(), c); \
               send(parent, {{:called, Task.Supervisor.async({sup}, :ember_demo, :print, [:task_output]) |> Task.await()}}) end); \
             receive do {{:called, x}} -> receive do {{:printed, _}} = p -> {{x, p}} after 500 -> {{x, :not_here}} end after 10_000 -> :no_reply end"
        )),
        "{:ok, :not_here}"
    );
    while ember.line() != "task_output" {}
    assert!(ex.alive());
    assert_eq!(ping_http(ember.addr).as_deref(), Some("pong"));
}

#[test]
fn with_tls_flags_the_binary_speaks_tls_distribution_to_erl() {
    if !ember_testkit::erl_ssl_required() {
        return;
    }
    let epmd_port = free_port();
    let cookie = random_cookie();
    let dir = tls::cert_dir();
    let ca = TestCa::new(&dir, "ca");
    let host = Command::new("hostname")
        .arg("-s")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let hosts = [host.as_str(), "localhost"];
    let alive = unique("ember");
    let (cert, key) = ca.issue(&alive, &hosts);
    let (cert, key, ca_file) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca.ca_file().display().to_string(),
    );
    let mut ember = Ember::start(
        &[
            "--sname",
            &alive,
            "--cookie",
            &cookie,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca_file,
        ],
        &[("ERL_EPMD_PORT", &epmd_port.to_string())],
        &[],
    );
    let node = ember.node_name();
    // erl with TLS distribution: ping, ember_echo, rpc.
    let erl_alive = unique("erl");
    let optfile = ca.erl_optfile(&erl_alive, &hosts, &ca, true);
    let optfile = optfile.display().to_string();
    let mut erl = start_erl(
        &erl_alive,
        &cookie,
        epmd_port,
        &["-proto_dist", "inet_tls", "-ssl_dist_optfile", &optfile],
    );
    assert_eq!(erl.eval(&format!("net_adm:ping('{node}').")), "pong");
    assert_eq!(
        erl.eval(&format!(
            "{{ember_echo, '{node}'}} ! {{self(), <<\"over tls\">>}}, receive M -> M after 10000 -> timeout end."
        )),
        "<<111,118,101,114,32,116,108,115>>"
    );
    assert_eq!(
        erl.eval(&format!(
            "rpc:call('{node}', ember_demo, fact_bits, [1000], 10000)."
        )),
        "8530"
    );
    // A plain erl is refused; the node and its HTTP server carry on.
    assert_eq!(
        run_erl(&cookie, epmd_port, &node, "net_adm:ping(E)"),
        "pang"
    );
    assert_eq!(ping_http(ember.addr).as_deref(), Some("pong"));
    assert_eq!(erl.eval(&format!("net_adm:ping('{node}').")), "pong");
}

#[test]
fn tls_flags_need_each_other_and_a_node_name() {
    let data = ember_testkit::TempDir::new("ember-cli-tls-flags");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["--listen", "127.0.0.1:0", "--data", &data.arg()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = run(&["--sname", "x", "--cookie", "c", "--tls-cert", "c.pem"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tls-key") && err.contains("--tls-ca"),
        "{err}"
    );
    let out = run(&["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]);
    assert!(!out.status.success());
    // Files that do not exist: a clear error at start.
    let out = run(&[
        "--sname",
        &unique("ember"),
        "--cookie",
        "c",
        "--tls-cert",
        "/nonexistent/c.pem",
        "--tls-key",
        "/nonexistent/k.pem",
        "--tls-ca",
        "/nonexistent/ca.pem",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
}
