//! The documentation, checked against the code and the tree: `docs/configuration.md` against
//! each service's `Settings::default()`, and every relative link in the Markdown files (and
//! every `docs/…md#section` a source comment points at) against the files and headings that
//! exist.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A path as the repository names it, for messages.
fn shown(path: &Path) -> String {
    let root = root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const CONFIGURATION: &str = "docs/configuration.md";

/// Variables a service reads that are not settings keys; documented with `—` as their key.
const EXTRAS: &[&str] = &["RUST_LOG", "CONFIG_FILE"];

/// One line of a service's table: key, variable, default, and where it is.
struct Row {
    key: Option<String>,
    variable: String,
    default: String,
    line: usize,
}

/// The text of a cell without its backticks: `` `8000` `` → `8000`.
fn unquote(cell: &str) -> String {
    let cell = cell.trim();
    cell.strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or(cell)
        .to_owned()
}

/// The rows of the table under `## {service}`.
fn documented(text: &str, service: &str) -> Vec<Row> {
    let heading = format!("## {service}");
    let mut lines = text.lines().enumerate();
    assert!(
        lines.any(|(_, l)| l.trim() == heading),
        "{CONFIGURATION} has no `{heading}` section"
    );
    let mut rows = Vec::new();
    for (index, line) in lines.take_while(|(_, l)| !l.starts_with("## ")) {
        let Some(inner) = line.trim().strip_prefix('|') else {
            continue;
        };
        let cells: Vec<&str> = inner.splitn(4, '|').collect();
        if cells.len() < 4 || cells[0].trim() == "Key" || cells[0].trim().starts_with("---") {
            continue;
        }
        let key = unquote(cells[0]);
        rows.push(Row {
            key: (key != "—").then_some(key),
            variable: unquote(cells[1]),
            default: unquote(cells[2]),
            line: index + 1,
        });
    }
    assert!(
        !rows.is_empty(),
        "{CONFIGURATION}: `{heading}` has no table"
    );
    rows
}

/// A service's settings keys and their defaults, as the configuration loader sees them.
fn defaults<T: serde::Serialize>(settings: T) -> BTreeMap<String, Value> {
    match serde_json::to_value(settings).unwrap() {
        Value::Object(map) => map.into_iter().collect(),
        _ => panic!("settings serialize to a map"),
    }
}

/// URLs may carry a password and tokens are secrets: their values are never shown.
fn is_secret(key: &str) -> bool {
    key.ends_with("_url") || key.ends_with("_urls") || key.contains("token")
}

/// How the table writes a default.
fn as_documented(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.is_empty() => Some("*(unset)*".into()),
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.is_empty() => Some("*(empty)*".into()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Everything wrong with one service's table, each naming the key or line.
fn problems(text: &str, service: &str, defaults: &BTreeMap<String, Value>) -> Vec<String> {
    let rows = documented(text, service);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for row in &rows {
        let at = format!("{CONFIGURATION}:{} (`## {service}`)", row.line);
        if !seen.insert(row.variable.clone()) {
            problems.push(format!("{at}: `{}` is documented twice", row.variable));
        }
        let key = row.variable.to_ascii_lowercase();
        let Some(value) = defaults.get(&key) else {
            if !EXTRAS.contains(&row.variable.as_str()) {
                problems.push(format!(
                    "{at}: documents `{}`, which {service} does not read (no setting `{key}`)",
                    row.variable
                ));
            }
            continue;
        };
        if row.key.as_deref() != Some(key.as_str()) {
            problems.push(format!(
                "{at}: the key of `{}` is `{key}`, not {:?}",
                row.variable, row.key
            ));
        }
        if let Some(expected) = as_documented(value)
            && expected != row.default
        {
            problems.push(if is_secret(&key) {
                format!(
                    "{at}: the default of `{key}` is not the one in {service}'s \
                     Settings::default() (values not shown: they may hold a secret)"
                )
            } else {
                let unit = if key.ends_with("_ms") {
                    " (milliseconds)"
                } else {
                    ""
                };
                format!(
                    "{at}: the default of `{key}` is documented as `{}`, but {service}'s \
                     Settings::default() has `{expected}`{unit}",
                    row.default
                )
            });
        }
    }
    for key in defaults.keys() {
        let variable = key.to_ascii_uppercase();
        if !seen.contains(&variable) {
            problems.push(format!(
                "{CONFIGURATION}: {service}'s setting `{key}` has no line in the `## {service}` \
                 table; add `| `{key}` | `{variable}` | <default> | <meaning> |`"
            ));
        }
    }
    problems
}

#[test]
fn every_setting_has_its_line_in_the_configuration_doc_and_every_line_a_setting() {
    let text = read(&root().join(CONFIGURATION));
    let mut all = Vec::new();
    all.extend(problems(
        &text,
        "write-api",
        &defaults(write_api::Settings::default()),
    ));
    all.extend(problems(
        &text,
        "replicator",
        &defaults(replicator::Settings::default()),
    ));
    all.extend(problems(
        &text,
        "read-api",
        &defaults(read_api::Settings::default()),
    ));
    assert!(all.is_empty(), "\n{}\n", all.join("\n"));
}

/// The Markdown files people read: the README, `docs/`, and the crates' READMEs.
fn markdown_files() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![root.join("README.md")];
    for dir in [root.join("docs"), root.join("crates")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            } else if path.join("README.md").is_file() {
                files.push(path.join("README.md"));
            }
        }
    }
    files.sort();
    files
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let slug = slug(heading.trim_start_matches('#'));
        let count = counts.entry(slug.clone()).or_default();
        anchors.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// Lines outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The targets of `[text](target)` links on a line.
fn link_targets(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else { break };
        targets.push(rest[..end].trim());
        rest = &rest[end..];
    }
    targets
}

/// Checks that `target` (relative to `dir`, with an optional `#anchor`; a bare `#anchor` is in
/// `current`) names a file that exists and, in a Markdown file, a heading that exists.
fn check_target(dir: &Path, current: &Path, target: &str, from: &str, problems: &mut Vec<String>) {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        current.to_path_buf()
    } else {
        dir.join(path)
    };
    if !file.exists() {
        problems.push(format!("{from}: `{target}`: no such file"));
        return;
    }
    if let Some(anchor) = anchor
        && file.extension().is_some_and(|e| e == "md")
        && !anchors(&read(&file)).contains(anchor)
    {
        problems.push(format!(
            "{from}: `{target}`: no heading with the anchor `#{anchor}`"
        ));
    }
}

#[test]
fn relative_links_in_the_docs_point_at_files_and_headings_that_exist() {
    let files = markdown_files();
    assert!(
        files.iter().any(|f| f.ends_with("docs/configuration.md")),
        "found the Markdown files: {files:?}"
    );
    let mut problems = Vec::new();
    for file in &files {
        let text = read(file);
        let dir = file.parent().unwrap();
        let mut fenced = false;
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            if fenced {
                continue;
            }
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let from = format!("{}:{}", shown(file), number + 1);
                check_target(dir, file, target, &from, &mut problems);
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Source files that may point at a section of the docs in a comment.
fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
            found.push(path);
        }
    }
}

#[test]
fn comments_that_point_at_a_docs_section_name_one_that_exists() {
    let root = root();
    let mut files = vec![root.join("Cargo.toml")];
    source_files(&root.join("crates"), &mut files);
    let mut problems = Vec::new();
    let mut pointers = 0;
    for file in &files {
        let text = read(file);
        for (number, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(start) = rest.find("docs/") {
                rest = &rest[start..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || "/._-#".contains(c)))
                    .unwrap_or(rest.len());
                let pointer = rest[..end].trim_end_matches('.');
                rest = &rest[end..];
                if !pointer.contains(".md") {
                    continue;
                }
                pointers += 1;
                let from = format!("{}:{}", shown(file), number + 1);
                check_target(&root, file, pointer, &from, &mut problems);
            }
        }
    }
    assert!(pointers > 0, "no comment points at docs/ any more");
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}
