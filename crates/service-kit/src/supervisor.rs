//! One owner for a service's HTTP server and its background tasks, so that nothing dies
//! silently.
//!
//! ```ignore
//! let mut supervisor = Supervisor::new(service_kit::shutdown::on_signal());
//! supervisor.spawn("outbox relay", relay.run(supervisor.stop_token()));
//! let health = supervisor.health(); // for /readyz: `health.failure()`
//! let listening = service_kit::http::start(&options, move || App::new() /* … */)?;
//! supervisor.serve(listening.server);
//! supervisor.run().await?; // Err: exit non-zero, so the service is restarted
//! ```
//!
//! - A background task is expected to run until [`Supervisor::stop_token`] is cancelled. If
//!   one ends before that — it panicked, or its future returned — the supervisor logs the
//!   task's name and the cause, flips [`TaskHealth`] to failed (so `/readyz` answers 503),
//!   stops the server and the other tasks within [`Supervisor::failure_grace`] and returns
//!   [`Stopped::TaskFailed`], for `main` to exit non-zero and systemd, compose or an
//!   orchestrator to restart the process.
//! - The server ending by itself is a failure too ([`Stopped::ServerFailed`]).
//! - On shutdown (the token given to [`Supervisor::new`]), the server stops gracefully
//!   (in-flight requests finish), then the tasks are asked to stop and each gets
//!   [`Supervisor::task_stop_timeout`] to finish its work in hand; a task that panics or
//!   overruns then is reported the same way.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use actix_web::dev::Server;
use tokio::sync::watch;
use tokio::task::{AbortHandle, Id, JoinError, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Why a supervised task ended when it should not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The task panicked, with this message.
    Panicked(String),
    /// The task's future completed while the service was meant to be running.
    ReturnedEarly,
    /// Asked to stop, the task did not finish in time and was aborted.
    DidNotStop(Duration),
    /// Something else aborted the task.
    Aborted,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Panicked(message) => write!(f, "panicked: {message}"),
            Cause::ReturnedEarly => f.write_str("returned early"),
            Cause::DidNotStop(limit) => write!(f, "did not stop within {limit:?}"),
            Cause::Aborted => f.write_str("was aborted"),
        }
    }
}

/// A task that ended unexpectedly: its name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub task: String,
    pub cause: Cause,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "background task `{}` {}", self.task, self.cause)
    }
}

/// How a supervised service stopped, when it did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("{0}")]
    TaskFailed(TaskFailure),
    #[error("the HTTP server stopped by itself: {0}")]
    ServerFailed(String),
}

/// What `/readyz` consults: healthy while every supervised task runs.
#[derive(Debug, Clone)]
pub struct TaskHealth(watch::Receiver<Option<TaskFailure>>);

impl TaskHealth {
    /// The first task that ended unexpectedly, if any.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.0.borrow().clone()
    }

    /// A health that never fails, for code run without a supervisor (tests, commands).
    pub fn always_healthy() -> Self {
        let (sender, receiver) = watch::channel(None);
        // Keeping the sender alive is not needed: a closed channel keeps its last value.
        drop(sender);
        Self(receiver)
    }
}

/// What ended the wait in [`Supervisor::run`].
enum Event {
    Shutdown,
    ServerEnded(std::io::Result<()>),
    TaskEnded(Joined),
}

/// What a watcher task reports: the supervised task's name and how it ended.
type Joined = Result<(Id, (String, Result<(), JoinError>)), JoinError>;

/// Owns a service's HTTP server and named background tasks; see the module documentation.
pub struct Supervisor {
    shutdown: CancellationToken,
    stop: CancellationToken,
    health: watch::Sender<Option<TaskFailure>>,
    watchers: JoinSet<(String, Result<(), JoinError>)>,
    names: HashMap<Id, String>,
    tasks: Vec<AbortHandle>,
    server: Option<Server>,
    failure_grace: Duration,
    task_stop_timeout: Duration,
}

impl Supervisor {
    /// A supervisor that stops everything in order when `shutdown` is cancelled (see
    /// [`crate::shutdown::on_signal`]).
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            stop: CancellationToken::new(),
            health: watch::channel(None).0,
            watchers: JoinSet::new(),
            names: HashMap::new(),
            tasks: Vec::new(),
            server: None,
            failure_grace: Duration::from_millis(500),
            task_stop_timeout: Duration::from_secs(10),
        }
    }

    /// After a task failed: how long the server and the other tasks get to stop before they
    /// are abandoned. Short, so the process is gone within a second and restarted.
    pub fn failure_grace(mut self, grace: Duration) -> Self {
        self.failure_grace = grace;
        self
    }

    /// On shutdown: how long each task gets to finish after being asked to stop.
    pub fn task_stop_timeout(mut self, limit: Duration) -> Self {
        self.task_stop_timeout = limit;
        self
    }

    /// Cancelled when the background tasks must stop: on shutdown, after the server has
    /// stopped, or at once when another task failed. Every task watches it.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Whether every task still runs, for `/readyz`.
    pub fn health(&self) -> TaskHealth {
        TaskHealth(self.health.subscribe())
    }

    /// Spawns `task` under `name` (shown in logs and `/readyz`). It must run until
    /// [`Supervisor::stop_token`] is cancelled.
    pub fn spawn<F>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.watch(name, tokio::spawn(task));
    }

    /// Supervises a task spawned elsewhere.
    pub fn watch(&mut self, name: impl Into<String>, handle: JoinHandle<()>) {
        let name = name.into();
        self.tasks.push(handle.abort_handle());
        let watcher = self.watchers.spawn({
            let name = name.clone();
            async move { (name, handle.await) }
        });
        self.names.insert(watcher.id(), name);
    }

    /// The HTTP server to run; it is stopped gracefully on shutdown.
    pub fn serve(&mut self, server: Server) {
        self.server = Some(server);
    }

    /// Only when built with debug assertions (as tests build the binaries): `TEST_TASK_FAULT`
    /// = `panic:<ms>` or `return:<ms>` adds a task named `injected fault` that panics or
    /// returns that long after start, to show what happens when a real task does.
    pub fn inject_fault_from_env(&mut self) {
        #[cfg(debug_assertions)]
        if let Ok(spec) = std::env::var("TEST_TASK_FAULT") {
            let (kind, after) = spec.split_once(':').unwrap_or((spec.as_str(), "0"));
            let after = Duration::from_millis(after.parse().unwrap_or(0));
            let panics = kind == "panic";
            tracing::warn!(%spec, "TEST_TASK_FAULT set: a task will fail on purpose");
            self.spawn("injected fault", async move {
                tokio::time::sleep(after).await;
                tracing::warn!(panics, "injected fault: the task ends now");
                if panics {
                    injected_panic();
                }
            });
        }
    }

    /// Runs until shutdown or a failure; see the module documentation. `Ok` only for an
    /// orderly stop with every task finished in time.
    pub async fn run(mut self) -> Result<(), Stopped> {
        let handle = self.server.as_ref().map(Server::handle);
        let mut server = self.server.take();
        let event = {
            let serving = async {
                match server.as_mut() {
                    Some(server) => server.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => Event::Shutdown,
                served = serving => Event::ServerEnded(served),
                Some(joined) = self.watchers.join_next_with_id() => Event::TaskEnded(joined),
            }
        };
        let outcome = match event {
            Event::Shutdown => None,
            Event::ServerEnded(served) => {
                server = None;
                Some(Stopped::ServerFailed(match served {
                    Ok(()) => "it was not asked to".to_owned(),
                    Err(error) => error.to_string(),
                }))
            }
            Event::TaskEnded(joined) => Some(Stopped::TaskFailed(
                self.failure(joined, Cause::ReturnedEarly),
            )),
        };

        let Some(failure) = outcome else {
            return self.stop_in_order(handle, server).await;
        };
        tracing::error!(error = %failure, "stopping the service so that it is restarted");
        if let Stopped::TaskFailed(task) = &failure {
            self.health.send_replace(Some(task.clone()));
        }
        self.stop.cancel();
        let grace = self.failure_grace;
        let stopping = async {
            if let (Some(handle), Some(server)) = (handle, server) {
                // The server future carries out the stop: poll both.
                let _ = tokio::join!(handle.stop(true), server);
            }
            while self.watchers.join_next().await.is_some() {}
        };
        if tokio::time::timeout(grace, stopping).await.is_err() {
            tracing::warn!(
                ?grace,
                "the rest of the service did not stop in time; abandoning it"
            );
        }
        self.abort_all();
        Err(failure)
    }

    /// Shutdown: the server first (in-flight requests finish), then the tasks.
    async fn stop_in_order(
        mut self,
        handle: Option<actix_web::dev::ServerHandle>,
        server: Option<Server>,
    ) -> Result<(), Stopped> {
        if let (Some(handle), Some(server)) = (handle, server) {
            let stopping = handle.stop(true);
            let (_, served) = tokio::join!(stopping, server);
            if let Err(error) = served {
                tracing::warn!(%error, "the HTTP server reported an error while stopping");
            }
        }
        self.stop.cancel();
        let limit = self.task_stop_timeout;
        let mut first_failure = None;
        loop {
            match tokio::time::timeout(limit, self.watchers.join_next_with_id()).await {
                Ok(None) => break,
                Ok(Some(joined)) => {
                    let (name, result) = self.named(joined);
                    if let Err(error) = result {
                        let failure = TaskFailure {
                            task: name,
                            cause: cause_of(error),
                        };
                        tracing::error!(error = %failure, "task failed while stopping");
                        first_failure.get_or_insert(failure);
                    }
                }
                Err(_) => {
                    for name in self.names.values() {
                        tracing::error!(task = %name, ?limit, "task did not stop in time; aborting it");
                        first_failure.get_or_insert(TaskFailure {
                            task: name.clone(),
                            cause: Cause::DidNotStop(limit),
                        });
                    }
                    self.abort_all();
                    break;
                }
            }
        }
        match first_failure {
            Some(failure) => Err(Stopped::TaskFailed(failure)),
            None => Ok(()),
        }
    }

    /// The task a watcher reported on, and how it ended.
    fn named(&mut self, joined: Joined) -> (String, Result<(), JoinError>) {
        match joined {
            Ok((id, outcome)) => {
                self.names.remove(&id);
                outcome
            }
            // The watcher itself never panics; it can only have been aborted.
            Err(error) => {
                let name = self.names.remove(&error.id()).unwrap_or_default();
                (name, Err(error))
            }
        }
    }

    fn failure(&mut self, joined: Joined, if_returned: Cause) -> TaskFailure {
        let (task, result) = self.named(joined);
        let cause = match result {
            Ok(()) => if_returned,
            Err(error) => cause_of(error),
        };
        TaskFailure { task, cause }
    }

    fn abort_all(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.watchers.abort_all();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.abort_all();
    }
}

#[cfg(debug_assertions)]
#[expect(clippy::panic, reason = "the injected fault is a panic")]
fn injected_panic() {
    panic!("injected by TEST_TASK_FAULT");
}

fn cause_of(error: JoinError) -> Cause {
    if error.is_panic() {
        Cause::Panicked(panic_message(error.into_panic()))
    } else {
        Cause::Aborted
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "a panic with a non-text payload".to_owned(),
        },
    }
}
