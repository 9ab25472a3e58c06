//! Load generator for bench/http (one core: a current-thread tokio runtime).
//!
//! ```text
//! http-load probe --addr A --seconds S [--timeout-ms 2000]
//!                 [--hold PATH --hold-conns N --settle-ms 500]
//!                 [--long PATH --long-timeout-ms MS] [--server-pids P,P,...]
//!                 [--stream NAME:RATE:PATH ...]
//! http-load keepalive --addr A --seconds S [--conns 10] [--path /ping]
//! ```
//!
//! `probe`: open loop. Each stream sends one request every 1/RATE s, on the
//! schedule whatever the answers (the client busy-polls its own core so that
//! it sends on time and sees answers at once), each on a fresh connection
//! (`Connection: close`). A request's latency runs from its scheduled send
//! time (so a late client or a full accept queue counts against the server)
//! to the end of a complete `200` answer with the expected body. A request
//! without such an answer by scheduled time + timeout is a timeout; one that
//! fails earlier (refused, reset, non-200, bad body) is an error; both enter
//! the percentiles at the timeout's value. With `--hold`, N connections each
//! keep one request for PATH in flight for the whole window (a finished one is
//! replaced at once); they are all sent, then `--settle-ms` elapses, before
//! the probe window starts.
//!
//! With `--long`, one more request for PATH is sent on its own connection
//! when the probe window starts; the phase then lasts until it is answered
//! (or `--long-timeout-ms` after it was sent), even past the window. With
//! `--server-pids`, the server's CPU time (user + system of those processes,
//! all their threads) is read from `/proc` at the start and end of the probe
//! window and of the long request.
//!
//! `keepalive`: N keep-alive connections, each sending its next request as
//! soon as the previous answer is in (no pipelining; reconnecting if the
//! server closes). Answers completed in the window after a warm-up, per
//! second.
//!
//! Output: `STAT <stream> <key> <value>` lines on stdout, `# ...` info lines.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: http-load probe --addr A --seconds S [--timeout-ms MS] [--hold PATH \
         --hold-conns N --settle-ms MS] [--long PATH --long-timeout-ms MS] \
         [--server-pids P,...] [--stream NAME:RATE:PATH ...]\n       \
         http-load keepalive --addr A --seconds S [--conns N] [--path P]"
    );
    std::process::exit(2)
}

struct Stream {
    name: String,
    rate: f64,
    path: String,
}

struct Args {
    mode: String,
    addr: String,
    seconds: f64,
    timeout_ms: u64,
    hold: Option<String>,
    hold_conns: usize,
    settle_ms: u64,
    streams: Vec<Stream>,
    conns: usize,
    path: String,
    long: Option<String>,
    long_timeout_ms: u64,
    server_pids: Vec<u32>,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = argv.first().cloned() else {
        usage()
    };
    if mode != "probe" && mode != "keepalive" {
        usage()
    }
    let mut a = Args {
        mode,
        addr: String::new(),
        seconds: 10.0,
        timeout_ms: 2000,
        hold: None,
        hold_conns: 10,
        settle_ms: 500,
        streams: Vec::new(),
        conns: 10,
        path: "/ping".into(),
        long: None,
        long_timeout_ms: 120_000,
        server_pids: Vec::new(),
    };
    let mut i = 1;
    while i < argv.len() {
        let key = argv[i].as_str();
        let Some(val) = argv.get(i + 1).cloned() else {
            usage()
        };
        let num = |v: &str| -> f64 { v.parse().unwrap_or_else(|_| usage()) };
        match key {
            "--addr" => a.addr = val,
            "--seconds" => a.seconds = num(&val),
            "--timeout-ms" => a.timeout_ms = num(&val) as u64,
            "--hold" => a.hold = Some(val),
            "--hold-conns" => a.hold_conns = num(&val) as usize,
            "--settle-ms" => a.settle_ms = num(&val) as u64,
            "--conns" => a.conns = num(&val) as usize,
            "--path" => a.path = val,
            "--long" => a.long = Some(val),
            "--long-timeout-ms" => a.long_timeout_ms = num(&val) as u64,
            "--server-pids" => {
                a.server_pids = val
                    .split(',')
                    .map(|p| p.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--stream" => {
                let mut parts = val.splitn(3, ':');
                let (Some(name), Some(rate), Some(path)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    usage()
                };
                a.streams.push(Stream {
                    name: name.into(),
                    rate: num(rate),
                    path: path.into(),
                });
            }
            _ => usage(),
        }
        i += 2;
    }
    if a.addr.is_empty() || a.seconds <= 0.0 {
        usage()
    }
    a
}

/// Why a request failed.
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through Debug
enum Fail {
    Io(std::io::Error),
    Status(u16),
    Body,
    Protocol(&'static str),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Io(e)
    }
}

/// One parsed answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

/// Appends what the socket has to `buf`; 0 at the end of the stream.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(4096);
    s.read_buf(buf).await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP/1.1 response from `s`; `buf` carries bytes already read
/// (and keeps any bytes past this response).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Answer, Fail> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        let n = read_more(s, buf).await?;
        if n == 0 {
            return Err(Fail::Protocol("closed before the headers"));
        }
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| Fail::Protocol("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or(Fail::Protocol("bad status line"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = status_line.starts_with("HTTP/1.0");
    let has = |v: &str, word: &str| {
        v.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    };
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = has(v, "chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            if has(v, "close") {
                close = true
            } else if has(v, "keep-alive") {
                close = false
            }
        }
    }
    buf.drain(..head_end);
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            // chunk size line
            let line_end = loop {
                if let Some(p) = find(buf, b"\r\n") {
                    break p;
                }
                let n = read_more(s, buf).await?;
                if n == 0 {
                    return Err(Fail::Protocol("closed inside a chunk"));
                }
            };
            let size_txt = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Fail::Protocol("bad chunk size"))?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                let n = read_more(s, buf).await?;
                if n == 0 {
                    return Err(Fail::Protocol("closed inside a chunk"));
                }
            }
            if size == 0 {
                // No trailers expected; drop the final CRLF.
                buf.drain(..2);
                break body;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else if let Some(len) = length {
        while buf.len() < len {
            let n = read_more(s, buf).await?;
            if n == 0 {
                return Err(Fail::Protocol("closed inside the body"));
            }
        }
        buf.drain(..len).collect()
    } else {
        // Delimited by the end of the connection.
        loop {
            let n = read_more(s, buf).await?;
            if n == 0 {
                break;
            }
        }
        close = true;
        std::mem::take(buf)
    };
    Ok(Answer {
        status,
        body,
        close,
    })
}

fn request_bytes(path: &str, keepalive: bool) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {}\r\n\r\n",
        if keepalive { "keep-alive" } else { "close" }
    )
    .into_bytes()
}

fn check(path: &str, ans: &Answer) -> Result<(), Fail> {
    if ans.status != 200 {
        return Err(Fail::Status(ans.status));
    }
    let body = String::from_utf8_lossy(&ans.body);
    let body = body.trim();
    let ok = if path.starts_with("/ping") {
        body == "pong"
    } else {
        !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit())
    };
    if ok {
        Ok(())
    } else {
        Err(Fail::Body)
    }
}

/// One request on its own connection.
async fn one_shot(addr: &str, path: &str, req: &[u8]) -> Result<(), Fail> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(req).await?;
    let mut buf = Vec::new();
    let ans = read_response(&mut s, &mut buf).await?;
    check(path, &ans)
}

#[derive(Default)]
struct StreamStats {
    lat_ms: Vec<f64>,
    /// How late the client itself was in sending (due time -> connect call).
    lag_ms: Vec<f64>,
    sent: u64,
    timeouts: u64,
    errors: u64,
    first_error: Option<String>,
}

#[derive(Default)]
struct HoldStats {
    sent: u64,
    completed: u64,
    errors: u64,
    first_error: Option<String>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // nearest rank
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Waits until `at` to within microseconds: tokio's timer fires on
/// millisecond ticks, up to a tick late, so the last stretch is spent
/// yielding (the [`spin`] task keeps the thread busy anyway).
async fn send_at(at: Instant) {
    if let Some(early) = at.checked_sub(Duration::from_millis(2)) {
        sleep_until(early).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// Keeps the client's thread busy for as long as it runs: the runtime then
/// never sleeps in the kernel, so neither waking up for a scheduled send nor
/// noticing an answer waits for an idle CPU to wake (on these VMs that alone
/// is 1-2 ms at p99). The client has a core of its own.
async fn spin() {
    loop {
        tokio::task::yield_now().await;
    }
}

async fn probe(a: Args) {
    let spinner = tokio::task::spawn_local(spin());
    let timeout = Duration::from_millis(a.timeout_ms);
    let window = Duration::from_secs_f64(a.seconds);
    let addr: Rc<str> = a.addr.clone().into();

    // The background load, if any.
    let hold = Rc::new(RefCell::new(HoldStats::default()));
    let mut holders = Vec::new();
    if let Some(path) = a.hold.clone() {
        let req: Rc<[u8]> = request_bytes(&path, false).into();
        let sent_all = Rc::new(tokio::sync::Notify::new());
        for _ in 0..a.hold_conns {
            let (addr, req, hold, sent_all, path) = (
                addr.clone(),
                req.clone(),
                hold.clone(),
                sent_all.clone(),
                path.clone(),
            );
            let n = a.hold_conns as u64;
            holders.push(tokio::task::spawn_local(async move {
                loop {
                    let res: Result<(), Fail> = async {
                        let mut s = TcpStream::connect(&*addr).await?;
                        s.write_all(&req).await?;
                        {
                            let mut h = hold.borrow_mut();
                            h.sent += 1;
                            if h.sent == n {
                                sent_all.notify_one();
                            }
                        }
                        let mut buf = Vec::new();
                        let ans = read_response(&mut s, &mut buf).await?;
                        check(&path, &ans)
                    }
                    .await;
                    let failed = res.is_err();
                    {
                        let mut h = hold.borrow_mut();
                        match res {
                            Ok(()) => h.completed += 1,
                            Err(e) => {
                                h.errors += 1;
                                if h.first_error.is_none() {
                                    h.first_error = Some(format!("{e:?}"));
                                }
                            }
                        }
                    }
                    if failed {
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), sent_all.notified()).await;
        tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
        let h = hold.borrow();
        println!(
            "# hold: {} of {} requests for {} sent before the window",
            h.sent, a.hold_conns, path
        );
    }

    let cpu_at_start = server_cpu(&a.server_pids);
    let start = Instant::now() + Duration::from_millis(20);

    // The long request, if any: sent as the window starts, awaited after it.
    let long = a.long.clone().map(|path| {
        let req = request_bytes(&path, false);
        let (addr, pids) = (addr.clone(), a.server_pids.clone());
        let limit = Duration::from_millis(a.long_timeout_ms);
        tokio::task::spawn_local(async move {
            send_at(start).await;
            let cpu0 = server_cpu(&pids);
            let t0 = Instant::now();
            let res = timeout_at(t0 + limit, one_shot(&addr, &path, &req)).await;
            let secs = t0.elapsed().as_secs_f64();
            let cpu = server_cpu(&pids) - cpu0;
            let outcome = match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Some(format!("{e:?}"))),
                Err(_) => Err(None),
            };
            (outcome, secs, cpu, limit)
        })
    });

    let mut all = Vec::new();
    let mut stats_list = Vec::new();
    for st in &a.streams {
        let stats = Rc::new(RefCell::new(StreamStats::default()));
        stats_list.push((st.name.clone(), stats.clone()));
        let req: Rc<[u8]> = request_bytes(&st.path, false).into();
        let period = Duration::from_secs_f64(1.0 / st.rate);
        let (addr, path) = (addr.clone(), Rc::<str>::from(st.path.as_str()));
        all.push(tokio::task::spawn_local(async move {
            let mut inflight = Vec::new();
            let mut k: u32 = 0;
            loop {
                let at = start + period * k;
                if at >= start + window {
                    break;
                }
                k += 1;
                send_at(at).await;
                let (addr, path, req, stats) =
                    (addr.clone(), path.clone(), req.clone(), stats.clone());
                inflight.push(tokio::task::spawn_local(async move {
                    {
                        let mut s = stats.borrow_mut();
                        s.sent += 1;
                        s.lag_ms.push(at.elapsed().as_secs_f64() * 1e3);
                    }
                    let res = timeout_at(at + timeout, one_shot(&addr, &path, &req)).await;
                    let mut s = stats.borrow_mut();
                    match res {
                        Ok(Ok(())) => {
                            let ms = at.elapsed().as_secs_f64() * 1e3;
                            s.lat_ms.push(ms);
                        }
                        Ok(Err(e)) => {
                            s.errors += 1;
                            s.lat_ms.push(timeout.as_secs_f64() * 1e3);
                            if s.first_error.is_none() {
                                s.first_error = Some(format!("{e:?}"));
                            }
                        }
                        Err(_) => {
                            s.timeouts += 1;
                            s.lat_ms.push(timeout.as_secs_f64() * 1e3);
                        }
                    }
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    for t in all {
        let _ = t.await;
    }
    let window_secs = start.elapsed().as_secs_f64();
    let window_cpu = server_cpu(&a.server_pids) - cpu_at_start;
    let long = match long {
        Some(task) => task.await.ok(),
        None => None,
    };
    for h in &holders {
        h.abort();
    }
    spinner.abort();
    if a.hold.is_some() {
        let h = hold.borrow();
        println!(
            "# hold: {} sent, {} completed, {} errors in all{}",
            h.sent,
            h.completed,
            h.errors,
            h.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    if !a.server_pids.is_empty() {
        println!("STAT server cpu_s {window_cpu:.3}");
        println!("STAT server secs {window_secs:.3}");
    }
    if let Some((outcome, secs, cpu, limit)) = long {
        let (ms, timeouts, errors) = match &outcome {
            Ok(()) => (secs * 1e3, 0, 0),
            Err(None) => (limit.as_secs_f64() * 1e3, 1, 0),
            Err(Some(e)) => {
                println!("# long: error: {e}");
                (limit.as_secs_f64() * 1e3, 0, 1)
            }
        };
        println!("STAT long ms {ms:.3}");
        println!("STAT long timeouts {timeouts}");
        println!("STAT long errors {errors}");
        println!("STAT long secs {secs:.3}");
        if !a.server_pids.is_empty() {
            println!("STAT long server_cpu_s {cpu:.3}");
        }
    }
    for (name, stats) in stats_list {
        let mut s = stats.borrow_mut();
        s.lat_ms.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let lat = &s.lat_ms;
        println!("STAT {name} sent {}", s.sent);
        println!("STAT {name} p50 {:.3}", pct(lat, 50.0));
        println!("STAT {name} p99 {:.3}", pct(lat, 99.0));
        println!(
            "STAT {name} max {:.3}",
            lat.last().copied().unwrap_or(f64::NAN)
        );
        println!("STAT {name} timeouts {}", s.timeouts);
        println!("STAT {name} errors {}", s.errors);
        if let Some(e) = &s.first_error {
            println!("# {name}: first error: {e}");
        }
        s.lag_ms.sort_by(|x, y| x.partial_cmp(y).unwrap());
        println!("STAT {name} lag_p99 {:.3}", pct(&s.lag_ms, 99.0));
        println!(
            "STAT {name} lag_max {:.3}",
            s.lag_ms.last().copied().unwrap_or(f64::NAN)
        );
    }
}

/// CPU seconds (user + system, all threads) the processes `pids` have used
/// so far; 0 for those already gone. Their clock ticks are 100 Hz on Linux.
fn server_cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat_cpu_seconds(&stat)
        })
        .sum()
}

/// utime + stime, in seconds, of one `/proc/.../stat` line.
fn stat_cpu_seconds(stat: &str) -> f64 {
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn cpu_seconds() -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

async fn keepalive(a: Args) {
    let window = Duration::from_secs_f64(a.seconds);
    let warmup = Duration::from_secs_f64((a.seconds * 0.2).min(1.0));
    let begin = Instant::now();
    let (t0, t1) = (begin + warmup, begin + warmup + window);
    let addr: Rc<str> = a.addr.clone().into();
    let req: Rc<[u8]> = request_bytes(&a.path, true).into();
    let path: Rc<str> = a.path.clone().into();
    let counted = Rc::new(RefCell::new((0u64, 0u64, 0u64, None::<String>))); // ok, errors, connects
    let mut tasks = Vec::new();
    for _ in 0..a.conns {
        let (addr, req, path, counted) = (addr.clone(), req.clone(), path.clone(), counted.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let deadline = t1;
            while Instant::now() < deadline {
                let res: Result<(), Fail> = async {
                    let mut s = TcpStream::connect(&*addr).await?;
                    s.set_nodelay(true)?;
                    counted.borrow_mut().2 += 1;
                    let mut buf = Vec::new();
                    loop {
                        s.write_all(&req).await?;
                        let ans = read_response(&mut s, &mut buf).await?;
                        check(&path, &ans)?;
                        let now = Instant::now();
                        if now >= deadline {
                            return Ok(());
                        }
                        if now >= t0 {
                            counted.borrow_mut().0 += 1;
                        }
                        if ans.close {
                            return Ok(());
                        }
                    }
                }
                .await;
                if let Err(e) = res {
                    {
                        let mut c = counted.borrow_mut();
                        c.1 += 1;
                        if c.3.is_none() {
                            c.3 = Some(format!("{e:?}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    sleep_until(t0).await;
    let cpu0 = cpu_seconds();
    // Stop: every connection task exits by itself after t1 (bounded by
    // the server answering); cut the stragglers after a grace period.
    let _ = timeout_at(t1 + Duration::from_secs(2), async {
        for t in tasks.iter_mut() {
            let _ = t.await;
        }
    })
    .await;
    for t in &tasks {
        t.abort();
    }
    let cpu = cpu_seconds() - cpu0;
    let c = counted.borrow();
    println!(
        "# keepalive: {} conns, {} connects, client cpu {:.0}% of the window{}",
        a.conns,
        c.2,
        100.0 * cpu / window.as_secs_f64(),
        c.3.as_ref()
            .map(|e| format!(", first error: {e}"))
            .unwrap_or_default()
    );
    println!(
        "STAT keepalive rps {:.1}",
        c.0 as f64 / window.as_secs_f64()
    );
    println!("STAT keepalive errors {}", c.1);
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    if a.mode == "probe" {
        local.block_on(&rt, probe(a));
    } else {
        local.block_on(&rt, keepalive(a));
    }
}
