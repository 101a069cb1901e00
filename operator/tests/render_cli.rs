//! The `render` subcommand as a user runs it: output for good input, exit status 2 and a
//! message naming the field for bad input.

// Test helpers may panic with a message: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn render_stdin(input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastagentic-operator"))
        .args(["render", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("the binary finishes")
}

fn assert_rejected(input: &str, needles: &[&str]) {
    let out = render_stdin(input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing printed on failure");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in {stderr:?}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const HEAD: &str = "apiVersion: fastagentic.io/v1alpha1\nkind: FastAgentic\nmetadata:\n  name: a\n";

#[test]
fn renders_a_file_and_several_documents() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/kubernetes-seed.yaml"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fastagentic-operator"))
        .args(["render", "-f", path])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("\nkind: ").count() + usize::from(text.starts_with("kind: ")),
        3
    );
    assert!(text.contains("kind: HorizontalPodAutoscaler"));

    let two = format!(
        "{HEAD}spec: {{image: x}}\n---\n{}spec: {{image: img-b, replicas: 3, disruptionBudget: {{}}}}\n",
        HEAD.replace("name: a", "name: b")
    );
    let out = render_stdin(&two);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("kind: Deployment").count(), 2);
    assert_eq!(text.matches("kind: PodDisruptionBudget").count(), 1);
}

#[test]
fn bad_input_exits_2_naming_the_field() {
    assert_rejected("{ not: [yaml", &["not valid YAML"]);
    assert_rejected(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        &["kind", "FastAgentic"],
    );
    assert_rejected(
        &format!("{HEAD}spec: {{image: x, workers: 0}}\n"),
        &["spec.workers"],
    );
    assert_rejected(
        &format!("{HEAD}spec: {{image: x, server: nginx}}\n"),
        &["spec.server"],
    );
    assert_rejected(
        &format!("{HEAD}spec: {{image: x, colour: blue}}\n"),
        &["spec.colour"],
    );
    // CEL rules of the CRD.
    assert_rejected(
        &format!("{HEAD}spec: {{image: x, replicas: 2, autoscaling: {{maxReplicas: 3}}}}\n"),
        &["spec.replicas or spec.autoscaling"],
    );
    assert_rejected(
        &format!("{HEAD}spec: {{image: x, autoscaling: {{minReplicas: 5, maxReplicas: 3}}}}\n"),
        &["spec.autoscaling.minReplicas"],
    );
    assert_rejected(
        &format!("{HEAD}spec: {{image: x, server: gunicorn, reload: true}}\n"),
        &["spec.reload"],
    );
    // Beyond the schema: the operator's own checks.
    assert_rejected(
        &format!(
            "{HEAD}spec: {{image: x, env: [{{name: A, value: '1'}}, {{name: A, value: '2'}}]}}\n"
        ),
        &["spec.env[1].name"],
    );
    assert_rejected("", &["no FastAgentic document"]);
}
