//! The supervisor process: a [`GenServer`] whose state is the ordered list
//! of children (supervisor.erl's `#state{}` and its callbacks).

use std::sync::Arc;

use ember_runtime::{self_pid, send, trap_exit, Envelope, Exit, ExitReason, Pid};

use super::child::{self, RestartLog};
use super::spec::{ChildSpec, ChildType, Restart, Strategy};
use super::{ChildCounts, ChildInfo, ChildStatus, Init, InitFuture, SupervisorError};
use crate::gen::{ReplyTo, StartError};
use crate::gen_server::{self, CallReturn, GenServer, Return};

/// The requests a supervisor serves.
pub(crate) enum Request {
    WhichChildren,
    CountChildren,
    StartChild(ChildSpec),
    TerminateChild(Arc<str>),
    RestartChild(Arc<str>),
    DeleteChild(Arc<str>),
    GetChildSpec(Arc<str>),
}

/// Its answers.
pub(crate) enum Response {
    Children(Vec<ChildInfo>),
    Counts(ChildCounts),
    Started(Result<Option<Pid>, SupervisorError>),
    Done(Result<(), SupervisorError>),
    Spec(Option<ChildSpec>),
}

/// The message a supervisor sends itself to retry a failed restart
/// (OTP's `{try_again_restart, Id}`).
struct TryAgain(Arc<str>);

/// One child: its spec and whether it runs.
struct Child {
    spec: ChildSpec,
    status: ChildStatus,
    /// Times it has been restarted, for reports.
    restarts: u64,
}

/// The supervisor's state.
pub(crate) struct Server {
    /// Its registered name, or its pid, for reports.
    name: Arc<str>,
    strategy: Strategy,
    log: RestartLog,
    /// In start order.
    children: Vec<Child>,
}

impl Server {
    fn find(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| &*c.spec.id == id)
    }

    fn find_pid(&self, pid: Pid) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.status == ChildStatus::Running(pid))
    }

    fn report(&self, context: &'static str, child: &Child, pid: Option<Pid>, reason: &ExitReason) {
        child::report(
            &self.name,
            context,
            Some(&child.spec.id),
            pid,
            reason,
            child.restarts,
        );
    }

    /// Starts the child at `index`; on success it runs.
    async fn start_at(&mut self, index: usize) -> Result<Option<Pid>, StartError> {
        let start = self.children[index].spec.start.clone();
        match child::start(&start).await {
            Ok(pid) => {
                self.children[index].status = ChildStatus::Running(pid);
                tracing::debug!(
                    target: "ember_otp::supervisor",
                    supervisor = &*self.name,
                    child_id = &*self.children[index].spec.id,
                    pid = %pid,
                    "progress report: child started"
                );
                Ok(Some(pid))
            }
            Err(StartError::Ignore) => {
                self.children[index].status = ChildStatus::Undefined;
                Ok(None)
            }
            Err(e) => {
                self.report("start_error", &self.children[index], None, &e.reason());
                Err(e)
            }
        }
    }

    /// Terminates the child at `index` if it runs; it stays in the list as
    /// undefined (the caller removes temporaries).
    async fn terminate_at(&mut self, index: usize) {
        let child = &mut self.children[index];
        if let ChildStatus::Running(pid) = child.status {
            let result = child::shutdown(pid, child.spec.shutdown, child.spec.restart).await;
            let child = &self.children[index];
            if let Err(reason) = result {
                self.report("shutdown_error", child, Some(pid), &reason);
            }
        }
        self.children[index].status = ChildStatus::Undefined;
    }

    /// Terminates the children at `from..` in reverse order; temporary ones
    /// are forgotten (supervisor.erl's `terminate_children/2`).
    async fn terminate_from(&mut self, from: usize) {
        for index in (from..self.children.len()).rev() {
            self.terminate_at(index).await;
        }
        let mut index = from;
        while index < self.children.len() {
            if self.children[index].spec.restart == Restart::Temporary {
                self.children.remove(index);
            } else {
                index += 1;
            }
        }
    }

    /// Starts the children at `from..` in order. On a failure, returns the
    /// index of the child that failed, leaving the rest undefined.
    async fn start_from(&mut self, from: usize) -> Result<(), usize> {
        for index in from..self.children.len() {
            if self.start_at(index).await.is_err() {
                return Err(index);
            }
        }
        Ok(())
    }

    /// The first start, in `init`: all children in order, or none.
    async fn start_initial(&mut self) -> Result<(), ExitReason> {
        let mut index = 0;
        while index < self.children.len() {
            match self.start_at(index).await {
                Ok(None) if self.children[index].spec.restart == Restart::Temporary => {
                    self.children.remove(index);
                }
                Ok(_) => index += 1,
                Err(e) => {
                    let id = self.children[index].spec.id.clone();
                    for started in (0..index).rev() {
                        self.terminate_at(started).await;
                    }
                    return Err(ExitReason::ShutdownWith(
                        format!("{{failed_to_start_child,{id},{}}}", e.reason()).into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A child exited: restart per its type and the strategy
    /// (supervisor.erl's `restart_child/3` and `do_restart/3`).
    async fn child_exited(&mut self, index: usize, reason: ExitReason) -> Return<Server> {
        let pid = self.children[index].status.pid();
        self.children[index].status = ChildStatus::Undefined;
        let child = &self.children[index];
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_orderly(),
            Restart::Temporary => false,
        };
        if restart || !reason.is_orderly() {
            self.report("child_terminated", child, pid, &reason);
        }
        if !restart {
            if child.spec.restart == Restart::Temporary {
                self.children.remove(index);
            }
            return Return::NoReply;
        }
        self.restart(index).await
    }

    /// Restarts after the child at `index` terminated, counting one restart
    /// against the intensity (supervisor.erl's `restart/2`).
    async fn restart(&mut self, index: usize) -> Return<Server> {
        if !self.log.add() {
            let child = &self.children[index];
            self.report(
                "reached_max_restart_intensity",
                child,
                None,
                &ExitReason::Shutdown,
            );
            return Return::Stop(ExitReason::Shutdown);
        }
        self.children[index].restarts += 1;
        let id = self.children[index].spec.id.clone();
        let failed = match self.strategy {
            Strategy::OneForOne => self.start_at(index).await.is_err().then_some(index),
            Strategy::OneForAll => {
                self.terminate_others(index).await;
                match self.start_from(0).await {
                    Ok(()) => None,
                    Err(failed) => {
                        // Terminate what this pass started, then try again.
                        for started in (0..failed).rev() {
                            self.terminate_at(started).await;
                        }
                        Some(failed)
                    }
                }
            }
            Strategy::RestForOne => {
                self.terminate_after(index).await;
                let index = self.find(&id).unwrap_or(index);
                self.start_from(index).await.err()
            }
        };
        if let Some(failed) = failed {
            let child = &mut self.children[failed];
            child.status = ChildStatus::Restarting;
            send(self_pid(), TryAgain(child.spec.id.clone()));
        }
        Return::NoReply
    }

    /// one_for_all: terminates every child but `index` (reverse order),
    /// forgetting temporaries, and leaves them all undefined.
    async fn terminate_others(&mut self, index: usize) {
        let id = self.children[index].spec.id.clone();
        for other in (0..self.children.len()).rev() {
            if other != index {
                self.terminate_at(other).await;
            }
        }
        self.children
            .retain(|c| c.spec.restart != Restart::Temporary || c.spec.id == id);
    }

    /// rest_for_one: terminates the children after `index` (reverse order),
    /// forgetting temporaries.
    async fn terminate_after(&mut self, index: usize) {
        self.terminate_from(index + 1).await;
    }

    fn info(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|c| ChildInfo {
                id: Some(c.spec.id.clone()),
                status: c.status,
                child_type: c.spec.child_type,
            })
            .collect()
    }

    fn counts(&self) -> ChildCounts {
        let mut counts = ChildCounts {
            specs: self.children.len(),
            ..ChildCounts::default()
        };
        for c in &self.children {
            if c.status.pid().is_some() {
                counts.active += 1;
            }
            match c.spec.child_type {
                ChildType::Worker => counts.workers += 1,
                ChildType::Supervisor => counts.supervisors += 1,
            }
        }
        counts
    }

    async fn start_child(&mut self, spec: ChildSpec) -> Result<Option<Pid>, SupervisorError> {
        spec.validate().map_err(SupervisorError::Spec)?;
        if let Some(index) = self.find(&spec.id) {
            return Err(match self.children[index].status {
                ChildStatus::Running(pid) => SupervisorError::AlreadyStarted(pid),
                _ => SupervisorError::AlreadyPresent,
            });
        }
        let temporary = spec.restart == Restart::Temporary;
        self.children.push(Child {
            spec,
            status: ChildStatus::Undefined,
            restarts: 0,
        });
        let index = self.children.len() - 1;
        match self.start_at(index).await {
            Ok(Some(pid)) => Ok(Some(pid)),
            Ok(None) => {
                if temporary {
                    self.children.pop();
                }
                Ok(None)
            }
            Err(e) => {
                self.children.pop();
                Err(SupervisorError::Start(e))
            }
        }
    }

    async fn terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let index = self.find(id).ok_or(SupervisorError::NotFound)?;
        self.terminate_at(index).await;
        if self.children[index].spec.restart == Restart::Temporary {
            self.children.remove(index);
        }
        Ok(())
    }

    async fn restart_child(&mut self, id: &str) -> Result<Option<Pid>, SupervisorError> {
        let index = self.find(id).ok_or(SupervisorError::NotFound)?;
        match self.children[index].status {
            ChildStatus::Running(_) => Err(SupervisorError::Running),
            ChildStatus::Restarting => Err(SupervisorError::Restarting),
            ChildStatus::Undefined => self.start_at(index).await.map_err(SupervisorError::Start),
        }
    }

    fn delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let index = self.find(id).ok_or(SupervisorError::NotFound)?;
        match self.children[index].status {
            ChildStatus::Running(_) => Err(SupervisorError::Running),
            ChildStatus::Restarting => Err(SupervisorError::Restarting),
            ChildStatus::Undefined => {
                self.children.remove(index);
                Ok(())
            }
        }
    }
}

impl GenServer for Server {
    type Args = (InitFuture, Option<Arc<str>>);
    type Call = Request;
    type Reply = Response;
    type Cast = ();
    type Continue = ();

    async fn init((init, name): Self::Args) -> gen_server::Init<Self> {
        trap_exit(true);
        let spec = match init.await {
            Init::Ok(spec) => spec,
            Init::Ignore => return gen_server::Init::Ignore,
        };
        let mut server = Server {
            name: name.unwrap_or_else(|| self_pid().to_string().into()),
            strategy: spec.flags.strategy,
            log: RestartLog::new(spec.flags.intensity, spec.flags.period),
            children: spec
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    status: ChildStatus::Undefined,
                    restarts: 0,
                })
                .collect(),
        };
        match server.start_initial().await {
            Ok(()) => gen_server::Init::Ok(server),
            Err(reason) => gen_server::Init::Stop(reason),
        }
    }

    async fn handle_call(
        &mut self,
        request: Request,
        _from: &ReplyTo<Response>,
    ) -> CallReturn<Self> {
        CallReturn::Reply(match request {
            Request::WhichChildren => Response::Children(self.info()),
            Request::CountChildren => Response::Counts(self.counts()),
            Request::StartChild(spec) => Response::Started(self.start_child(spec).await),
            Request::TerminateChild(id) => Response::Done(self.terminate_child(&id).await),
            Request::RestartChild(id) => Response::Started(self.restart_child(&id).await),
            Request::DeleteChild(id) => Response::Done(self.delete_child(&id)),
            Request::GetChildSpec(id) => {
                Response::Spec(self.find(&id).map(|i| self.children[i].spec.clone()))
            }
        })
    }

    async fn handle_info(&mut self, message: Envelope) -> Return<Self> {
        let message = match message.downcast::<Exit>() {
            Ok(Exit { from, reason }) => {
                return match self.find_pid(from) {
                    Some(index) => self.child_exited(index, reason).await,
                    None => Return::NoReply, // an old child's, or a stranger's
                };
            }
            Err(message) => message,
        };
        match message.downcast::<TryAgain>() {
            Ok(TryAgain(id)) => match self.find(&id) {
                Some(index) if self.children[index].status == ChildStatus::Restarting => {
                    self.restart(index).await
                }
                _ => Return::NoReply,
            },
            Err(message) => {
                tracing::warn!(
                    target: "ember_otp::supervisor",
                    supervisor = &*self.name,
                    "supervisor received unexpected {}",
                    crate::gen::describe(&message)
                );
                Return::NoReply
            }
        }
    }

    async fn terminate(&mut self, _reason: &ExitReason) {
        for index in (0..self.children.len()).rev() {
            self.terminate_at(index).await;
        }
    }
}
