//! Golden files: `render` output for every example under `examples/`, committed under
//! `operator/tests/golden/<example>.yaml`.
//!
//! After an intended change to the builders, regenerate them with
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p fastagentic-operator --test golden
//! ```
//!
//! and review the diff like any other code change.

// Test helpers may panic with a message: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The examples the acceptance criteria name; each must exist and have a golden file.
const REQUIRED: [&str; 7] = [
    "dev",
    "staging",
    "production-small",
    "production-large",
    "kubernetes-seed",
    "python-agent",
    "openai",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/ is readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
        .collect();
    out.sort();
    out
}

#[test]
fn render_matches_golden_for_every_example() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let examples = examples();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    for required in REQUIRED {
        assert!(
            names.contains(&required),
            "examples/{required}.yaml is missing (have {names:?})"
        );
    }
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut mismatches = Vec::new();
    for (name, path) in &examples {
        let input = std::fs::read_to_string(path).expect("example is readable");
        let rendered = fastagentic_operator::render::render(&input)
            .unwrap_or_else(|e| panic!("{}: render failed: {e}", path.display()));
        let golden = golden_dir.join(format!("{name}.yaml"));
        if update {
            std::fs::write(&golden, &rendered).expect("golden file is writable");
            println!("updated {}", golden.display());
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == rendered => {}
            Ok(_) => mismatches.push(format!(
                "{name}: render output differs from {}",
                golden.display()
            )),
            Err(e) => mismatches.push(format!("{name}: {}: {e}", golden.display())),
        }
    }
    // A golden file whose example was removed is stale.
    for entry in std::fs::read_dir(&golden_dir)
        .expect("golden dir")
        .filter_map(Result::ok)
    {
        let stem = entry
            .path()
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string);
        if let Some(stem) = stem
            && !names.contains(&stem.as_str())
        {
            mismatches.push(format!("tests/golden/{stem}.yaml has no example"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\nregenerate with: UPDATE_GOLDEN=1 cargo test -p fastagentic-operator --test golden",
        mismatches.join("\n")
    );
}
