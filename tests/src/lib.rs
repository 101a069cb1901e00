//! Harness for the control-plane and contract tests (`DESIGN.md`, "Tests, in layers", 3 and 4).
//!
//! The tests run only against the loopback control plane of `scripts/control-plane.sh`, and only
//! when asked: `KUBECONFIG` must point at it **and** `FASTAGENTIC_CONTROL_PLANE=1` must be set
//! (`scripts/test.sh` does both). Otherwise every test prints `SKIPPED: ...` and returns; with
//! `FASTAGENTIC_REQUIRE_CONTROL_PLANE=1` (set by `scripts/test.sh`, so CI cannot skip them
//! silently) a missing control plane is a failure instead. A kubeconfig whose server is not a
//! loopback address is never used.
//!
//! A test opens everything it needs in one call, [`ControlPlaneTest::start`]: once per test
//! process the shared setup applies the CRD, installs the Helm chart with a real `helm`
//! (operator replicas 0: there are no real nodes, and the in-cluster operator must not compete
//! with ours), mints a token of the chart's ServiceAccount and writes a kubeconfig with it; then
//! each test gets its turn, an admin client, its own labelled [`TestNamespace`] and an
//! [`Operator`] — the `fastagentic-operator` binary as a child process with that kubeconfig, so
//! the chart's RBAC is what the tests exercise. All of it is torn down when the test ends.
//!
//! What the operator should have built comes from `fastagentic-operator render` ([`Rendered`],
//! compared with [`matches_rendered`]), not from defaults repeated here. Ports for child
//! processes come from [`free_port`], which holds them until the child has bound them.

// Test support: a failed setup step must fail the test at once, with its reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use serde_json::Value;

/// Set to `1` to run the control-plane tests (with `KUBECONFIG` at the loopback control plane).
pub const ENV_CONTROL_PLANE: &str = "FASTAGENTIC_CONTROL_PLANE";
/// Set to `1` to make a missing control plane a failure instead of a skip.
pub const ENV_REQUIRE: &str = "FASTAGENTIC_REQUIRE_CONTROL_PLANE";
/// The `helm` binary (exported by `scripts/test.sh`; else `scripts/control-plane.sh path helm`).
pub const ENV_HELM: &str = "FASTAGENTIC_HELM";

/// Namespace of the Helm release (and of the leader-election Leases).
pub const SYSTEM_NAMESPACE: &str = "fastagentic-system";
/// Helm release name; the chart names its ServiceAccount and ClusterRole after it.
pub const RELEASE: &str = "fastagentic-operator";
/// The chart's ServiceAccount, ClusterRole and ClusterRoleBinding name.
pub const CHART_FULLNAME: &str = "fastagentic-operator";
/// Label put on every namespace a test creates.
pub const TEST_LABEL: &str = "fastagentic.io/test";
/// Field manager of the objects the tests write.
pub const TEST_MANAGER: &str = "fastagentic-tests";
/// The operator's field manager (children and status).
pub const OPERATOR_MANAGER: &str = "fastagentic-operator";
/// Pod-template annotation with the hash of everything that rolls the pods.
pub const CONFIG_HASH: &str = "fastagentic.io/config-hash";
/// The agent container's name.
pub const CONTAINER: &str = "agent";

/// How often [`wait_for`] polls.
const POLL: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// Gate
// ---------------------------------------------------------------------------------------------

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == value)
}

/// Why the control plane cannot be used, or `None` when it can.
fn missing_control_plane() -> Option<String> {
    if !env_is(ENV_CONTROL_PLANE, "1") {
        return Some(format!("{ENV_CONTROL_PLANE}=1 is not set"));
    }
    let Ok(kubeconfig) = std::env::var("KUBECONFIG") else {
        return Some("KUBECONFIG is not set".into());
    };
    if !Path::new(&kubeconfig).is_file() {
        return Some(format!("KUBECONFIG={kubeconfig} does not exist"));
    }
    let server = match run(Command::new("kubectl").args([
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])) {
        Ok(s) => s.trim().to_string(),
        Err(e) => return Some(format!("reading KUBECONFIG={kubeconfig}: {e}")),
    };
    let loopback = ["https://127.0.0.1:", "https://localhost:", "https://[::1]:"];
    if !loopback.iter().any(|p| server.starts_with(p)) {
        return Some(format!(
            "KUBECONFIG={kubeconfig} points at {server}, not at a loopback control plane; \
             these tests only touch the cluster of scripts/control-plane.sh"
        ));
    }
    None
}

/// The shared cluster setup if the control plane is there, `None` (after printing `SKIPPED`)
/// if it is not. Panics when it is not there but [`ENV_REQUIRE`] is `1`, or when the setup fails.
fn cluster(test: &str) -> Option<&'static Cluster> {
    if let Some(why) = missing_control_plane() {
        let msg = format!(
            "control-plane tests need a loopback kube-apiserver: KUBECONFIG from \
             `scripts/control-plane.sh env` and {ENV_CONTROL_PLANE}=1 (run ./scripts/test.sh); {why}"
        );
        if env_is(ENV_REQUIRE, "1") {
            panic!("{test}: {msg} ({ENV_REQUIRE}=1, so this is a failure)");
        }
        // Straight to stderr: the test harness captures `eprintln!` of passing tests, and a
        // skipped layer must say so in the CI log.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("\n*** SKIPPED {test}: {msg} ***\n\n").as_bytes(),
        );
        return None;
    }
    static SETUP: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match SETUP.get_or_init(Cluster::set_up) {
        Ok(c) => Some(c),
        Err(e) => panic!("{test}: setting up the control plane failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and commands
// ---------------------------------------------------------------------------------------------

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<test>-<hash>`).
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps/ has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// A binary built in the same target directory as the test, or a panic saying how to build it.
pub fn workspace_binary(name: &str) -> PathBuf {
    let path = target_profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` with the same target directory \
         and profile as the tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Where the tests keep their logs and kubeconfigs (`target/tmp/fastagentic-tests`).
pub fn work_dir() -> PathBuf {
    let dir = target_profile_dir()
        .parent()
        .map_or_else(std::env::temp_dir, |t| t.join("tmp"))
        .join("fastagentic-tests");
    std::fs::create_dir_all(&dir).expect("creating the tests' work directory");
    dir
}

/// Runs a command and returns its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    output_result(cmd, out)
}

fn output_result(cmd: &Command, out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// `kubectl ARGS` with the admin kubeconfig (`KUBECONFIG`): stdout, or stderr as the error.
pub fn kubectl(args: &[&str]) -> Result<String, String> {
    run(Command::new("kubectl").args(args))
}

/// `kubectl ARGS` with `input` on stdin.
pub fn kubectl_stdin(args: &[&str], input: &str) -> Result<String, String> {
    run_stdin(Command::new("kubectl").args(args), input)
}

/// Runs a command with `input` on stdin and returns its stdout, or an error with its stderr.
pub fn run_stdin(cmd: &mut Command, input: &str) -> Result<String, String> {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .map_err(|e| format!("writing to {cmd:?}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    output_result(cmd, out)
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// A TCP port held for a child process to listen on: a socket bound to the address with
/// `SO_REUSEADDR` that never listens, kept until the child is gone.
///
/// Binding port 0 and closing the socket again races: between the close and the child's bind,
/// any other process asking for port 0 (another test binary, a parallel test) may get the same
/// port. While this socket stays bound, Linux gives the port to no other `bind` to port 0 on an
/// overlapping address, nor to an outgoing connection; yet the child's own bind of the address
/// succeeds, because a bound socket that does not listen does not conflict with a new socket
/// that also sets `SO_REUSEADDR` — and every listener the tests start does: the operator's
/// (tokio), the runtime's (`agent-runtime/src/server/serve.rs`) and std's. A child that does not
/// set it fails at once with `EADDRINUSE` instead of racing.
///
/// Handing the child an already listening socket would need it to accept a file descriptor,
/// which neither binary does; the reservation gives the same guarantee for what they do.
#[derive(Debug)]
pub struct ReservedPort {
    addr: SocketAddr,
    _socket: OwnedFd,
}

impl ReservedPort {
    /// The address the child is to listen on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// A port for a child process to listen on at `ip` (`0.0.0.0` when it binds every address),
/// reserved until the returned value is dropped (see [`ReservedPort`]). Keep it at least as long
/// as the child runs.
pub fn free_port(ip: IpAddr) -> ReservedPort {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, bind,
        getsockname, setsockopt, socket, sockopt,
    };
    let family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let socket = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .expect("creating a TCP socket");
    setsockopt(&socket, sockopt::ReuseAddr, &true).expect("setting SO_REUSEADDR");
    let fd = socket.as_raw_fd();
    match SocketAddr::new(ip, 0) {
        SocketAddr::V4(a) => bind(fd, &SockaddrIn::from(a)),
        SocketAddr::V6(a) => bind(fd, &SockaddrIn6::from(a)),
    }
    .unwrap_or_else(|e| panic!("binding {ip}:0: {e}"));
    let local: SockaddrStorage = getsockname(fd).expect("getsockname");
    let port = local
        .as_sockaddr_in()
        .map(SockaddrIn::port)
        .or_else(|| local.as_sockaddr_in6().map(SockaddrIn6::port))
        .expect("an IP socket address");
    ReservedPort {
        addr: SocketAddr::new(ip, port),
        _socket: socket,
    }
}

/// A short suffix that differs between runs and tests (time and pid, base 36).
pub fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x =
        (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9);
    let mut s = String::new();
    for _ in 0..6 {
        let d = (x % 36) as u32;
        s.push(char::from_digit(d, 36).expect("digit below 36"));
        x /= 36;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Cluster setup
// ---------------------------------------------------------------------------------------------

/// What [`cluster`] set up once per test process.
#[derive(Debug)]
pub struct Cluster {
    /// Kubeconfig holding a token of the chart's ServiceAccount (what the operator runs with).
    pub operator_kubeconfig: PathBuf,
    /// Whether a kwok node is Ready, so pods become Running and Ready.
    pub kwok_node: bool,
}

fn helm_binary() -> Result<String, String> {
    if let Ok(h) = std::env::var(ENV_HELM)
        && Path::new(&h).is_file()
    {
        return Ok(h);
    }
    let path =
        run(Command::new(repo_root().join("scripts/control-plane.sh")).args(["path", "helm"]))?;
    let path = path.trim().to_string();
    if Path::new(&path).is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no helm binary: {ENV_HELM} is not set and {path} does not exist (scripts/control-plane.sh build)"
        ))
    }
}

/// `kubectl wait --for=condition=Established` on the CRD. Right after a CRD is created it has no
/// `status.conditions` yet, and kubectl's wait then fails at once ("accessor error: <nil> is of
/// the type <nil>") instead of waiting: that answer is retried for up to 60 s.
fn wait_established() -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/fastagentics.fastagentic.io",
            "--timeout=60s",
        ]) {
            Ok(_) => return Ok(()),
            Err(e) if e.contains("accessor error") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Cluster {
    fn set_up() -> Result<Self, String> {
        let root = repo_root();
        eprintln!("[harness] applying the CRD (server-side)");
        let crd = root.join("crds/fastagentic.io_fastagentics.yaml");
        kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            TEST_MANAGER,
            "-f",
            crd.to_str().expect("utf-8 path"),
        ])?;
        wait_established()?;

        let helm = helm_binary()?;
        eprintln!(
            "[harness] helm upgrade --install {RELEASE} (replicaCount=0, metricsApi.enabled=false) with {helm}"
        );
        run(Command::new(&helm).args([
            "upgrade",
            "--install",
            RELEASE,
            root.join("charts/fastagentic-operator")
                .to_str()
                .expect("utf-8 path"),
            "--namespace",
            SYSTEM_NAMESPACE,
            "--create-namespace",
            "--set",
            "replicaCount=0",
            // No APIService pointing at an operator that does not run here: an unavailable
            // aggregated API holds up namespace deletion. The metrics API's own test registers
            // it for its duration.
            "--set",
            "metricsApi.enabled=false",
        ]))?;

        eprintln!(
            "[harness] minting a token of ServiceAccount {SYSTEM_NAMESPACE}/{CHART_FULLNAME}"
        );
        let token = kubectl(&[
            "create",
            "token",
            CHART_FULLNAME,
            "-n",
            SYSTEM_NAMESPACE,
            "--duration",
            "2h",
        ])?;
        let operator_kubeconfig =
            work_dir().join(format!("operator-{}.kubeconfig", std::process::id()));
        write_token_kubeconfig(&operator_kubeconfig, token.trim())?;

        let kwok_node = kubectl(&[
            "get",
            "nodes",
            "-l",
            "type=kwok",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .is_ok_and(|s| s.split_whitespace().any(|x| x == "True"));
        eprintln!("[harness] kwok node Ready: {kwok_node}");
        Ok(Self {
            operator_kubeconfig,
            kwok_node,
        })
    }
}

/// A kubeconfig for `token`, with the server and CA of the admin kubeconfig.
fn write_token_kubeconfig(path: &Path, token: &str) -> Result<(), String> {
    let view: Value = serde_json::from_str(&kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "json",
    ])?)
    .map_err(|e| format!("kubectl config view: {e}"))?;
    let cluster = &view["clusters"][0]["cluster"];
    let server = cluster["server"]
        .as_str()
        .ok_or("kubeconfig has no server")?;
    let ca = cluster["certificate-authority-data"]
        .as_str()
        .ok_or("kubeconfig has no certificate-authority-data after --flatten")?;
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "control-plane", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "control-plane", "user": "operator", "namespace": SYSTEM_NAMESPACE}}],
        "current-context": "operator",
    });
    // JSON is YAML; the file holds a token, so only the owner may read it.
    std::fs::write(path, config.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// A client with the admin kubeconfig (`KUBECONFIG`). Make one per test: a client is bound to
/// the tokio runtime it was made in, and each `#[tokio::test]` has its own.
async fn admin_client() -> Client {
    Client::try_default()
        .await
        .expect("a client from KUBECONFIG")
}

/// Serializes the tests of one process: they share the chart's RBAC (one test edits it) and
/// two CPU cores. Hold the guard for the whole test.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

/// A fresh namespace labelled [`TEST_LABEL`], deleted (without waiting) on drop. Its pods go to
/// the simulated kwok node only (the API server's PodNodeSelector and PodTolerationRestriction
/// admission plugins apply the namespace's annotations to every pod), so a real node in the same
/// cluster (`scripts/control-plane.sh up --node`) never tries to run their made-up images.
#[derive(Debug)]
pub struct TestNamespace {
    /// Its name: `fa-<test>-<suffix>`.
    pub name: String,
}

impl TestNamespace {
    /// Creates `fa-<test>-<suffix>`.
    async fn create(client: &Client, test: &str) -> Self {
        let name = format!("fa-{test}-{}", unique_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(TEST_LABEL.to_string(), test.to_string())])),
                annotations: Some(kwok_only_annotations()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        eprintln!("[harness] namespace {name}");
        Self { name }
    }
}

/// Namespace annotations that pin every pod to the simulated node and let it tolerate that
/// node's taint (`scripts/control-plane.sh`: `fastagentic.io/simulated=true:NoSchedule`).
pub fn kwok_only_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "scheduler.alpha.kubernetes.io/node-selector".to_string(),
            "type=kwok".to_string(),
        ),
        (
            "scheduler.alpha.kubernetes.io/defaultTolerations".to_string(),
            r#"[{"key":"fastagentic.io/simulated","operator":"Exists","effect":"NoSchedule"}]"#
                .to_string(),
        ),
    ])
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if let Err(e) = kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]) {
            eprintln!(
                "[harness] WARNING: could not delete namespace {}: {e}",
                self.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The operator as a child process
// ---------------------------------------------------------------------------------------------

/// Deletes a leader-election Lease in the chart's namespace when dropped.
#[derive(Debug)]
struct LeaseCleanup(String);

impl Drop for LeaseCleanup {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "lease",
            "-n",
            SYSTEM_NAMESPACE,
            &self.0,
            "--ignore-not-found",
        ]);
    }
}

/// A running `fastagentic-operator run`, killed on drop. Its stdout and stderr go to [`log`].
///
/// [`log`]: Operator::log
#[derive(Debug)]
pub struct Operator {
    child: Child,
    /// The captured stdout and stderr.
    pub log: PathBuf,
    /// `--metrics-bind-address`.
    pub metrics: SocketAddr,
    /// `--health-bind-address`.
    pub health: SocketAddr,
    /// A label for messages (`operator`, `operator-a`, ...).
    pub label: String,
    /// The ports of `metrics` and `health`, held until the process is gone.
    _ports: [ReservedPort; 2],
}

impl Operator {
    /// Starts the operator for `namespace` with the chart ServiceAccount's kubeconfig, plus
    /// `extra` flags, and waits until its `/readyz` answers 200 (it has reached the API server).
    async fn start<S: AsRef<OsStr>>(
        cluster: &Cluster,
        namespace: &str,
        label: &str,
        extra: &[S],
    ) -> Self {
        let bin = workspace_binary("fastagentic-operator");
        let ports = [
            free_port(Ipv4Addr::LOCALHOST.into()),
            free_port(Ipv4Addr::LOCALHOST.into()),
        ];
        let (metrics, health) = (ports[0].addr(), ports[1].addr());
        let log = work_dir().join(format!("{namespace}-{label}-{}.log", unique_suffix()));
        let out = File::create(&log).expect("creating the operator log");
        let err = out.try_clone().expect("cloning the log file handle");
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .args(["--namespace", namespace])
            .args(["--metrics-bind-address", &metrics.to_string()])
            .args(["--health-bind-address", &health.to_string()])
            .args(["--log-format", "json", "--log-level", "info"])
            .args(extra)
            .env("KUBECONFIG", &cluster.operator_kubeconfig)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, _) in std::env::vars() {
            if k.starts_with("FASTAGENTIC_OPERATOR_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        eprintln!(
            "[harness] {label}: pid {} for namespace {namespace}, log {}",
            child.id(),
            log.display()
        );
        let mut op = Self {
            child,
            log,
            metrics,
            health,
            label: label.into(),
            _ports: ports,
        };
        let url = format!("http://{health}/readyz");
        let start = Instant::now();
        loop {
            if let Some(status) = op.exit_status() {
                panic!("{label} exited ({status}) at start:\n{}", op.log_tail(40));
            }
            if http_get(&url).await.is_ok_and(|(code, _)| code == 200) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{label}: /readyz did not answer 200 within 60 s:\n{}",
                op.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        op
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Everything the process has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "--- {} ({}) ---\n{}",
            self.label,
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// Log lines (JSON objects) whose `message` field equals `message`.
    pub fn log_events(&self, message: &str) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"].as_str() == Some(message))
            .collect()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let (code, body) = http_get(&format!("http://{}/metrics", self.metrics))
            .await
            .unwrap_or_else(|e| panic!("{}: GET /metrics: {e}", self.label));
        assert_eq!(
            code, 200,
            "{}: /metrics answered {code}: {body}",
            self.label
        );
        body
    }

    /// The value of an unlabelled counter or gauge in `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name).then(|| v.parse::<f64>().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// SIGKILL, as a crash would (no graceful release of anything), and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// One test
// ---------------------------------------------------------------------------------------------

/// Everything one control-plane test works with, opened in one call:
///
/// ```no_run
/// # use fastagentic_tests::{ControlPlaneTest, apply_fastagentic};
/// # async fn a_test(object: serde_json::Value) {
/// let Some(t) = ControlPlaneTest::start("a_test").await else {
///     return; // the layer is skipped; the reason is printed
/// };
/// apply_fastagentic(&t.client, t.ns(), &object).await;
/// # }
/// ```
///
/// It holds the test's turn (tests of one process run one at a time: they share the chart's
/// RBAC, which one of them edits, and two cores), an admin client, a fresh labelled namespace
/// and, from [`start`](Self::start), an operator watching that namespace. Dropped, it stops the
/// operator, deletes the test's leader-election Lease (if one was asked for) and the namespace,
/// then lets the next test run — also when the test panics.
pub struct ControlPlaneTest {
    // Fields drop in this order: the operator before its Lease and namespace, the turn last.
    operator: Option<Operator>,
    lease: OnceLock<LeaseCleanup>,
    /// The test's namespace, deleted on drop.
    pub ns: TestNamespace,
    /// A client with the admin kubeconfig (`KUBECONFIG`).
    pub client: Client,
    /// The once-per-process setup (CRD, chart, the operator's kubeconfig).
    pub cluster: &'static Cluster,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl ControlPlaneTest {
    /// The control plane with an operator (label `operator`, no extra flags) for a fresh
    /// namespace named after `test`; `None`, after printing `SKIPPED` and why, when the
    /// control-plane layer is not enabled (a failure instead with [`ENV_REQUIRE`]`=1`).
    pub async fn start(test: &str) -> Option<Self> {
        let mut t = Self::without_operator(test).await?;
        t.operator = Some(t.start_operator("operator").await);
        Some(t)
    }

    /// As [`start`](Self::start), without the operator: for tests that prepare something first
    /// or run operators with flags of their own ([`start_operator`](Self::start_operator)).
    pub async fn without_operator(test: &str) -> Option<Self> {
        let cluster = cluster(test)?;
        let turn = serial().await;
        let client = admin_client().await;
        let ns = TestNamespace::create(&client, &namespace_stem(test)).await;
        Some(Self {
            operator: None,
            lease: OnceLock::new(),
            ns,
            client,
            cluster,
            _turn: turn,
        })
    }

    /// The namespace's name.
    pub fn ns(&self) -> &str {
        &self.ns.name
    }

    /// The operator [`start`](Self::start) launched.
    pub fn operator(&self) -> &Operator {
        self.operator
            .as_ref()
            .expect("ControlPlaneTest::start runs an operator; without_operator does not")
    }

    /// The operator [`start`](Self::start) launched, to kill it.
    pub fn operator_mut(&mut self) -> &mut Operator {
        self.operator
            .as_mut()
            .expect("ControlPlaneTest::start runs an operator; without_operator does not")
    }

    /// Kills the test's operator (SIGKILL) and starts a new one labelled `label`.
    pub async fn restart_operator(&mut self, label: &str) {
        if let Some(mut old) = self.operator.take() {
            old.kill();
        }
        self.operator = Some(self.start_operator(label).await);
    }

    /// Another operator for the namespace, owned by the caller: killed when dropped, which
    /// comes before the test's own teardown when it is declared after the test.
    pub async fn start_operator(&self, label: &str) -> Operator {
        self.start_operator_with(label, &[] as &[&str]).await
    }

    /// As [`start_operator`](Self::start_operator), with `extra` flags.
    pub async fn start_operator_with<S: AsRef<OsStr>>(&self, label: &str, extra: &[S]) -> Operator {
        Operator::start(self.cluster, self.ns(), label, extra).await
    }

    /// The test's own leader-election Lease in [`SYSTEM_NAMESPACE`], deleted on drop.
    pub fn lease(&self) -> &str {
        &self
            .lease
            .get_or_init(|| LeaseCleanup(format!("{}-lease", self.ns())))
            .0
    }

    /// The flags for an operator competing for the test's [`lease`](Self::lease) as `id`.
    pub fn leader_elect_args(&self, id: &str) -> Vec<String> {
        [
            "--leader-elect",
            "true",
            "--lease-name",
            self.lease(),
            "--lease-namespace",
            SYSTEM_NAMESPACE,
            "--leader-elect-identity",
            id,
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect()
    }
}

/// A namespace stem from a test's name: `examples_become_...` → `examples-become-...`, short
/// enough that `fa-<stem>-<suffix>` stays a valid 63-character name and label value.
fn namespace_stem(test: &str) -> String {
    let kebab: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    kebab.trim_matches('-').to_string()
}

/// `GET url` → (status, body).
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok((code, body))
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 500 ms until it returns `Ok`, for at most `timeout`; then panics with
/// `what` and the last `Err` (what was seen instead).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match poll_until(timeout, check).await {
        Ok(v) => v,
        Err(last) => panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}"),
    }
}

/// [`wait_for`], and when it times out, `explain` adds what else explains the failure (read
/// once, then, rather than on every poll).
pub async fn wait_for_explained<T, F, Fut, E, EFut>(
    what: &str,
    timeout: Duration,
    check: F,
    explain: E,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
    E: FnOnce() -> EFut,
    EFut: Future<Output = String>,
{
    match poll_until(timeout, check).await {
        Ok(v) => v,
        Err(last) => {
            let why = explain().await;
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}; {why}")
        }
    }
}

/// `check` every 500 ms until it returns `Ok`, for at most `timeout`; else its last `Err`.
async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() >= timeout => return Err(last),
            Err(_) => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// FastAgentic objects
// ---------------------------------------------------------------------------------------------

/// The FastAgentic API resource, for dynamic access (the tests read fields as JSON).
pub fn fastagentic_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("fastagentic.io", "v1alpha1", "FastAgentic"),
        "fastagentics",
    )
}

/// `Api` of FastAgentics in `ns`.
pub fn fastagentics(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &fastagentic_resource())
}

/// Server-side applies `object` (a FastAgentic as JSON) into `ns` as [`TEST_MANAGER`].
pub async fn apply_fastagentic(client: &Client, ns: &str, object: &Value) -> DynamicObject {
    let name = object["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_string();
    fastagentics(client, ns)
        .patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying FastAgentic {ns}/{name}: {e}"))
}

/// JSON merge patch of FastAgentic `name`'s `spec`.
pub async fn merge_patch_spec(client: &Client, ns: &str, name: &str, spec: Value) -> DynamicObject {
    fastagentics(client, ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "spec": spec })),
        )
        .await
        .unwrap_or_else(|e| panic!("patching FastAgentic {ns}/{name}: {e}"))
}

/// The FastAgentic as JSON.
pub async fn get_fastagentic(client: &Client, ns: &str, name: &str) -> Value {
    let fa = fastagentics(client, ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get FastAgentic {ns}/{name}: {e}"));
    serde_json::to_value(fa).expect("a DynamicObject serializes")
}

/// Waits until the FastAgentic's `status.observedGeneration` equals its current
/// `metadata.generation`; returns the object.
pub async fn wait_observed(client: &Client, ns: &str, name: &str, timeout: Duration) -> Value {
    wait_for(
        &format!("FastAgentic {ns}/{name} status.observedGeneration = metadata.generation"),
        timeout,
        || async {
            let fa = get_fastagentic(client, ns, name).await;
            let generation = fa["metadata"]["generation"].as_i64();
            let observed = fa["status"]["observedGeneration"].as_i64();
            if generation.is_some() && generation == observed {
                Ok(fa)
            } else {
                Err(format!(
                    "generation {generation:?}, observedGeneration {observed:?}, status {}",
                    fa["status"]
                ))
            }
        },
    )
    .await
}

/// The condition of type `type_` in a FastAgentic's status.
pub fn condition<'a>(fa: &'a Value, type_: &str) -> Option<&'a Value> {
    fa["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(type_))
}

/// Waits for the Deployment `name` to exist and satisfy `check`; returns it.
pub async fn wait_deployment<F>(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    check: F,
) -> Deployment
where
    F: Fn(&Deployment) -> Result<(), String>,
{
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Deployment {ns}/{name}: {what}"),
        timeout,
        || async {
            match api.get_opt(name).await {
                Ok(Some(d)) => check(&d).map(|()| d),
                Ok(None) => Err("no Deployment yet".into()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
}

/// The agent container of a Deployment.
pub fn agent_container(d: &Deployment) -> &k8s_openapi::api::core::v1::Container {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER))
        .expect("the Deployment has an `agent` container")
}

/// The plain value of the agent container's env var `name` (None when absent or from a source).
pub fn env_value(d: &Deployment, name: &str) -> Option<String> {
    agent_container(d)
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// The pod-template's `fastagentic.io/config-hash`.
pub fn config_hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_HASH)
        .cloned()
}

/// `spec.replicas` of a Deployment.
pub fn deployment_replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

/// `metadata.resourceVersion` of any object.
pub fn resource_version<K: ResourceExt>(k: &K) -> String {
    k.resource_version().unwrap_or_default()
}

/// Whether the namespaced object `name` of kind `K` exists (`Err` carries the API error).
pub async fn exists<K>(client: &Client, ns: &str, name: &str) -> Result<bool, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map(|o| o.is_some())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// What the operator builds: `fastagentic-operator render` as the oracle
// ---------------------------------------------------------------------------------------------

/// The objects `fastagentic-operator render` prints for one FastAgentic: what the operator
/// builds from it, with the same code the controller runs (`operator/src/render.rs`). The
/// control-plane tests compare the live children with these, so the builders' defaults are
/// stated once, in the operator and its unit tests, not again here.
#[derive(Debug, Clone)]
pub struct Rendered {
    objects: Vec<Value>,
}

impl Rendered {
    /// Renders `fastagentic` (a FastAgentic as JSON) with the built operator binary.
    pub fn of(fastagentic: &Value) -> Self {
        let bin = workspace_binary("fastagentic-operator");
        // JSON is YAML.
        let yaml = run_stdin(
            Command::new(&bin).args(["render", "-f", "-"]),
            &fastagentic.to_string(),
        )
        .unwrap_or_else(|e| panic!("render {}: {e}", fastagentic["metadata"]["name"]));
        let objects = serde_saphyr::from_multiple::<Value>(&yaml)
            .unwrap_or_else(|e| panic!("render printed YAML that does not parse: {e}\n{yaml}"))
            .into_iter()
            .filter(|v| !v.is_null())
            .collect();
        Self { objects }
    }

    /// The rendered object of `kind`, if render builds one.
    pub fn object(&self, kind: &str) -> Option<&Value> {
        self.objects.iter().find(|o| o["kind"] == kind)
    }

    /// The rendered Deployment.
    pub fn deployment(&self) -> &Value {
        self.object("Deployment")
            .expect("render builds a Deployment")
    }

    /// The rendered Service.
    pub fn service(&self) -> &Value {
        self.object("Service").expect("render builds a Service")
    }

    /// The rendered HorizontalPodAutoscaler, when the spec autoscales.
    pub fn hpa(&self) -> Option<&Value> {
        self.object("HorizontalPodAutoscaler")
    }

    /// The rendered PodDisruptionBudget, when one is built.
    pub fn pdb(&self) -> Option<&Value> {
        self.object("PodDisruptionBudget")
    }

    /// The plain value of the rendered agent container's env var `name`.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.deployment()["spec"]["template"]["spec"]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == CONTAINER)?["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)?["value"]
            .as_str()
    }

    /// The rendered env var `name` as an integer (panics when absent or not a number).
    pub fn env_int(&self, name: &str) -> i64 {
        self.env(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("the rendered Deployment has no integer env {name}"))
    }
}

/// Annotation holding the hash of an object as the operator applied it. It covers the owner
/// reference and namespace, which render cannot know, so only its presence is compared.
pub const APPLIED_HASH: &str = "fastagentic.io/applied-hash";

/// Checks that the live object (as JSON) holds every field `rendered` sets, with the same value;
/// `Err` lists each difference by path. What only the server adds (defaults, status, uid,
/// managed fields, owner references) is not compared; a zero value may be absent (the server
/// leaves out `omitempty` zeros); quantities are compared by value (the server writes `1000m`
/// back as `1`). The hash annotations render cannot know are compared for
/// presence only: the applied hash always, the pod template's config hash when the pods read a
/// Secret (render hashes every Secret's resourceVersion as `unknown`).
pub fn matches_rendered(live: &Value, rendered: &Value) -> Result<(), String> {
    let reads_secrets = {
        let text = rendered.to_string();
        text.contains("\"secretKeyRef\"") || text.contains("\"secretRef\"")
    };
    let mut diffs = Vec::new();
    contains(live, rendered, "", reads_secrets, &mut diffs);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} {} differs from render: {}",
            rendered["kind"].as_str().unwrap_or("object"),
            rendered["metadata"]["name"].as_str().unwrap_or_default(),
            diffs.join("; ")
        ))
    }
}

fn contains(live: &Value, want: &Value, path: &str, reads_secrets: bool, diffs: &mut Vec<String>) {
    let unknowable = path.ends_with(&format!(".annotations.{APPLIED_HASH}"))
        || (reads_secrets && path.ends_with(&format!(".annotations.{CONFIG_HASH}")));
    if unknowable {
        if live.is_null() {
            diffs.push(format!("{path}: missing"));
        }
        return;
    }
    match (want, live) {
        (Value::Null, _) => {}
        // The API server writes Go structs back, leaving out the zero values of `omitempty`
        // fields (`initialDelaySeconds: 0`).
        (w, Value::Null) if is_zero(w) => {}
        (Value::Object(w), Value::Object(l)) => {
            for (k, v) in w {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                contains(
                    l.get(k).unwrap_or(&Value::Null),
                    v,
                    &sub,
                    reads_secrets,
                    diffs,
                );
            }
        }
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => {
            for (i, (wv, lv)) in w.iter().zip(l).enumerate() {
                contains(lv, wv, &format!("{path}[{i}]"), reads_secrets, diffs);
            }
        }
        (Value::String(w), Value::String(l)) if is_quantity_path(path) => {
            if !quantity_eq(w, l) {
                diffs.push(format!("{path}: live {l:?}, rendered {w:?}"));
            }
        }
        _ if live == want => {}
        _ => diffs.push(format!("{path}: live {live}, rendered {want}")),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => true,
    }
}

/// Fields whose values are `resource.Quantity`: resource requests and limits, metric targets.
fn is_quantity_path(path: &str) -> bool {
    path.contains(".resources.requests.")
        || path.contains(".resources.limits.")
        || (path.contains(".target.")
            && (path.ends_with(".averageValue") || path.ends_with(".value")))
}

/// Whether two quantities are the same amount (`1000m` = `1`, `1Gi` = `1024Mi`).
fn quantity_eq(a: &str, b: &str) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => a == b,
    }
}

/// A quantity's amount (`250m` → 0.25, `2Gi` → 2147483648), `None` when it does not parse.
fn quantity(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, *scale)))
        .or_else(|| s.strip_suffix('E').map(|n| (n, 1e18)))
        .unwrap_or((s, 1.0));
    number.parse::<f64>().ok().map(|n| n * scale)
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// One YAML document as JSON.
pub fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).expect("valid YAML")
}

/// Every `examples/*.yaml` as (file name, object), sorted by name.
pub fn examples() -> Vec<(String, Value)> {
    let dir = repo_root().join("examples");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable example");
            let obj = yaml_to_json(&text);
            (
                p.file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned(),
                obj,
            )
        })
        .filter(|(_, obj)| obj["kind"].as_str() == Some("FastAgentic"))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// One invalid fixture with the error it must produce.
#[derive(Debug, Clone)]
pub struct InvalidFixture {
    /// The file.
    pub path: PathBuf,
    /// The field the error names (`<root>` for the object as a whole).
    pub field: String,
    /// Text the error must contain.
    pub message: String,
}

/// `crds/tests/fixtures/base.yaml`: the valid resource every invalid fixture starts from.
pub fn base_fixture() -> PathBuf {
    repo_root().join("crds/tests/fixtures/base.yaml")
}

/// Every `crds/tests/fixtures/invalid/*.yaml`, sorted.
pub fn invalid_fixtures() -> Vec<InvalidFixture> {
    let dir = repo_root().join("crds/tests/fixtures/invalid");
    let mut out: Vec<InvalidFixture> = std::fs::read_dir(&dir)
        .expect("crds/tests/fixtures/invalid exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable fixture");
            let header = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                    .unwrap_or_else(|| panic!("{} has no '# {key}:' line", path.display()))
                    .trim()
                    .to_string()
            };
            InvalidFixture {
                field: header("field"),
                message: header("message"),
                path,
            }
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_is_free_for_its_child_and_for_nobody_else() {
        let reserved = free_port(Ipv4Addr::LOCALHOST.into());
        // What nobody else gets: port 0 never hands it out while it is held...
        let others: Vec<std::net::TcpListener> = (0..200)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0"))
            .collect();
        assert!(
            others
                .iter()
                .all(|l| l.local_addr().map(|a| a.port()).ok() != Some(reserved.port())),
            "port 0 handed out the reserved port {}",
            reserved.port()
        );
        // ...nor does a bind of the address itself without SO_REUSEADDR succeed.
        let plain = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("a socket");
        let SocketAddr::V4(v4) = reserved.addr() else {
            panic!("an IPv4 address")
        };
        assert_eq!(
            nix::sys::socket::bind(plain.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(v4)),
            Err(nix::errno::Errno::EADDRINUSE)
        );
        // The child's listener (std and tokio set SO_REUSEADDR) binds it and accepts.
        let child = std::net::TcpListener::bind(reserved.addr()).expect("the child binds");
        let client = std::net::TcpStream::connect(reserved.addr()).expect("connecting");
        let (_, peer) = child.accept().expect("accepting");
        assert_eq!(Some(peer), client.local_addr().ok());
    }

    #[test]
    fn a_reserved_wildcard_port_takes_a_child_on_every_address() {
        let reserved = free_port(Ipv4Addr::UNSPECIFIED.into());
        let child =
            std::net::TcpListener::bind(("0.0.0.0", reserved.port())).expect("the child binds");
        assert_eq!(
            child.local_addr().map(|a| a.port()).ok(),
            Some(reserved.port())
        );
    }

    #[test]
    fn quantities_compare_by_amount() {
        assert!(quantity_eq("1000m", "1"));
        assert!(quantity_eq("250m", "250m"));
        assert!(quantity_eq("1Gi", "1024Mi"));
        assert!(quantity_eq("70", "70"));
        assert!(!quantity_eq("1", "2"));
        assert!(!quantity_eq("1G", "1Gi"));
    }

    #[test]
    fn live_objects_match_their_render_up_to_what_the_server_adds() {
        let rendered = serde_json::json!({
            "kind": "Deployment",
            "metadata": {"name": "a", "annotations": {APPLIED_HASH: "render"}},
            "spec": {"replicas": 2, "template": {
                "metadata": {"annotations": {CONFIG_HASH: "h1"}},
                "spec": {"containers": [{"name": "agent", "startupProbe": {"initialDelaySeconds": 0},
                    "resources": {"limits": {"cpu": "1000m"}}, "env": [{"name": "X", "value": "1"}]}]}}}
        });
        let live = serde_json::json!({
            "kind": "Deployment",
            "metadata": {"name": "a", "uid": "u", "annotations": {APPLIED_HASH: "live"}},
            "spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {
                "metadata": {"annotations": {CONFIG_HASH: "h1"}},
                "spec": {"containers": [{"name": "agent", "imagePullPolicy": "IfNotPresent", "startupProbe": {},
                    "resources": {"limits": {"cpu": "1"}}, "env": [{"name": "X", "value": "1"}]}]}}},
            "status": {}
        });
        assert_eq!(matches_rendered(&live, &rendered), Ok(()));

        let mut other_hash = live.clone();
        other_hash["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH] = "h2".into();
        let err = matches_rendered(&other_hash, &rendered).expect_err("config hash differs");
        assert!(err.contains("fastagentic.io/config-hash"), "{err}");

        let mut extra_env = live.clone();
        extra_env["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .expect("env")
            .push(serde_json::json!({"name": "Y", "value": "2"}));
        assert!(matches_rendered(&extra_env, &rendered).is_err());

        let mut other_replicas = live.clone();
        other_replicas["spec"]["replicas"] = 3.into();
        let err = matches_rendered(&other_replicas, &rendered).expect_err("replicas differ");
        assert!(err.contains("spec.replicas: live 3, rendered 2"), "{err}");

        let mut no_hash = live;
        no_hash["metadata"]["annotations"] = serde_json::json!({});
        let err = matches_rendered(&no_hash, &rendered).expect_err("applied hash missing");
        assert!(err.contains("applied-hash: missing"), "{err}");
    }
}
