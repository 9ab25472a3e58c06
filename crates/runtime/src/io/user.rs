//! `user`: the node's default group leader. It serves the I/O protocol by
//! writing to the OS process's stdout.
//!
//! The process decodes each request and queues its text, with who to reply
//! to, on a bounded channel ([`QUEUE_REQUESTS`] entries) to a dedicated
//! thread, `ember-stdout`. That thread writes whatever is queued, flushes
//! once the queue is empty (so a line, or a prompt without a newline, shows
//! at once, and a burst costs one flush), and only then sends each
//! `io_reply`: a reply means the text reached stdout. A slow terminal
//! therefore blocks that thread only: the queue fills, `user` waits for room
//! in its own `await` (its scheduler runs other processes meanwhile), and
//! each client waits for its reply, as in Erlang.
//!
//! When a write to stdout fails (a closed pipe: `EPIPE`, since Rust ignores
//! `SIGPIPE`), the thread logs one warning and from then on discards the
//! output and still replies `ok`: printing processes keep running, the node
//! stays up. The thread is started with the first output and ends when the
//! `user` process is gone (the runtime's drop waits up to a second for it to
//! write what is queued).

use std::io::Write;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use ember_term::Term;
use tokio::sync::mpsc;

use super::protocol::{self, IoRequest};
use crate::mailbox::Envelope;
use crate::pid::Pid;
use crate::runtime::Shared;
use crate::spawn::Spawn;

/// Requests queued for the stdout thread before `user` waits for room.
pub(crate) const QUEUE_REQUESTS: usize = 256;

/// Text to write and the reply that acknowledges it.
struct Job {
    text: String,
    reply_to: Pid,
    reply_as: Term,
}

/// Starts a `user` process on `rt`: registered as `user` unless that name
/// is taken (then unnamed, with a warning).
pub(crate) fn start(rt: &Arc<Shared>) -> Pid {
    let options = || Spawn::new().label("user");
    let spawned = rt
        .spawn_with(options().name("user"), None, serve())
        .or_else(|e| {
            tracing::warn!("ember: the default group leader runs unnamed: {e}");
            rt.spawn_with(options(), None, serve())
        });
    match spawned {
        Ok(spawned) => spawned.pid,
        Err(_) => unreachable!("a spawn without name, link or monitor cannot fail"),
    }
}

/// The body of `user`.
async fn serve() {
    let mut queue: Option<mpsc::Sender<Job>> = None;
    loop {
        let envelope = crate::receive_any(|_| true).await;
        let term = match envelope.downcast::<Term>() {
            Ok(term) => term,
            Err(other) => {
                tracing::debug!("ember: user ignores a message that is not a term");
                crate::scheduler::drop_contained(other);
                continue;
            }
        };
        let Some(request) = IoRequest::from_term(&term) else {
            tracing::debug!("ember: user ignores a term that is not an io_request: {term}");
            continue;
        };
        let Some(reply_to) = crate::dist::pid_from_term(&request.from) else {
            tracing::debug!("ember: user ignores an io_request from {}", request.from);
            continue;
        };
        match request.chars() {
            Ok(text) => {
                let job = Job {
                    text,
                    reply_to,
                    reply_as: request.reply_as,
                };
                let sender = queue.get_or_insert_with(start_writer);
                if let Err(mpsc::error::SendError(job)) = sender.send(job).await {
                    // The thread could not start, or is gone: say so.
                    let reply = Term::tuple([Term::atom("error"), Term::atom("terminated")]);
                    crate::send(job.reply_to, protocol::reply_term(&job.reply_as, reply));
                    queue = None;
                }
            }
            Err(reply) => {
                crate::send(reply_to, protocol::reply_term(&request.reply_as, reply));
            }
        }
    }
}

/// Starts the stdout thread; its handle goes to the runtime's [`super::NodeIo`]
/// so that the runtime's drop can wait for it.
fn start_writer() -> mpsc::Sender<Job> {
    let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS);
    let rt = crate::context::with_runtime("user", Arc::clone);
    let weak = Arc::downgrade(&rt);
    match std::thread::Builder::new()
        .name("ember-stdout".into())
        .spawn(move || write_loop(receiver, &weak))
    {
        Ok(thread) => rt.io.adopt_writer(thread),
        Err(e) => tracing::warn!("ember: cannot start the stdout thread: {e}"),
    }
    sender
}

/// The stdout thread: write, flush when the queue runs dry, then reply.
fn write_loop(mut receiver: mpsc::Receiver<Job>, rt: &Weak<Shared>) {
    let mut failed = false;
    let mut batch: Vec<Job> = Vec::new();
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < QUEUE_REQUESTS {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if !failed {
            if let Err(e) = write_batch(&batch) {
                failed = true;
                tracing::warn!(
                    "ember: writing to stdout failed ({e}); the user process discards output from now on"
                );
            }
        }
        let Some(rt) = rt.upgrade() else { return };
        for job in batch.drain(..) {
            let reply = protocol::reply_term(&job.reply_as, Term::atom("ok"));
            rt.send_envelope(job.reply_to, Envelope::new(reply));
        }
    }
}

fn write_batch(batch: &[Job]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for job in batch {
        out.write_all(job.text.as_bytes())?;
    }
    out.flush()
}

/// The handle of the stdout thread, to wait for at the runtime's drop.
pub(crate) type Writer = JoinHandle<()>;
