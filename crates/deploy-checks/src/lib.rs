//! Holds only tests (`tests/`): no Docker engine runs on our machines, so the compose file and
//! the Dockerfile are checked by reading them (`tests/compose.rs`); the docs are checked
//! against the code and the tree (`tests/documentation.rs`: every setting documented with its
//! default, every relative link and every docs section a comment points at exists).
