//! The operator's `custom.metrics.k8s.io` API against a real kube-apiserver: the chart's
//! APIService becomes Available with the operator as its backend, `kubectl get --raw` answers
//! with the utilization of running runtime processes (through the aggregator, the front proxy
//! and our authorization), busy pods get a deletion cost, and callers that are not the front
//! proxy or not allowed are refused.
//!
//! The "pods" are real `fastagentic` processes on this machine, listening on its non-loopback
//! address; their Pod objects are never scheduled, and their status is written by the test.

// Tests fail loudly; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fastagentic_crd::CONCURRENCY_METRIC;
use fastagentic_tests::{
    ControlPlaneTest, RELEASE, ReservedPort, SYSTEM_NAMESPACE, apply_fastagentic, free_port,
    kubectl, kubectl_stdin, repo_root, run, wait_for, work_dir, workspace_binary,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const SERVICE: &str = "fastagentic-operator-metrics-api";
const APISERVICE: &str = "v1beta2.custom.metrics.k8s.io";

/// This machine's address the API server can reach and an EndpointSlice may hold (not
/// loopback): the node bridge's when a node runs, else the first global IPv4 address.
fn host_address() -> Option<IpAddr> {
    let out = run(Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"])).ok()?;
    let addrs: Vec<IpAddr> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect();
    let bridge: IpAddr = [10, 244, 0, 1].into();
    if addrs.contains(&bridge) {
        Some(bridge)
    } else {
        addrs.into_iter().next()
    }
}

/// A chart template (`templates/NAME.yaml`), as `helm template` renders it for the harness's
/// release with the metrics API on.
fn render_chart(template: &str) -> String {
    let helm = std::env::var("FASTAGENTIC_HELM").ok().unwrap_or_else(|| {
        run(Command::new(repo_root().join("scripts/control-plane.sh")).args(["path", "helm"]))
            .expect("scripts/control-plane.sh path helm")
            .trim()
            .to_string()
    });
    run(Command::new(helm).args([
        "template",
        RELEASE,
        repo_root()
            .join("charts/fastagentic-operator")
            .to_str()
            .unwrap(),
        "--namespace",
        SYSTEM_NAMESPACE,
        "--set",
        "replicaCount=0",
        "--show-only",
        &format!("templates/{template}.yaml"),
    ]))
    .expect("helm template")
}

/// Deletes what the test created from the chart's metrics-API template (an unavailable
/// APIService holds up namespace deletion, and objects without Helm's ownership would stop a
/// later `helm install`), even when the test fails.
struct Registered(String);

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = kubectl_stdin(
            &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            &self.0,
        );
        let _ = kubectl(&[
            "delete",
            "endpointslice",
            SERVICE,
            "-n",
            SYSTEM_NAMESPACE,
            "--ignore-not-found",
        ]);
    }
}

/// A runtime process, killed on drop (then its port is given back).
struct Runtime {
    child: Child,
    port: ReservedPort,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_runtime(port: ReservedPort, name: &str) -> Runtime {
    let addr = port.addr();
    let log = work_dir().join(format!("metrics-api-{name}.log"));
    let out = File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = Command::new(workspace_binary("fastagentic"))
        .args([
            "run",
            "--host",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
        ])
        .args(["--max-concurrent", "4", "--echo-delay-ms", "20000"])
        .env_clear()
        .env("FASTAGENTIC_INSTANCE_ID", name)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("starting fastagentic");
    Runtime { child, port }
}

/// A never-scheduled Pod for a runtime process at `addr`, counted as FastAgentic `fa`'s (the
/// instance label) but not selected by its Deployment (no name label), with a Ready status.
async fn fake_pod(pods: &Api<Pod>, name: &str, fa: &str, addr: SocketAddr) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/managed-by": "fastagentic-operator",
            "app.kubernetes.io/instance": fa,
        }},
        "spec": {
            "nodeSelector": {"fastagentic.io/test-no-such-node": "true"},
            "containers": [{"name": "agent", "image": "not-pulled:0",
                            "ports": [{"name": "http", "containerPort": addr.port()}]}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("creating the pod");
    let ip = addr.ip().to_string();
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("writing the pod's status");
}

fn raw(path: &str) -> Result<Value, String> {
    let out = kubectl(&["get", "--raw", path])?;
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

fn values(list: &Value) -> BTreeMap<String, String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["describedObject"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                i["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_metrics_api_serves_pod_utilization_through_the_aggregator() {
    let Some(t) = ControlPlaneTest::without_operator("metrics_api").await else {
        return;
    };
    let Some(host) = host_address() else {
        eprintln!(
            "\n*** SKIPPED metrics_api: this machine has no non-loopback IPv4 address for the \
             API server to reach the operator at (an EndpointSlice may not hold loopback) ***\n"
        );
        return;
    };
    let (client, ns) = (&t.client, t.ns());

    // The chart's objects with the metrics API on (the harness installs it off).
    let rendered = render_chart("metrics-api");
    let _registered = Registered(rendered.clone());
    let apply = [
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "metrics-api-test",
        "-f",
        "-",
    ];
    kubectl_stdin(&apply, &rendered).expect("applying the chart's metrics API objects");
    // The chart's rules with the metrics API on (pods: watch, and patch for deletion costs).
    kubectl_stdin(&apply, &render_chart("rbac")).expect("applying the chart's RBAC");
    let secret: Secret = rendered
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .find(|v| v["kind"] == "Secret")
        .map(|v| serde_json::from_value(v).expect("a Secret"))
        .expect("the chart renders the serving certificate");
    let data = secret.data.expect("Secret data");
    let dir = work_dir().join(format!("metrics-api-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for key in ["tls.crt", "tls.key"] {
        std::fs::write(dir.join(key), &data[key].0).unwrap();
    }

    let api_port = free_port(host);
    let bind = api_port.addr();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let service = format!("{SYSTEM_NAMESPACE}/{SERVICE}");
    let operator_args = |bind: SocketAddr, id: &str| -> Vec<String> {
        [
            "--metrics-api-bind-address",
            &bind.to_string(),
            "--metrics-api-cert-file",
            cert.to_str().unwrap(),
            "--metrics-api-key-file",
            key.to_str().unwrap(),
            "--metrics-api-service",
            &service,
            "--metrics-api-advertise-address",
            &host.to_string(),
            "--scrape-interval",
            "1s",
            "--scrape-window",
            "2",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .chain(t.leader_elect_args(id))
        .collect()
    };
    let args_a = operator_args(bind, "metrics-a");
    let mut operator = t.start_operator_with("operator", &args_a).await;

    wait_for("the APIService Available", Duration::from_secs(90), || async {
        let out = kubectl(&[
            "get", "apiservice", APISERVICE, "-o",
            "jsonpath={.status.conditions[?(@.type==\"Available\")].status}: {.status.conditions[?(@.type==\"Available\")].message}",
        ])
        .map_err(|e| e.to_string())?;
        if out.starts_with("True") { Ok(()) } else { Err(format!("{out}\n{}", operator.log_tail(10))) }
    })
    .await;
    let discovery =
        raw("/apis/custom.metrics.k8s.io/v1beta2").expect("discovery through the aggregator");
    // Aggregated discovery (what kubectl and the HPA controller use) holds the version fresh.
    wait_for(
        "custom.metrics.k8s.io/v1beta2 in aggregated discovery",
        Duration::from_secs(60),
        || async {
            let out = kubectl(&["api-versions"]).map_err(|e| e.to_string())?;
            if out.lines().any(|l| l == "custom.metrics.k8s.io/v1beta2") {
                Ok(())
            } else {
                Err("not listed (stale or missing)".to_string())
            }
        },
    )
    .await;
    assert_eq!(
        discovery["resources"][0]["name"],
        format!("pods/{CONCURRENCY_METRIC}")
    );

    // Two runtime processes as the pods of FastAgentic `m`; its own (simulated) pod does not
    // answer and is left out.
    apply_fastagentic(
        client,
        ns,
        &json!({
            "apiVersion": "fastagentic.io/v1alpha1", "kind": "FastAgentic",
            "metadata": {"name": "m"},
            "spec": {"image": "registry.example.com/agent:1", "maxConcurrent": 4,
                     "autoscaling": {"minReplicas": 1, "maxReplicas": 3,
                                     "targetConcurrencyUtilizationPercentage": 50}}
        }),
    )
    .await;
    let runtimes = [
        start_runtime(free_port(host), "m-real-a"),
        start_runtime(free_port(host), "m-real-b"),
    ];
    let (a, b) = (runtimes[0].port.addr(), runtimes[1].port.addr());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for addr in [a, b] {
        wait_for(
            "a runtime answering /health",
            Duration::from_secs(30),
            || async {
                match http.get(format!("http://{addr}/health")).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    fake_pod(&pods, "m-real-a", "m", a).await;
    fake_pod(&pods, "m-real-b", "m", b).await;

    // Pod a holds 2 of its 4 (20 s each); b is idle.
    let held: Vec<_> = (0..2)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move {
                http.post(format!("http://{a}/chat"))
                    .json(&json!({"message": format!("held {i}")}))
                    .send()
                    .await
            })
        })
        .collect();
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/pods/*/{CONCURRENCY_METRIC}?labelSelector=app.kubernetes.io%2Finstance%3Dm",
        ns
    );
    let list = wait_for("50% for a and 0 for b", Duration::from_secs(30), || async {
        let v = raw(&path)?;
        let got = values(&v);
        let want = BTreeMap::from([
            ("m-real-a".to_string(), "50000m".to_string()),
            ("m-real-b".to_string(), "0m".to_string()),
        ]);
        if got == want {
            Ok(v)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    eprintln!("$ kubectl get --raw '{path}'\n{list}");
    let item = &list["items"][0];
    assert_eq!(item["describedObject"]["kind"], "Pod");
    assert_eq!(item["metric"]["name"], CONCURRENCY_METRIC);
    let one = raw(&format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/pods/m-real-b/{CONCURRENCY_METRIC}",
        ns
    ))
    .expect("one pod by name");
    assert_eq!(values(&one).len(), 1);
    let missing = kubectl(&[
        "get",
        "--raw",
        &format!(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/pods/*/no_such_metric",
            ns
        ),
    ]);
    assert!(
        missing
            .as_ref()
            .is_err_and(|e| e.contains("NotFound") || e.contains("not found")),
        "{missing:?}"
    );

    // The busy pod gets a deletion cost; the idle one none.
    wait_for(
        "a deletion cost on the busy pod",
        Duration::from_secs(20),
        || async {
            let p = pods.get("m-real-a").await.map_err(|e| e.to_string())?;
            let cost = p
                .metadata
                .annotations
                .unwrap_or_default()
                .get("controller.kubernetes.io/pod-deletion-cost")
                .cloned();
            if cost.as_deref() == Some("2") {
                Ok(())
            } else {
                Err(format!("{cost:?}"))
            }
        },
    )
    .await;
    let idle = pods.get("m-real-b").await.unwrap();
    assert!(
        !idle
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("controller.kubernetes.io/pod-deletion-cost"),
        "an idle pod that never was busy is not written"
    );
    let writes = operator
        .metric("fastagentic_operator_deletion_cost_writes_total")
        .await;
    assert!(writes >= 1.0, "the writes are counted: {writes}");

    // Straight to the operator: no credentials, a forged front-proxy header without the proxy's
    // certificate, and a token without the right are refused.
    let direct = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("https://{bind}{path}");
    let anonymous = direct.get(&url).send().await.expect("an answer");
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["reason"].as_str()),
        (Some("Status"), Some("Unauthorized"))
    );
    let forged = direct
        .get(&url)
        .header("X-Remote-User", "system:admin")
        .header("X-Remote-Group", "system:masters")
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        forged.status().as_u16(),
        401,
        "headers count only from the front proxy"
    );
    kubectl(&["create", "serviceaccount", "nobody", "-n", ns]).expect("a ServiceAccount");
    let token = kubectl(&["create", "token", "nobody", "-n", ns]).expect("a token");
    let denied = direct
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("an answer");
    assert_eq!(denied.status().as_u16(), 403);
    let discovery = direct
        .get(format!("https://{bind}/apis/custom.metrics.k8s.io/v1beta2"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        discovery.status().as_u16(),
        200,
        "discovery is open to any authenticated caller"
    );
    let body: Value = denied.json().await.unwrap();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("nobody") && message.contains(CONCURRENCY_METRIC),
        "{body}"
    );
    // A token whose ServiceAccount may get the metric in this namespace is let through.
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "metric-reader", "namespace": ns},
        "rules": [{"apiGroups": ["custom.metrics.k8s.io"],
                   "resources": [format!("pods/{CONCURRENCY_METRIC}")], "verbs": ["get"]}]
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "metric-reader", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "metric-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]
    });
    kubectl(&["create", "serviceaccount", "reader", "-n", ns]).expect("a ServiceAccount");
    kubectl_stdin(&["apply", "-f", "-"], &format!("{role}\n---\n{binding}")).expect("RBAC");
    let reader = kubectl(&["create", "token", "reader", "-n", ns]).expect("a token");
    let allowed = direct
        .get(&url)
        .bearer_auth(reader.trim())
        .send()
        .await
        .expect("an answer");
    assert_eq!(allowed.status().as_u16(), 200);
    let body: Value = allowed.json().await.unwrap();
    assert_eq!(values(&body).len(), 2, "{body}");
    eprintln!(
        "direct calls: anonymous 401, forged front-proxy headers 401, token without the right 403, \
         token with it 200"
    );
    let text = operator.metrics_text().await;
    for code in ["200", "401", "403"] {
        assert!(
            text.contains(&format!(
                "fastagentic_operator_metrics_api_requests_total{{code=\"{code}\"}}"
            )),
            "answers counted by code: {text}"
        );
    }

    // A standby with the same flags on another port: the EndpointSlice names the leader only,
    // the standby refuses to answer from no data, and when the leader dies the standby takes the
    // Lease, points the Service at itself and serves the metric.
    let standby_port = free_port(host);
    let bind_b = standby_port.addr();
    let args_b = operator_args(bind_b, "metrics-b");
    let _standby = t.start_operator_with("standby", &args_b).await;
    let slice_port = || {
        kubectl(&[
            "get",
            "endpointslice",
            SERVICE,
            "-n",
            SYSTEM_NAMESPACE,
            "-o",
            "jsonpath={.ports[0].port}",
        ])
        .unwrap_or_default()
    };
    assert_eq!(
        slice_port(),
        bind.port().to_string(),
        "the Service names the leader"
    );
    let url_b = format!("https://{bind_b}{path}");
    let standby_answer = direct
        .get(&url_b)
        .bearer_auth(reader.trim())
        .send()
        .await
        .expect("an answer");
    assert_eq!(standby_answer.status().as_u16(), 503);
    let body: Value = standby_answer.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("standby"),
        "{body}"
    );
    operator.kill();
    let took = std::time::Instant::now();
    wait_for(
        "the standby to lead and serve through the Service",
        Duration::from_secs(60),
        || async {
            if slice_port() != bind_b.port().to_string() {
                return Err(format!("EndpointSlice port {}", slice_port()));
            }
            let got = values(&raw(&path)?);
            if got.len() == 2 {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "failover: the standby leads and answers through the aggregator {:.0}s after the leader was killed",
        took.elapsed().as_secs_f64()
    );

    for h in held {
        h.abort();
    }
}
