//! Holds only tests (`tests/`): the compose file and the Dockerfile are checked by reading them
//! (`tests/compose.rs`; `make test-compose` runs them for real, outside `cargo test`); the docs are checked
//! against the code and the tree (`tests/documentation.rs`: every setting documented with its
//! default, every relative link and every docs section a comment points at exists).
