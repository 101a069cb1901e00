//! The crate's layering, checked on its sources: the domain modules (run store, pools, agent
//! backends, runs) know nothing about the HTTP server or HTTP statuses, the error module
//! imports no server code, and no source file grows past the size a reader can hold.
//!
//! This is the import-cycle check: `server` → `error` → domain, never back.

use std::fs;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display())
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The lines of `path` that are code (not comments), with their numbers.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

#[test]
fn domain_modules_do_not_reach_into_the_server_or_http_statuses() {
    let forbidden = [
        "crate::server",
        "crate::error",
        "crate::services",
        "StatusCode",
        "axum::",
    ];
    let mut files = Vec::new();
    for module in ["store", "pools", "agents", "runs"] {
        sources(&src().join(module), &mut files);
    }
    files.push(src().join("agent.rs"));
    assert!(files.len() > 10, "found only {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        for (n, line) in code_lines(file) {
            for word in forbidden {
                if line.contains(word) {
                    offences.push(format!("{}:{n}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "domain code importing HTTP:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_error_module_imports_no_server_code() {
    let offences: Vec<String> = code_lines(&src().join("error.rs"))
        .into_iter()
        .filter(|(_, l)| l.contains("crate::server") || l.contains("crate::services"))
        .map(|(n, l)| format!("error.rs:{n}: {}", l.trim()))
        .collect();
    assert!(offences.is_empty(), "{offences:?}");
}

#[test]
fn no_source_file_is_over_500_lines() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            (lines > 500).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}
