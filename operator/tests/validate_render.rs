//! `render` output for every example passes `kubernetes-validate --strict` for Kubernetes 1.33
//! (through `scripts/validate-render.sh`). When the tool is not installed the test says so
//! loudly and does not pretend to have validated anything; `scripts/validate-render.sh` (without
//! arguments) installs it into ~/.cache/fastagentic/venv.

// Test helpers may panic with a message: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

#[test]
fn render_output_passes_kubernetes_validate_strict() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = repo.join("scripts/validate-render.sh");
    let check = Command::new(&script)
        .arg("--check")
        .status()
        .expect("run the script");
    if !check.success() {
        assert!(
            std::env::var_os("FASTAGENTIC_REQUIRE_KUBERNETES_VALIDATE").is_none(),
            "kubernetes-validate is not installed, and FASTAGENTIC_REQUIRE_KUBERNETES_VALIDATE is \
             set (scripts/test.sh installs it first with scripts/validate-render.sh --install)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "\n\
             ***********************************************************************\n\
             SKIPPED: kubernetes-validate is not installed, so render output was NOT\n\
             validated against the Kubernetes 1.33 schemas. Install it with\n\
             scripts/validate-render.sh (creates ~/.cache/fastagentic/venv).\n\
             ***********************************************************************\n"
        );
        return;
    }
    let out = Command::new(&script)
        .env(
            "FASTAGENTIC_OPERATOR_BIN",
            env!("CARGO_BIN_EXE_fastagentic-operator"),
        )
        .output()
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{stdout}\n{stderr}"
    );
    let log = format!("{stdout}{stderr}");
    for example in [
        "dev",
        "staging",
        "production-small",
        "production-large",
        "kubernetes-seed",
    ] {
        for kind in ["deployment", "service"] {
            assert!(
                log.lines()
                    .any(|l| l.contains(&format!("{example}.yaml passed for resource {kind}/"))),
                "{example}: no {kind} validated\n{log}"
            );
        }
    }
    assert!(log.contains("passed for resource horizontalpodautoscaler/fastagentic-agent"));
    assert!(log.contains("passed for resource poddisruptionbudget/agent-production-large"));
    assert!(!log.contains("failed"), "{log}");
}
