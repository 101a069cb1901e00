//! `spec.agent`: the runtime's variables that pick and configure the agent backend, and the
//! agent's own container when `spec.agent.container` is set.
//!
//! The agent's container is a native sidecar (an init container with `restartPolicy: Always`)
//! rather than a second regular container, for the order Kubernetes gives sidecars: the kubelet
//! starts it before the runtime (after its startup probe, when it has one) and, when the pod
//! stops, sends it SIGTERM only after the runtime has drained and exited. Two regular containers
//! would be stopped at the same time, and the agent could exit while the runtime still
//! forwards the requests it is draining.

use fastagentic_contract::env;
use fastagentic_crd::{self as crd, ContainerAgentSpec, FastAgentic};
use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar, Volume};

use super::deployment::{
    default_readiness_probe, from_secret, restricted_security_context, seconds, tmp_mount,
    tmp_volume, value, with_ephemeral_storage,
};
use super::{SecretUse, SpecError};

/// Name of the agent's container (the runtime's is `agent`, and a pod's container names are
/// unique across its init and regular containers).
pub const AGENT_APP_CONTAINER_NAME: &str = "agent-app";
/// Name of the agent container's port.
pub const AGENT_PORT_NAME: &str = "agent";
/// The address the runtime calls the agent's container on: the pod's loopback, which the two
/// containers share.
const LOOPBACK: &str = "127.0.0.1";
/// The agent container's own `/tmp` volume (the runtime's is `tmp`).
const AGENT_TMP_VOLUME: &str = "agent-tmp";

/// The variables of `spec.agent`: the backend and its settings (the OpenAI key by reference).
/// Optional settings are rendered only when set, so the runtime's defaults apply otherwise.
pub(super) fn agent_env(agent: &crd::AgentSpec, ours: &mut Vec<EnvVar>) {
    if let Some(echo) = &agent.echo {
        ours.push(value(env::AGENT, "echo"));
        if let Some(ms) = echo.delay_ms {
            ours.push(value(env::ECHO_DELAY_MS, ms));
        }
    } else if let Some(http) = &agent.http {
        ours.push(value(env::AGENT, "http"));
        ours.push(value(env::AGENT_URL, &http.url));
        if let Some(url) = &http.stream_url {
            ours.push(value(env::AGENT_STREAM_URL, url));
        }
        reply_env(http.format, http.reply_field.as_deref(), ours);
        if let Some(url) = &http.ready_url {
            ours.push(value(env::AGENT_READY_URL, url));
        }
        if let Some(s) = http.timeout_seconds {
            ours.push(value(env::AGENT_TIMEOUT, seconds(f64::from(s))));
        }
    } else if let Some(openai) = &agent.openai {
        ours.push(value(env::AGENT, "openai"));
        if let Some(model) = &openai.model {
            ours.push(value(env::MODEL, model));
        }
        if let Some(url) = &openai.base_url {
            ours.push(value(env::OPENAI_BASE_URL, url));
        }
        ours.push(from_secret(env::OPENAI_API_KEY, &openai.api_key_secret_ref));
    } else if let Some(c) = &agent.container {
        let base = format!("http://{LOOPBACK}:{}", c.port);
        ours.push(value(env::AGENT, "http"));
        ours.push(value(env::AGENT_URL, format!("{base}{}", c.path)));
        if let Some(path) = &c.stream_path {
            ours.push(value(env::AGENT_STREAM_URL, format!("{base}{path}")));
        }
        reply_env(c.format, c.reply_field.as_deref(), ours);
        ours.push(value(
            env::AGENT_READY_URL,
            match &c.ready_path {
                Some(path) => format!("{base}{path}"),
                None => format!("tcp://{LOOPBACK}:{}", c.port),
            },
        ));
    }
}

/// How the runtime shapes requests to the agent and reads its replies, when set.
fn reply_env(format: Option<crd::AgentFormat>, reply_field: Option<&str>, ours: &mut Vec<EnvVar>) {
    if let Some(format) = format {
        ours.push(value(env::AGENT_FORMAT, format.as_str()));
    }
    if let Some(field) = reply_field {
        ours.push(value(env::AGENT_REPLY_FIELD, field));
    }
}

/// `spec.agent.container`, when set.
fn container_spec(fa: &FastAgentic) -> Option<&ContainerAgentSpec> {
    fa.spec.agent.as_ref().and_then(|a| a.container.as_ref())
}

/// The agent's container, when `spec.agent.container` is set: a native sidecar (see the
/// module docs) with the user's image, command, env, resources and probes, the port `agent`,
/// a readiness probe unless the user gives one (the runtime's own: `GET /ready` on the runtime's
/// port, by number, as a probe's port name is looked up among its own container's ports; that
/// `/ready` checks the agent on the pod's loopback, so the agent can listen on `127.0.0.1` alone,
/// and the pod leaves the Service as soon as its agent exits), the runtime's restricted security
/// context unless the user gives one, and a `/tmp` of its own.
pub(super) fn sidecar(fa: &FastAgentic) -> Option<Container> {
    let c = container_spec(fa)?;
    Some(Container {
        name: AGENT_APP_CONTAINER_NAME.into(),
        image: Some(c.image.clone()),
        image_pull_policy: c.image_pull_policy.map(|p| p.as_str().to_string()),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c.env.clone(),
        ports: Some(vec![ContainerPort {
            name: Some(AGENT_PORT_NAME.into()),
            container_port: c.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(with_ephemeral_storage(
            c.resources.clone().unwrap_or_default(),
        )),
        readiness_probe: Some(
            c.readiness_probe
                .clone()
                .unwrap_or_else(|| default_readiness_probe(fa.spec.port)),
        ),
        liveness_probe: c.liveness_probe.clone(),
        startup_probe: c.startup_probe.clone(),
        security_context: Some(
            c.security_context
                .clone()
                .unwrap_or_else(restricted_security_context),
        ),
        volume_mounts: Some(vec![tmp_mount(AGENT_TMP_VOLUME)]),
        restart_policy: Some("Always".into()),
        ..Default::default()
    })
}

/// The agent container's `/tmp` volume, when it has a container.
pub(super) fn sidecar_volume(fa: &FastAgentic) -> Option<Volume> {
    container_spec(fa).map(|_| tmp_volume(AGENT_TMP_VOLUME))
}

/// The Secrets the agent's container reads through `env[].valueFrom.secretKeyRef`.
pub(super) fn secret_uses(fa: &FastAgentic) -> Vec<SecretUse> {
    let Some(c) = container_spec(fa) else {
        return Vec::new();
    };
    c.env
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, var)| {
            let sel = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some(SecretUse {
                field: format!("spec.agent.container.env[{i}].valueFrom.secretKeyRef"),
                name: sel.name.clone(),
                key: Some(sel.key.clone()),
                required: !sel.optional.unwrap_or(false),
            })
        })
        .collect()
}

/// What the schema cannot say about `spec.agent.container`: its env names are unique
/// (server-side apply merges `env` by name, and two entries with one name make every apply of
/// the Deployment fail).
pub(super) fn check(fa: &FastAgentic) -> Result<(), SpecError> {
    let Some(c) = container_spec(fa) else {
        return Ok(());
    };
    let mut seen = std::collections::BTreeSet::new();
    for (i, var) in c.env.iter().flatten().enumerate() {
        if !seen.insert(var.name.as_str()) {
            return Err(SpecError::new(
                format!("spec.agent.container.env[{i}].name"),
                format!("duplicate environment variable {:?}", var.name),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
