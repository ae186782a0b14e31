//! The supervisor with real tasks and a real HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, web};
use service_kit::groups::HttpSettings;
use service_kit::http::Listening;
use service_kit::supervisor::{Cause, TaskFailure};
use service_kit::{Stopped, Supervisor, TaskHealth};
use tokio_util::sync::CancellationToken;

fn options() -> HttpSettings {
    HttpSettings {
        host: "127.0.0.1".into(),
        port: 0,
        http_workers: 1,
        shutdown_timeout_s: 5,
    }
}

/// A server whose `/readyz` answers from the supervisor's health, as the services' do.
fn server(health: TaskHealth) -> Listening {
    let health = web::Data::new(health);
    service_kit::http::start(&options(), move || {
        App::new().app_data(health.clone()).route(
            "/readyz",
            web::get().to(|health: web::Data<TaskHealth>| async move {
                match health.failure() {
                    None => HttpResponse::Ok().finish(),
                    Some(_) => HttpResponse::ServiceUnavailable().finish(),
                }
            }),
        )
    })
    .unwrap()
}

/// A task that runs until told to stop, and says whether it was.
fn well_behaved(supervisor: &mut Supervisor) -> Arc<AtomicBool> {
    let stopped = Arc::new(AtomicBool::new(false));
    let (token, flag) = (supervisor.stop_token(), stopped.clone());
    supervisor.spawn("steady worker", async move {
        token.cancelled().await;
        flag.store(true, Ordering::SeqCst);
    });
    stopped
}

fn refuses_connections(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

async fn ready(port: u16) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer[9..12].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_panics_stops_everything_within_a_second_naming_it() {
    let mut supervisor = Supervisor::new(CancellationToken::new());
    let health = supervisor.health();
    let listening = server(health.clone());
    let port = listening.port;
    supervisor.serve(listening.server);
    let others_stopped = well_behaved(&mut supervisor);
    let panicked_at = Arc::new(std::sync::OnceLock::new());
    let at = panicked_at.clone();
    supervisor.spawn("outbox relay", async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        at.set(Instant::now()).unwrap();
        panic!("the relay lost its mind");
    });
    let running = tokio::spawn(supervisor.run());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready(port).await, 200);

    let stopped = running.await.unwrap();
    // Well inside the failure grace (500 ms): nothing waited for it to run out.
    let took = panicked_at.get().unwrap().elapsed();
    let Err(Stopped::TaskFailed(failure)) = stopped else {
        panic!("{stopped:?}");
    };
    assert_eq!(
        failure,
        TaskFailure {
            task: "outbox relay".into(),
            cause: Cause::Panicked("the relay lost its mind".into()),
        }
    );
    assert_eq!(
        failure.to_string(),
        "background task `outbox relay` panicked: the relay lost its mind"
    );
    assert!(took < Duration::from_millis(250), "{took:?}");
    assert_eq!(health.failure(), Some(failure), "readiness flipped");
    assert!(
        others_stopped.load(Ordering::SeqCst),
        "the other task was told to stop"
    );
    assert!(refuses_connections(port), "the server is stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_returns_early_is_a_failure_too() {
    let mut supervisor = Supervisor::new(CancellationToken::new());
    let health = supervisor.health();
    let listening = server(health.clone());
    supervisor.serve(listening.server);
    well_behaved(&mut supervisor);
    supervisor.spawn("health checker", async {
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let started = Instant::now();
    let stopped = supervisor.run().await;
    let Err(Stopped::TaskFailed(failure)) = stopped else {
        panic!("{stopped:?}");
    };
    assert_eq!(failure.task, "health checker");
    assert_eq!(failure.cause, Cause::ReturnedEarly);
    assert_eq!(
        failure.to_string(),
        "background task `health checker` returned early"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(health.failure().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_server_first_then_the_tasks() {
    let shutdown = CancellationToken::new();
    let mut supervisor = Supervisor::new(shutdown.clone());
    let health = supervisor.health();
    let listening = server(health.clone());
    let port = listening.port;
    supervisor.serve(listening.server);
    let stopped = well_behaved(&mut supervisor);
    let running = tokio::spawn(supervisor.run());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready(port).await, 200);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert!(stopped.load(Ordering::SeqCst));
    assert!(health.failure().is_none(), "an orderly stop is no failure");
    assert!(refuses_connections(port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ignores_the_stop_request_is_reported() {
    let shutdown = CancellationToken::new();
    let mut supervisor =
        Supervisor::new(shutdown.clone()).task_stop_timeout(Duration::from_millis(200));
    supervisor.spawn("stubborn", std::future::pending());
    shutdown.cancel();
    let stopped = supervisor.run().await;
    let Err(Stopped::TaskFailed(failure)) = stopped else {
        panic!("{stopped:?}");
    };
    assert_eq!(failure.task, "stubborn");
    assert_eq!(failure.cause, Cause::DidNotStop(Duration::from_millis(200)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_elsewhere_can_be_watched() {
    let mut supervisor = Supervisor::new(CancellationToken::new());
    supervisor.watch(
        "consumer",
        tokio::spawn(async {
            panic!("{}", String::from("owned message"));
        }),
    );
    let Err(Stopped::TaskFailed(failure)) = supervisor.run().await else {
        panic!("expected a failure");
    };
    assert_eq!(failure.cause, Cause::Panicked("owned message".into()));
}
