//! The tokio runtime a service's binary runs its background work on: database connections,
//! health checks, listings (read-api looks up by id on the HTTP workers themselves). The HTTP
//! workers are actix-web's own threads beside it.

use std::io;

/// Worker threads for `threads`; 0 means one per four cores, at least one.
///
/// Fewer runtime threads than cores: every request already runs on an HTTP worker thread, and
/// work handed between them and the runtime costs a wake-up and a context switch each way.
/// On 2 cores read-api served about 20 % more lookups by id with one runtime thread than with
/// two (docs/configuration.md, `db_threads`).
pub fn worker_threads(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1)),
        n => n,
    }
}

/// A multi-threaded runtime with [`worker_threads`]`(threads)` workers, timers and I/O on.
pub fn build(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(threads))
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_a_quarter_of_the_cores_and_never_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(worker_threads(0), (cores / 4).max(1));
        assert_eq!(worker_threads(3), 3);
    }

    #[test]
    fn the_runtime_has_the_threads_asked_for() {
        let runtime = build(2).expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 2);
    }
}
