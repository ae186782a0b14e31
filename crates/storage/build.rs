// Embedded migrations are read at compile time: rebuild when the folder changes, or a binary
// silently keeps the old set (docs/dependencies.md#embedded-migrations-need-a-rerun-hint).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
