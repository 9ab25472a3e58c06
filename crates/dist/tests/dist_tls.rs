//! TLS distribution: Ember nodes with [`TlsOptions`] talk to each other
//! and to `erl -proto_dist inet_tls` (ping, messages, rpc, both ways), and
//! refuse what they must: a plain TCP peer, a certificate from an
//! authority they do not trust, a peer with no certificate (unless
//! allowed), a wrong cookie. After every refusal the node still serves a good peer.
//!
//! Each test makes its own certificate authorities and node certificates
//! (rcgen) in a fresh directory, and starts its own port mapper.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use ember_dist::{DistError, Functions, Node, NodeConfig, Raise, TlsOptions};
use ember_runtime::dist;
use ember_runtime::{receive, self_pid, send, Spawn};
use ember_term::Term;
use ember_testkit::tls::{self, TestCa};
use ember_testkit::{erl_ssl_required, free_port, random_cookie, start_erl, unique, Erl};
use support::ember::{EmberNode, Reports};

const WAIT: Duration = Duration::from_secs(10);

const HOSTS: &[&str] = &["localhost", "127.0.0.1"];

/// Mutual TLS options for `node` with a certificate of `ca`, trusting it.
fn options(ca: &TestCa, node: &str) -> TlsOptions {
    let (cert, key) = ca.issue(node, HOSTS);
    TlsOptions::new(cert, key, ca.ca_file())
}

/// A fresh directory for one test's certificates (and the nodes' log
/// lines in the test's output).
fn cert_dir() -> PathBuf {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ember_dist=info")
        .with_test_writer()
        .try_init();
    tls::cert_dir()
}

/// An Ember runtime node on `localhost` with `tls` (plain TCP when `None`)
/// and a `demo:twice/1` function.
fn ember_node(alive: &str, cookie: &str, port: u16, tls: Option<TlsOptions>) -> EmberNode {
    let mut functions = Functions::new();
    functions.register("demo", "twice", 1, |args| async move {
        match args[0].as_int() {
            Some(n) => Ok(Term::from(2 * n)),
            None => Err(Raise::Error(Term::atom("badarg"))),
        }
    });
    EmberNode::start_configured(alive, cookie, port, functions, |c| c.tls = tls)
}

/// A plain node (no runtime) in its own tokio runtime.
fn bare_node(
    alive: &str,
    cookie: &str,
    port: u16,
    tls: Option<TlsOptions>,
) -> (tokio::runtime::Runtime, Result<Node, DistError>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = NodeConfig::new(&format!("{alive}@localhost"), cookie);
    config.epmd_port = port;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.setup_time = Duration::from_secs(5);
    config.tls = tls;
    let node = rt.block_on(Node::start_with(config));
    (rt, node)
}

/// Connects `from` to `to`, giving the error as text.
fn connect(rt: &tokio::runtime::Runtime, from: &Node, to: &str) -> Result<(), String> {
    rt.block_on(async {
        tokio::time::timeout(WAIT, from.connect(to))
            .await
            .map_err(|_| "connect did not finish".to_string())?
            .map_err(|e| e.to_string())
    })
}

/// An Ember process `name` on `node` that answers `{Pid, Term}` with `Term`.
fn spawn_echo(node: &EmberNode, name: &str) {
    node.handle()
        .spawn_with(Spawn::new().name(name), async {
            while let Some(m) = receive::<Term>().timeout(Duration::from_secs(60)).await {
                if let Some([from, body]) = m.as_tuple() {
                    if let Some(p) = dist::pid_from_term(from) {
                        send(p, body.clone());
                    }
                }
            }
        })
        .unwrap();
}

/// `rpc_call` from a process of `node` to `to`, as text.
fn rpc(
    node: &EmberNode,
    to: &str,
    module: &'static str,
    function: &'static str,
    args: Vec<Term>,
) -> String {
    let (tx, reports) = Reports::new();
    let to = to.to_string();
    node.handle().spawn(async move {
        let r = ember_dist::rpc_call(&to, module, function, args, WAIT).await;
        tx.send(r.to_string()).unwrap();
    });
    reports.next("an rpc answer")
}

#[test]
fn ember_nodes_talk_over_mutual_tls() {
    let dir = cert_dir();
    let ca = TestCa::new(&dir, "good");
    let port = free_port();
    let cookie = random_cookie();
    let a_alive = unique("a");
    let a = ember_node(&a_alive, &cookie, port, Some(options(&ca, &a_alive)));
    let b_alive = unique("b");
    let b = ember_node(&b_alive, &cookie, port, Some(options(&ca, &b_alive)));
    spawn_echo(&a, "echo");
    let a_name = a.name.clone();
    let (tx, reports) = Reports::new();
    b.handle().spawn(async move {
        dist::send_named(
            "echo",
            &a_name,
            Term::tuple([
                dist::pid_to_term(self_pid()),
                Term::binary(vec![7; 100_000]),
            ]),
        );
        let back = receive::<Term>().timeout(WAIT).await;
        tx.send(format!(
            "{:?}",
            back.map(|t| t.as_binary().map(<[u8]>::len))
        ))
        .unwrap();
        let twice =
            ember_dist::rpc_call(&a_name, "demo", "twice", vec![Term::from(21)], WAIT).await;
        tx.send(twice.to_string()).unwrap();
    });
    assert_eq!(reports.next("the echo over TLS"), "Some(Some(100000))");
    assert_eq!(reports.next("rpc over TLS"), "42");
    assert_eq!(b.node.nodes(), vec![ember_term::Atom::new(&a.name)]);
    // The other way over the same connection.
    assert_eq!(rpc(&a, &b.name, "demo", "twice", vec![Term::from(5)]), "10");
}

#[test]
fn a_tls_node_refuses_plain_tcp_untrusted_and_wrong_cookie_peers_and_stays_up() {
    let dir = cert_dir();
    let good = TestCa::new(&dir, "good");
    let rogue = TestCa::new(&dir, "rogue");
    let port = free_port();
    let cookie = random_cookie();
    let server_alive = unique("server");
    let server_name = format!("{server_alive}@localhost");
    let (srt, server) = bare_node(
        &server_alive,
        &cookie,
        port,
        Some(options(&good, &server_alive)),
    );
    let server = server.expect("the TLS node starts");

    // A plain TCP peer: refused, it learns the peer closed on it.
    let (prt, plain) = bare_node(&unique("plain"), &cookie, port, None);
    let plain = plain.unwrap();
    let err = connect(&prt, &plain, &server_name).expect_err("plain TCP to a TLS node");
    assert!(err.contains("the peer answered with TLS"), "{err}");

    // A certificate signed by an authority the server does not trust (the
    // client trusts the server's): the server refuses it.
    let alive = unique("untrusted");
    let mut opts = options(&rogue, &alive);
    opts.ca_file = good.ca_file();
    let (urt, untrusted) = bare_node(&alive, &cookie, port, Some(opts));
    let err = connect(&urt, &untrusted.unwrap(), &server_name).expect_err("untrusted client");
    assert!(
        err.contains("refused") && err.contains("UnknownCA"),
        "{err}"
    );

    // The server's certificate is not trusted by the client: the client
    // refuses, saying why.
    let alive = unique("wary");
    let mut opts = options(&good, &alive);
    opts.ca_file = rogue.ca_file();
    let (wrt, wary) = bare_node(&alive, &cookie, port, Some(opts));
    let err = connect(&wrt, &wary.unwrap(), &server_name).expect_err("untrusted server");
    assert!(
        err.contains("tls") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // The right certificate but a wrong cookie: the distribution
    // handshake inside TLS refuses it.
    let alive = unique("cookie");
    let (crt, wrong) = bare_node(&alive, "not-the-cookie", port, Some(options(&good, &alive)));
    let err = connect(&crt, &wrong.unwrap(), &server_name).expect_err("wrong cookie");
    assert!(err.contains("wrong cookie"), "{err}");

    // Nothing of this harmed the server: a good peer connects and pings
    // both ways.
    let alive = unique("friend");
    let (frt, friend) = bare_node(&alive, &cookie, port, Some(options(&good, &alive)));
    let friend = friend.unwrap();
    assert_eq!(connect(&frt, &friend, &server_name), Ok(()));
    assert!(srt.block_on(server.ping(&format!("{alive}@localhost"))));
    assert_eq!(
        server.nodes(),
        vec![ember_term::Atom::new(&format!("{alive}@localhost"))]
    );
}

#[test]
fn a_node_with_unreadable_tls_files_does_not_start() {
    let dir = cert_dir();
    let good = TestCa::new(&dir, "good");
    let port = free_port();
    let mut opts = options(&good, "n");
    opts.key_file = dir.join("missing-key.pem");
    let (_rt, node) = bare_node(&unique("n"), "c", port, Some(opts));
    let err = node.expect_err("a missing key file").to_string();
    assert!(
        err.contains("key file") && err.contains("missing-key.pem"),
        "{err}"
    );

    // A CA file that holds no certificate.
    let mut opts = options(&good, "m");
    opts.ca_file = dir.join("empty.pem");
    std::fs::write(&opts.ca_file, "").unwrap();
    let (_rt, node) = bare_node(&unique("m"), "c", port, Some(opts));
    let err = node.expect_err("an empty CA file").to_string();
    assert!(err.contains("no certificate"), "{err}");
}

/// `erl` with TLS distribution: mutual TLS with a certificate of `ca`.
fn tls_erl(alive: &str, cookie: &str, port: u16, ca: &TestCa, trusted: &TestCa) -> Erl {
    let optfile = ca.erl_optfile(alive, HOSTS, trusted, true);
    let optfile = optfile.display().to_string();
    start_erl(
        alive,
        cookie,
        port,
        &["-proto_dist", "inet_tls", "-ssl_dist_optfile", &optfile],
    )
}

#[test]
fn ember_and_erl_talk_over_tls_both_ways() {
    if !erl_ssl_required() {
        return;
    }
    let dir = cert_dir();
    let ca = TestCa::new(&dir, "good");
    let port = free_port();
    let cookie = random_cookie();
    let e_alive = unique("ember");
    let ember = ember_node(&e_alive, &cookie, port, Some(options(&ca, &e_alive)));
    spawn_echo(&ember, "echo");
    let e = ember.name.clone();

    // erl → Ember: ping, a message to a name and its answer, rpc.
    let mut erl = tls_erl(&unique("erl"), &cookie, port, &ca, &ca);
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(
        erl.eval(&format!(
            "{{echo, '{e}'}} ! {{self(), {{hi, <<1,2,3>>, 3.5}}}}, receive M -> M after 10000 -> timeout end."
        )),
        "{hi,<<1,2,3>>,3.5}"
    );
    assert_eq!(
        erl.eval(&format!("rpc:call('{e}', demo, twice, [21], 10000).")),
        "42"
    );
    // It is TLS on erl's side too.
    assert_eq!(
        erl.eval(&format!(
            "{{ok, I}} = net_kernel:node_info('{e}'), element(4, proplists:get_value(address, I))."
        )),
        "tls"
    );

    // Ember → a fresh erl (Ember connects): rpc, then a message on the
    // connection it made. (Sent first, the message starts the connection,
    // and one that cannot be made drops it, as Erlang does: once, under
    // load 11-27, it never arrived while the rpc after it did; the cause
    // is not established. Connecting on first send is tested without TLS
    // in dist_erl_interop.rs.)
    let mut erl2 = tls_erl(&unique("erl2"), &cookie, port, &ca, &ca);
    assert_eq!(erl2.eval("register(inbox, self())."), "true");
    let erl2_name = erl2.name.clone();
    let (tx, reports) = Reports::new();
    let n = erl2_name.clone();
    ember.handle().spawn(async move {
        let node = ember_dist::rpc_call(&n, "erlang", "node", vec![], WAIT).await;
        dist::send_named(
            "inbox",
            &n,
            Term::tuple([Term::atom("from_ember"), Term::from(7)]),
        );
        tx.send(node.to_string()).unwrap();
    });
    assert_eq!(reports.next("rpc into erl over TLS"), erl2_name);
    assert_eq!(
        erl2.eval("receive M -> M after 10000 -> timeout end."),
        "{from_ember,7}"
    );
}

#[test]
fn erl_peers_without_tls_or_with_an_untrusted_certificate_are_refused() {
    if !erl_ssl_required() {
        return;
    }
    let dir = cert_dir();
    let good = TestCa::new(&dir, "good");
    let rogue = TestCa::new(&dir, "rogue");
    let port = free_port();
    let cookie = random_cookie();
    let e_alive = unique("ember");
    let ember = ember_node(&e_alive, &cookie, port, Some(options(&good, &e_alive)));
    let e = ember.name.clone();

    // Plain TCP erl: pang.
    let mut plain = start_erl(&unique("plain"), &cookie, port, &[]);
    assert_eq!(plain.eval(&format!("net_adm:ping('{e}').")), "pang");
    // A TLS erl with a certificate Ember does not trust: pang.
    let mut untrusted = tls_erl(&unique("rogue"), &cookie, port, &rogue, &good);
    assert_eq!(untrusted.eval(&format!("net_adm:ping('{e}').")), "pang");
    // Ember connecting to that erl refuses its certificate.
    assert_eq!(
        rpc(&ember, &untrusted.name, "erlang", "node", vec![]),
        "{badrpc,nodedown}"
    );
    // A wrong cookie over TLS: pang.
    let mut wrong = tls_erl(&unique("cookie"), "not-the-cookie", port, &good, &good);
    assert_eq!(wrong.eval(&format!("net_adm:ping('{e}').")), "pang");
    // A TLS erl that presents no certificate: pang.
    let certless_alive = unique("certless");
    let optfile = good.erl_optfile(&certless_alive, HOSTS, &good, false);
    let optfile = optfile.display().to_string();
    let mut certless = start_erl(
        &certless_alive,
        &cookie,
        port,
        &["-proto_dist", "inet_tls", "-ssl_dist_optfile", &optfile],
    );
    assert_eq!(certless.eval(&format!("net_adm:ping('{e}').")), "pang");
    // The Ember node is unharmed: a good erl still connects.
    let mut friend = tls_erl(&unique("friend"), &cookie, port, &good, &good);
    assert_eq!(friend.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(
        ember.node.nodes(),
        vec![ember_term::Atom::new(&friend.name)]
    );

    // A node that does not require client certificates takes the
    // certless erl.
    let lax_alive = unique("lax");
    let mut opts = options(&good, &lax_alive);
    opts.require_peer_cert = false;
    let lax = ember_node(&lax_alive, &cookie, port, Some(opts));
    assert_eq!(
        certless.eval(&format!("net_adm:ping('{}').", lax.name)),
        "pong"
    );
}
