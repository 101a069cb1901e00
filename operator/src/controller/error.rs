//! The controller's error type: each variant maps to an Event reason, a `Ready=False` condition
//! reason and the `reason` label of the error metric.

use crate::build::{BuildError, SpecError};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec passed admission but cannot be run.
    #[error("{0}")]
    InvalidSpec(#[from] SpecError),

    /// A Secret the pods need does not exist.
    #[error("{field}: Secret {name:?} not found in namespace {namespace:?}")]
    SecretNotFound {
        /// JSON path of the reference.
        field: String,
        /// Secret name.
        name: String,
        /// Namespace looked in.
        namespace: String,
    },

    /// A Secret exists but lacks the referenced key.
    #[error("{field}: Secret {name:?} has no key {key:?}")]
    SecretKeyNotFound {
        /// JSON path of the reference.
        field: String,
        /// Secret name.
        name: String,
        /// The missing key.
        key: String,
    },

    /// Building the desired objects failed.
    #[error("{0}")]
    Build(#[from] BuildError),

    /// A request to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing, e.g. `apply Deployment default/agent`.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },

    /// The object has no namespace (FastAgentic is namespaced; this should not happen).
    #[error("metadata.namespace: the resource has no namespace")]
    MissingNamespace,
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// PascalCase reason for conditions, Events and the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::SecretNotFound { .. } => "SecretNotFound",
            Error::SecretKeyNotFound { .. } => "SecretKeyNotFound",
            Error::Build(_) => "BuildFailed",
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.is_forbidden() => "Forbidden",
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.is_invalid() => "Rejected",
            Error::Kube { .. } => "ApiError",
            Error::MissingNamespace => "MissingNamespace",
        }
    }

    /// True when the user has to change something (spec or Secrets); false for transient or
    /// operator-side failures.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_) | Error::SecretNotFound { .. } | Error::SecretKeyNotFound { .. }
        )
    }
}
