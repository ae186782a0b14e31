//! `docs/api.md`'s error tables against `http_api::ErrorCode`: every code is documented with
//! its status, and every documented code exists with that status.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use http_api::ErrorCode;

/// `(status, code)` for every code named in a row of a `| Status | `code` | When |` table.
fn documented_codes(text: &str) -> BTreeSet<(u16, String)> {
    let mut found = BTreeSet::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| Status | `code` |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let status: u16 = cells[1]
            .parse()
            .unwrap_or_else(|_| panic!("not a status in docs/api.md: {line}"));
        for code in cells[2].split(',') {
            let code = code.trim().trim_matches('`');
            found.insert((status, code.to_owned()));
        }
    }
    found
}

#[test]
fn every_error_code_is_documented_with_its_status_and_nothing_else_is() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md");
    let documented = documented_codes(&std::fs::read_to_string(&path).unwrap());
    let known: BTreeSet<(u16, String)> = ErrorCode::ALL
        .iter()
        .map(|code| (code.status().as_u16(), code.as_str().to_owned()))
        .collect();
    let missing: Vec<_> = known.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/api.md's error tables lack {missing:?} and name codes (or statuses) the APIs do \
         not answer: {unknown:?}"
    );
}
