//! The check that `examples/python-agent.yaml` runs as written: the example Python FastAgentic
//! agent (image `python-agent:1.2.2`, built by `scripts/images.sh`) as the `container` agent, a
//! native sidecar next to the runtime, answering `/chat` and `/chat/stream` through the Service.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::{E2e, pod_names, pod_ready, repo_root, wait_for};

/// `metadata.name` in examples/python-agent.yaml.
const NAME: &str = "agent-python";
/// `spec.replicas` in examples/python-agent.yaml.
const REPLICAS: usize = 2;

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

/// Restarts of container `name` of `pod` (regular or init).
fn restarts(pod: &Pod, name: &str) -> i32 {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .chain(status.and_then(|s| s.init_container_statuses.as_ref()))
        .flatten()
        .find(|c| c.name == name)
        .map_or(-1, |c| c.restart_count)
}

impl E2e {
    async fn pod(&self, name: &str) -> Result<Pod, String> {
        self.pods_api().get(name).await.map_err(|e| e.to_string())
    }

    /// Kills the agent's process in `pod`: the pod turns unready (the agent's readiness and the
    /// runtime's `/ready`), the kubelet restarts the agent's container and the pod is Ready
    /// again, the runtime's container untouched.
    async fn agent_crash(&self, pod: &Pod) {
        let name = pod.name_any();
        let agent = self
            .runtime_procs(pod)
            .into_iter()
            .find(|p| p.cmdline.contains("app:app"))
            .unwrap_or_else(|| panic!("no Python agent process in {name}"));
        self.kill_in_pod(pod, "KILL", agent.pid);
        let started = std::time::Instant::now();
        wait_for(
            &format!("{name} unready after its agent was killed"),
            Duration::from_secs(60),
            || async {
                let p = self.pod(&name).await?;
                if pod_ready(&p) {
                    Err("still Ready".to_owned())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        let unready_after = started.elapsed();
        let p = wait_for(
            &format!("{name} Ready again, its agent restarted"),
            Duration::from_secs(120),
            || async {
                let p = self.pod(&name).await?;
                if pod_ready(&p) && restarts(&p, "agent-app") == 1 {
                    Ok(p)
                } else {
                    Err(format!(
                        "ready {}, agent-app restarts {}",
                        pod_ready(&p),
                        restarts(&p, "agent-app")
                    ))
                }
            },
        )
        .await;
        assert_eq!(
            restarts(&p, "agent"),
            0,
            "the runtime's container was not restarted"
        );
        eprintln!(
            "    agent killed in {name}: unready after {:.1}s, Ready again after {:.1}s, the runtime not restarted",
            unready_after.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }

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
        let pods = self.ready_pods(NAME, REPLICAS).await;
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
        self.agent_crash(&pods[0]).await;
        let reply = self
            .chat(&base, &json!({"message": "after the crash"}))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (reply.status, &reply.body["output"]),
            (200, &json!("echo: after the crash")),
            "{reply:?}"
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
