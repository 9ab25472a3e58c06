//! The `ember` binary. Until the web demo exists it runs a short, narrated
//! tour of the runtime: processes, messages, a crash contained by links and
//! monitors, registered names, and what introspection sees.

use std::time::Duration;

use clap::Parser;
use ember_runtime::{
    self as ember, receive, self_pid, send, spawn, spawn_link, spawn_monitor, Down, Exit,
    ExitReason, Handle, Runtime, Spawn,
};

/// Command-line options.
#[derive(Parser, Debug)]
#[command(version, about = "Ember: the soul of Erlang/OTP, in Rust")]
struct Options {
    /// Scheduler threads (default: one per core).
    #[arg(long)]
    schedulers: Option<usize>,
}

fn main() -> std::process::ExitCode {
    let options = Options::parse();
    let mut builder = Runtime::builder();
    if let Some(n) = options.schedulers {
        builder = builder.schedulers(n);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ember: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(tour());
    std::process::ExitCode::SUCCESS
}

/// A request to the squaring service.
struct Square(u64, ember::Pid);

async fn tour() {
    let handle = Handle::current();
    println!(
        "ember: runtime up with {} schedulers; I am {}",
        handle.schedulers_online(),
        self_pid()
    );

    // A registered service answering requests.
    let service = Spawn::new()
        .name("squarer")
        .label("squarer service")
        .spawn(async {
            loop {
                let Square(n, from) = receive().await;
                send(from, n * n);
            }
        })
        .map(|s| s.pid);
    println!("ember: started the squarer service {service:?}");
    if ember::send_named("squarer", Square(12, self_pid())).is_ok() {
        let answer: u64 = receive().await;
        println!("ember: squarer says 12² = {answer}");
    }

    // A crash is contained: a monitor reports it, nothing else is touched.
    let (crasher, _) = spawn_monitor(async {
        let zero = std::hint::black_box(0u64);
        println!("ember: the crasher divides by zero…");
        let _ = 1 / zero;
    });
    let down: Down = receive().await;
    println!(
        "ember: monitor saw {} go down with reason {}",
        crasher, down.reason
    );

    // Linked processes: a supervisor-like process traps exits and restarts.
    ember::trap_exit(true);
    for attempt in 1..=3 {
        let worker = spawn_link(async move {
            ember::sleep(Duration::from_millis(10)).await;
            if attempt < 3 {
                ExitReason::error(format!("attempt {attempt} failed"))
            } else {
                ExitReason::Normal
            }
        });
        let exit: Exit = receive().await;
        println!(
            "ember: linked worker {worker} exited with {} (trapped, so I live on)",
            exit.reason
        );
    }

    // A thousand idle processes, then what introspection sees.
    let idle: Vec<_> = (0..1000)
        .map(|_| {
            spawn(async {
                ember::receive_any(|_| true).await;
            })
        })
        .collect();
    let info = handle.runtime_info();
    println!(
        "ember: {} processes alive, {} timers pending, RSS {} KiB",
        info.process_count,
        info.timers,
        info.memory_rss_bytes / 1024
    );
    if let Some(service_info) = service.ok().and_then(|pid| handle.process_info(pid)) {
        println!(
            "ember: info of the squarer: spawned as {:?}, name {:?}, status {:?}, {} reductions, ~{} bytes",
            service_info.spawned_as,
            service_info.name,
            service_info.status,
            service_info.reductions,
            service_info.memory_bytes
        );
    }
    for pid in idle {
        ember::exit(pid, ExitReason::Kill);
    }
    println!("ember: killed the idle processes; bye");
}
