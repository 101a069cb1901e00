//! kind end-to-end test (test layer 6): runs `tests/e2e/kind.sh`, which makes a kind cluster with
//! the images built by Docker and runs the same checks as the real-node e2e (`tests/e2e.rs`).
//!
//! It needs Docker (a running engine) and kind, which this repository's CI does not have, so it
//! runs only with `FASTAGENTIC_E2E=kind`; otherwise it prints that it was skipped and why.
//!
//!     FASTAGENTIC_E2E=kind cargo test -p fastagentic-tests --test kind_e2e -- --nocapture

// A test fails loudly when its prerequisites are missing; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("e2e")
        .join("kind.sh")
}

fn bash() -> PathBuf {
    ["/bin/bash", "/usr/bin/bash"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("bash is not installed")
}

#[test]
fn kind_e2e() {
    if std::env::var("FASTAGENTIC_E2E").as_deref() != Ok("kind") {
        // Straight to stderr: the test harness captures `println!` of passing tests, and the
        // skip must show in the CI log.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"\n*** SKIPPED kind_e2e: the kind e2e needs a Docker engine and kind; \
              set FASTAGENTIC_E2E=kind to run tests/e2e/kind.sh ***\n\n",
        );
        return;
    }
    let status = Command::new(bash())
        .arg(script())
        .status()
        .expect("could not start tests/e2e/kind.sh");
    match status.code() {
        Some(0) => {}
        Some(2) => panic!(
            "tests/e2e/kind.sh: a prerequisite (docker engine, kind, kubectl, helm, curl, cargo) is \
             missing; its output above names it"
        ),
        _ => panic!("tests/e2e/kind.sh failed ({status}); its output above says which check"),
    }
}

/// Runs on every machine: without its tools, the script stops before touching anything, names
/// each missing one and exits with status 2 (so the e2e test reports a missing prerequisite
/// rather than a failed check).
#[test]
fn kind_script_names_missing_tools_and_exits_2() {
    let empty =
        std::env::temp_dir().join(format!("fastagentic-kind-e2e-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("create an empty PATH directory");
    let out = Command::new(bash())
        .arg(script())
        .env_clear()
        .env("PATH", &empty)
        .output()
        .expect("could not start tests/e2e/kind.sh");
    let _ = std::fs::remove_dir(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status; stderr: {stderr}");
    assert!(
        stderr.contains("missing docker kind kubectl helm curl cargo"),
        "stderr should name every missing tool: {stderr}"
    );
}
