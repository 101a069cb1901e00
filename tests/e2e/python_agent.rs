//! The check that `examples/python-agent.yaml` runs as written: the example Python FastAgentic
//! agent (image `python-agent:1.2.2`, built by `scripts/images.sh`) as the `container` agent, a
//! native sidecar next to the runtime, answering `/chat` and `/chat/stream` through the Service.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::{E2e, pod_names, repo_root};

/// `metadata.name` in examples/python-agent.yaml.
const NAME: &str = "agent-python";

/// The pod's `agent-app` sidecar: a restartable init container, started and ready.
fn assert_agent_sidecar(pod: &Pod) {
    let spec = pod.spec.as_ref().expect("spec");
    let sidecar = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "agent-app")
        .unwrap_or_else(|| panic!("{}: no `agent-app` init container", pod.name_any()));
    assert_eq!(
        sidecar.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    assert!(
        sidecar
            .image
            .as_deref()
            .is_some_and(|i| i.contains("python-agent"))
    );
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "agent-app"))
        .unwrap_or_else(|| panic!("{}: no status of the agent container", pod.name_any()));
    assert!(status.ready && status.started == Some(true), "{status:?}");
    assert_eq!(status.restart_count, 0, "{status:?}");
}

impl E2e {
    pub(super) async fn python_agent_example(&self) {
        let example = repo_root().join("examples/python-agent.yaml");
        self.kubectl(&["apply", "-f", example.to_str().expect("utf-8 path")]);
        let out = self.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("fa/{NAME}"),
            "--timeout=300s",
        ]);
        eprintln!("    {}", out.trim());
        let pods = self.ready_pods(NAME, 1).await;
        for pod in &pods {
            assert_agent_sidecar(pod);
        }
        let names = pod_names(&pods);
        let base = self.service_url(NAME).await;
        self.wait_service(&base, NAME).await;

        let reply = self
            .chat(&base, &json!({"message": "through the Service"}))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.body["output"], "echo: through the Service",
            "{reply:?}"
        );
        assert!(
            reply.instance.as_ref().is_some_and(|i| names.contains(i)),
            "answered by a pod of the example: {reply:?} {names:?}"
        );

        let resp = self
            .http
            .post(format!("{base}/chat/stream"))
            .json(&json!({"message": "streamed by Python"}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /chat/stream: {e}"));
        assert_eq!(resp.status(), 200);
        let mut body = String::new();
        let mut chunks = resp.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk.expect("stream body")));
        }
        let deltas: String = body
            .split("\n\n")
            .filter(|block| !block.contains("event:"))
            .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data:")))
            .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
            .filter_map(|v| v["delta"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(deltas, "echo: streamed by Python ", "{body}");
        assert!(body.contains("event: done"), "{body}");
        eprintln!(
            "    /chat and /chat/stream answered by the Python agent in {:?}",
            reply.instance
        );
        self.kubectl(&[
            "delete",
            "-f",
            example.to_str().expect("utf-8 path"),
            "--wait=true",
            "--timeout=120s",
        ]);
    }
}
