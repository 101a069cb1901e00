//! `spec.agent`: the runtime's variables that pick and configure the agent backend.

use fastagentic_contract::env;
use fastagentic_crd as crd;
use k8s_openapi::api::core::v1::EnvVar;

use super::deployment::{from_secret, seconds, value};

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

#[cfg(test)]
mod tests;
