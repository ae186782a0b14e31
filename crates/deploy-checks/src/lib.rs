//! Holds only tests (`tests/`): no Docker engine runs on our machines, so the compose file and
//! the Dockerfile are checked by reading them.
