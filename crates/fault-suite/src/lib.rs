//! Holds only tests (`tests/faults`), run by `make test-faults`: each scenario starts the
//! real binaries against its own databases and vhost, puts a steady write load on them,
//! breaks something, and checks that nothing acknowledged was lost.
