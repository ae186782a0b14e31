//! read-api over HTTP against the real PostgreSQL: each test runs its own app on a free port
//! over its own primary and replica databases, seeded directly with SQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod coalescing;
mod faults;
mod helpers;
mod min_version;
mod ops;
mod products;
mod replicas;
mod strategies;
