//! End-to-end: the real write-api and replicator binaries against real databases and a real
//! RabbitMQ vhost of each test's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod faults;
mod stack;
mod workload;

mod converge;
