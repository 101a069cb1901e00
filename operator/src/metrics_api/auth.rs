//! Who is asking, and may they: the API server's delegated authentication and authorization,
//! as every aggregated API server does it.
//!
//! - Front proxy: the aggregator connects with a client certificate signed by the
//!   `requestheader-client-ca-file` (published in `kube-system/extension-apiserver-authentication`)
//!   whose common name is one of `requestheader-allowed-names`; the user is then in the
//!   `X-Remote-User`/`X-Remote-Group`/`X-Remote-Extra-*` headers (names from the same ConfigMap).
//! - Bearer token: anybody else (a pod calling the Service directly) is checked with a
//!   TokenReview.
//! - Metric reads are then authorized with a SubjectAccessReview (`get` on `pods/<metric>` in
//!   `custom.metrics.k8s.io`), other paths as non-resource URLs. Discovery documents (and the
//!   OpenAPI paths, which answer 404) need authentication only: the API server's
//!   `system:discovery` role grants them to every authenticated user, and the aggregator reads
//!   them as `system:kube-aggregator` without any group, which no role names.
//!
//! Answers are cached for [`CACHE_TTL`] (the API server's own delegating authorizer caches for
//! the same time), at most [`CACHE_ENTRIES`] of each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use super::api::{ApiError, GROUP, VERSION};

/// How long an authentication or authorization answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most cached answers of each kind (the cache is emptied when full).
pub const CACHE_ENTRIES: usize = 4096;

/// Where the front proxy's settings are published.
pub const AUTH_CONFIG_MAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

/// The API server's front-proxy (request header) settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontProxy {
    /// PEM of the CA that signs the proxy's client certificate.
    pub client_ca_pem: String,
    /// Common names a proxy certificate may have (empty: any the CA signed).
    pub allowed_names: Vec<String>,
    /// Headers carrying the user name.
    pub username_headers: Vec<String>,
    /// Headers carrying the groups.
    pub group_headers: Vec<String>,
    /// Prefixes of the headers carrying extra attributes.
    pub extra_prefixes: Vec<String>,
}

impl FrontProxy {
    /// From the ConfigMap's data; `None` when the API server has no front proxy configured.
    pub fn from_config_map_data(data: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        let Some(ca) = data.get("requestheader-client-ca-file") else {
            return Ok(None);
        };
        let list = |key: &str| -> Result<Vec<String>, String> {
            match data.get(key) {
                None => Ok(Vec::new()),
                Some(s) => serde_json::from_str(s).map_err(|e| {
                    format!("{key} in {}/{}: {e}", AUTH_CONFIG_MAP.0, AUTH_CONFIG_MAP.1)
                }),
            }
        };
        let or = |v: Vec<String>, default: &str| {
            if v.is_empty() {
                vec![default.to_string()]
            } else {
                v
            }
        };
        Ok(Some(Self {
            client_ca_pem: ca.clone(),
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: or(list("requestheader-username-headers")?, "X-Remote-User"),
            group_headers: or(list("requestheader-group-headers")?, "X-Remote-Group"),
            extra_prefixes: or(
                list("requestheader-extra-headers-prefix")?,
                "X-Remote-Extra-",
            ),
        }))
    }

    /// Reads the published settings.
    pub async fn load(client: &kube::Client) -> Result<Option<Self>, String> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), AUTH_CONFIG_MAP.0);
        let cm = api.get_opt(AUTH_CONFIG_MAP.1).await.map_err(|e| {
            format!(
                "reading {}/{} (needs the extension-apiserver-authentication-reader Role): {e}",
                AUTH_CONFIG_MAP.0, AUTH_CONFIG_MAP.1
            )
        })?;
        match cm.and_then(|c| c.data) {
            Some(data) => Self::from_config_map_data(&data),
            None => Ok(None),
        }
    }

    /// The user the front proxy names in `headers`, for a connection whose verified client
    /// certificate has common name `cn`. `Ok(None)`: that certificate is not a front proxy's.
    pub fn user(&self, cn: &str, headers: &HeaderMap) -> Result<Option<User>, ApiError> {
        if !self.allowed_names.is_empty() && !self.allowed_names.iter().any(|n| n == cn) {
            return Ok(None);
        }
        let values = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let name = self
            .username_headers
            .iter()
            .flat_map(|h| values(h))
            .find(|v| !v.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the front proxy named no user"))?;
        let groups = self.group_headers.iter().flat_map(|h| values(h)).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            let h = header.as_str();
            for prefix in &self.extra_prefixes {
                let p = prefix.to_ascii_lowercase();
                if let Some(key) = h.strip_prefix(&p)
                    && let Ok(v) = value.to_str()
                {
                    extra.entry(unescape(key)).or_default().push(v.to_string());
                }
            }
        }
        Ok(Some(User {
            name,
            uid: None,
            groups,
            extra,
        }))
    }
}

/// Extra keys are percent-encoded in header names.
fn unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = key
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    /// User name.
    pub name: String,
    /// UID, when the authenticator gave one.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request asks to do, for a SubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A discovery document.
    Path(String),
    /// Reading `metric` of pod `name` (or `*`) in `namespace`.
    Metric {
        /// Namespace.
        namespace: String,
        /// Pod name or `*`.
        name: String,
        /// Metric name (the subresource).
        metric: String,
    },
}

/// Discovery and OpenAPI paths: public to every authenticated caller.
pub fn is_discovery(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let group = format!("/apis/{GROUP}");
    path == "/apis"
        || path == group
        || path == format!("{group}/{VERSION}")
        || path == "/openapi/v2"
        || path.starts_with("/openapi/v3")
}

impl Attributes {
    /// From a request path of this API.
    pub fn of_path(path: &str) -> Self {
        let prefix = format!("/apis/{GROUP}/{VERSION}/namespaces/");
        if let Some(rest) = path.strip_prefix(&prefix) {
            let parts: Vec<String> = rest.split('/').map(unescape).collect();
            if let [namespace, pods, name, metric] = parts.as_slice()
                && pods == "pods"
            {
                return Self::Metric {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    metric: metric.clone(),
                };
            }
        }
        Self::Path(path.to_string())
    }

    fn review(&self, user: &User) -> SubjectAccessReview {
        let (resource, non_resource) = match self {
            Self::Path(path) => (
                None,
                Some(NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some("get".into()),
                }),
            ),
            Self::Metric {
                namespace,
                name,
                metric,
            } => (
                Some(ResourceAttributes {
                    namespace: Some(namespace.clone()),
                    verb: Some("get".into()),
                    group: Some(GROUP.into()),
                    version: Some(VERSION.into()),
                    resource: Some("pods".into()),
                    subresource: Some(metric.clone()),
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                None,
            ),
        };
        SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: resource,
                non_resource_attributes: non_resource,
            },
            ..Default::default()
        }
    }
}

/// A small expiring cache.
#[derive(Debug)]
struct Cache<V>(Mutex<HashMap<String, (V, Instant)>>);

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<V: Clone> Cache<V> {
    fn get(&self, key: &str) -> Option<V> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(v, _)| v.clone())
    }
    fn put(&self, key: String, value: V) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, (value, Instant::now()));
    }
}

/// Asks the API server about tokens and permissions.
pub struct Delegated {
    client: kube::Client,
    tokens: Cache<Result<User, String>>,
    decisions: Cache<Result<(), String>>,
}

impl Delegated {
    /// Reviews through `client` (needs `system:auth-delegator`).
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            tokens: Cache::default(),
            decisions: Cache::default(),
        }
    }

    /// The user a bearer token belongs to.
    pub async fn authenticate_token(&self, token: &str) -> Result<User, ApiError> {
        let key = hex::encode(Sha256::digest(token.as_bytes()));
        let answer = match self.tokens.get(&key) {
            Some(a) => a,
            None => {
                let review = TokenReview {
                    spec: TokenReviewSpec {
                        token: Some(token.to_string()),
                        audiences: None,
                    },
                    ..Default::default()
                };
                let api: Api<TokenReview> = Api::all(self.client.clone());
                let reviewed = api
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(|e| ApiError::unavailable(format!("TokenReview failed: {e}")))?;
                let a = match reviewed.status {
                    Some(s) if s.authenticated == Some(true) => {
                        let u = s.user.unwrap_or_default();
                        Ok(User {
                            name: u.username.unwrap_or_default(),
                            uid: u.uid,
                            groups: u.groups.unwrap_or_default(),
                            extra: u.extra.unwrap_or_default(),
                        })
                    }
                    Some(s) => Err(s.error.unwrap_or_else(|| "invalid bearer token".into())),
                    None => Err("invalid bearer token".into()),
                };
                self.tokens.put(key, a.clone());
                a
            }
        };
        answer.map_err(ApiError::unauthorized)
    }

    /// Whether `user` may do `attrs`.
    pub async fn authorize(&self, user: &User, attrs: &Attributes) -> Result<(), ApiError> {
        let review = attrs.review(user);
        let key = serde_json::to_string(&review.spec).unwrap_or_default();
        let answer = match self.decisions.get(&key) {
            Some(a) => a,
            None => {
                let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
                let reviewed = api
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(|e| {
                        ApiError::unavailable(format!("SubjectAccessReview failed: {e}"))
                    })?;
                let status = reviewed.status.unwrap_or_default();
                let a = if status.allowed {
                    Ok(())
                } else {
                    Err(forbidden_message(user, attrs, status.reason.as_deref()))
                };
                self.decisions.put(key, a.clone());
                a
            }
        };
        answer.map_err(ApiError::forbidden)
    }
}

fn forbidden_message(user: &User, attrs: &Attributes, reason: Option<&str>) -> String {
    let what = match attrs {
        Attributes::Path(p) => format!("get path \"{p}\""),
        Attributes::Metric {
            namespace,
            name,
            metric,
        } => format!(
            "get pods/{metric} \"{name}\" in API group \"{GROUP}\" in the namespace \"{namespace}\""
        ),
    };
    match reason.filter(|r| !r.is_empty()) {
        Some(r) => format!("User \"{}\" cannot {what}: {r}", user.name),
        None => format!("User \"{}\" cannot {what}", user.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn front_proxy() -> FrontProxy {
        let data = BTreeMap::from([
            ("requestheader-client-ca-file".into(), "PEM".into()),
            (
                "requestheader-allowed-names".into(),
                r#"["front-proxy-client"]"#.into(),
            ),
            (
                "requestheader-username-headers".into(),
                r#"["X-Remote-User"]"#.into(),
            ),
            (
                "requestheader-group-headers".into(),
                r#"["X-Remote-Group"]"#.into(),
            ),
            (
                "requestheader-extra-headers-prefix".into(),
                r#"["X-Remote-Extra-"]"#.into(),
            ),
        ]);
        FrontProxy::from_config_map_data(&data)
            .expect("parses")
            .expect("configured")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_front_proxy_names_the_user_groups_and_extras() {
        let fp = front_proxy();
        let h = headers(&[
            (
                "X-Remote-User",
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            ),
            ("X-Remote-Group", "system:serviceaccounts"),
            ("X-Remote-Group", "system:authenticated"),
            (
                "X-Remote-Extra-Authentication.kubernetes.io%2fpod-name",
                "hpa-0",
            ),
        ]);
        let u = fp
            .user("front-proxy-client", &h)
            .expect("ok")
            .expect("a user");
        assert_eq!(
            u.name,
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
        );
        assert_eq!(u.groups, ["system:serviceaccounts", "system:authenticated"]);
        assert_eq!(
            u.extra.get("authentication.kubernetes.io/pod-name"),
            Some(&vec!["hpa-0".to_string()])
        );
    }

    #[test]
    fn other_certificates_and_missing_users_are_not_trusted() {
        let fp = front_proxy();
        let h = headers(&[("X-Remote-User", "admin")]);
        assert_eq!(
            fp.user("someone-else", &h),
            Ok(None),
            "CN not allowed: not a front proxy"
        );
        let e = fp
            .user("front-proxy-client", &HeaderMap::new())
            .expect_err("no user");
        assert_eq!(e.code, axum::http::StatusCode::UNAUTHORIZED);
        let mut any = fp.clone();
        any.allowed_names.clear();
        assert!(any.user("anyone-the-ca-signed", &h).expect("ok").is_some());
    }

    #[test]
    fn no_front_proxy_configured_and_defaults() {
        assert_eq!(FrontProxy::from_config_map_data(&BTreeMap::new()), Ok(None));
        let data = BTreeMap::from([("requestheader-client-ca-file".into(), "PEM".into())]);
        let fp = FrontProxy::from_config_map_data(&data)
            .expect("ok")
            .expect("some");
        assert_eq!(fp.username_headers, ["X-Remote-User"]);
        let bad = BTreeMap::from([
            ("requestheader-client-ca-file".into(), "PEM".into()),
            ("requestheader-allowed-names".into(), "not json".into()),
        ]);
        let e = FrontProxy::from_config_map_data(&bad).expect_err("bad list");
        assert!(e.contains("requestheader-allowed-names"), "{e}");
    }

    #[test]
    fn discovery_paths_are_told_apart_from_metric_reads() {
        for p in [
            "/apis",
            "/apis/",
            "/apis/custom.metrics.k8s.io",
            "/apis/custom.metrics.k8s.io/v1beta2",
            "/openapi/v2",
            "/openapi/v3",
            "/openapi/v3/apis/custom.metrics.k8s.io/v1beta2",
        ] {
            assert!(is_discovery(p), "{p}");
        }
        for p in [
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/*/m",
            "/apis/custom.metrics.k8s.io/v1beta1",
            "/apis/other.group",
            "/metrics",
        ] {
            assert!(!is_discovery(p), "{p}");
        }
    }

    #[test]
    fn paths_become_review_attributes() {
        assert_eq!(
            Attributes::of_path("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/*/m"),
            Attributes::Metric {
                namespace: "ns".into(),
                name: "*".into(),
                metric: "m".into()
            }
        );
        assert_eq!(
            Attributes::of_path("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/%2A/m"),
            Attributes::of_path("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/*/m"),
            "an escaped * is the same request"
        );
        assert_eq!(
            Attributes::of_path("/apis/custom.metrics.k8s.io/v1beta2"),
            Attributes::Path("/apis/custom.metrics.k8s.io/v1beta2".into())
        );
        let user = User {
            name: "u".into(),
            uid: None,
            groups: vec!["g".into()],
            extra: BTreeMap::new(),
        };
        let r = Attributes::of_path("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/p/m")
            .review(&user);
        let ra = r.spec.resource_attributes.expect("resource attributes");
        assert_eq!(
            (
                ra.group.as_deref(),
                ra.resource.as_deref(),
                ra.subresource.as_deref()
            ),
            (Some(GROUP), Some("pods"), Some("m"))
        );
        assert_eq!(
            (ra.verb.as_deref(), ra.name.as_deref()),
            (Some("get"), Some("p"))
        );
        assert_eq!(r.spec.groups, Some(vec!["g".to_string()]));
    }
}
