//! `scripts/node.sh` where no node can run: a machine without what containers need (here: a user
//! that is not root) gets a one-line reason and a non-zero exit, and `up` points at the kwok
//! path, before anything is touched. The node itself is exercised by the e2e test.

// A test fails loudly when its command cannot run; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .join("scripts/node.sh")
}

/// Runs `node.sh args` as a user that is not root: as ourselves when we are not root, else as
/// `nobody` through setpriv (util-linux).
fn as_non_root(args: &[&str]) -> Option<Output> {
    let id = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    let root = String::from_utf8_lossy(&id.stdout).trim() == "0";
    let mut cmd = if root {
        if Command::new("setpriv").arg("--version").output().is_err() {
            eprintln!("*** SKIPPED node_script: running as root and setpriv is missing ***");
            return None;
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"]);
        c
    } else {
        Command::new("bash")
    };
    Some(
        cmd.arg(script())
            .args(args)
            .env(
                "FASTAGENTIC_NODE_DIR",
                std::env::temp_dir().join("fastagentic-node-nonroot"),
            )
            .output()
            .expect("running scripts/node.sh"),
    )
}

#[test]
fn check_and_up_say_why_a_non_root_user_gets_no_node() {
    let Some(out) = as_non_root(&["check"]) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "check: {stdout}");
    assert!(
        stdout.contains("this machine cannot run a real node: not root"),
        "check names the reason: {stdout}"
    );

    let out = as_non_root(&["up"]).expect("as above");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "up: {stderr}");
    assert!(
        stderr.contains("needs root") && stderr.contains("kwok path"),
        "up names the reason and the alternative: {stderr}"
    );
    assert!(
        !std::env::temp_dir()
            .join("fastagentic-node-nonroot")
            .exists(),
        "up must touch nothing before it knows it can run"
    );
}

#[test]
fn unknown_subcommand_prints_usage_and_exits_2() {
    let out = Command::new("bash")
        .arg(script())
        .arg("bogus")
        .output()
        .expect("running scripts/node.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("scripts/node.sh up"),
        "usage on stderr: {stderr}"
    );
}
