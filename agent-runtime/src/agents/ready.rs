//! `--agent-ready-url`: the agent's readiness as a check of the runtime's `/ready`.
//!
//! An `http://` or `https://` URL is ready when a GET answers 2xx; `tcp://host:port` when a
//! TCP connection opens. In a pod whose agent is a `container`, the operator points it at that
//! container, so the runtime only reports ready while its agent is.

use std::time::Duration;

/// Longest wait of one check (the `/ready` handler bounds all checks at 2 s as well).
const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// Where the agent's readiness is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyTarget {
    /// GET, 2xx.
    Http(reqwest::Url),
    /// TCP connect to `host:port`.
    Tcp(String),
}

/// Value parser of `--agent-ready-url`.
pub fn parse_ready_url(s: &str) -> Result<ReadyTarget, String> {
    const ACCEPTED: &str = "accepted: an absolute http:// or https:// URL, or tcp://host:port";
    let url = reqwest::Url::parse(s.trim()).map_err(|_| ACCEPTED.to_owned())?;
    match (url.scheme(), url.host_str(), url.port()) {
        ("http" | "https", Some(_), _) => Ok(ReadyTarget::Http(url)),
        ("tcp", Some(host), Some(port)) if url.path().is_empty() || url.path() == "/" => {
            Ok(ReadyTarget::Tcp(format!("{host}:{port}")))
        }
        _ => Err(ACCEPTED.to_owned()),
    }
}

/// The `agent` check of `/ready` (the server registers it as a readiness check).
#[derive(Debug)]
pub struct AgentReadyCheck {
    target: ReadyTarget,
    client: reqwest::Client,
}

impl AgentReadyCheck {
    /// A check of `target`.
    pub fn new(target: ReadyTarget) -> Result<Self, super::AgentConfigError> {
        let client = reqwest::Client::builder()
            .timeout(CHECK_TIMEOUT)
            .build()
            .map_err(|e| super::AgentConfigError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { target, client })
    }
}

impl AgentReadyCheck {
    /// Whether the agent is ready now.
    pub async fn check(&self) -> bool {
        match &self.target {
            ReadyTarget::Http(url) => match self.client.get(url.clone()).send().await {
                Ok(r) => r.status().is_success(),
                Err(_) => false,
            },
            ReadyTarget::Tcp(addr) => matches!(
                tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_urls_are_parsed() {
        assert!(matches!(
            parse_ready_url("http://127.0.0.1:8000/ready"),
            Ok(ReadyTarget::Http(u)) if u.path() == "/ready"
        ));
        assert_eq!(
            parse_ready_url("tcp://127.0.0.1:8000"),
            Ok(ReadyTarget::Tcp("127.0.0.1:8000".into()))
        );
        for bad in [
            "tcp://127.0.0.1",
            "tcp://h:1/x",
            "ftp://h/",
            "127.0.0.1:8000",
            "",
        ] {
            assert!(parse_ready_url(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_check_follows_the_agent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let check = AgentReadyCheck::new(ReadyTarget::Tcp(addr.to_string())).expect("check");
        assert!(check.check().await);
        drop(listener);
        assert!(!check.check().await);
    }
}
