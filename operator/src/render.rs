//! `fastagentic-operator render`: the objects the operator would apply, without a cluster.
//!
//! Each FastAgentic document of the input goes through what the API server and the operator
//! would do with it: client-side admission (`fastagentic_crd::admission`: the CRD's structural
//! schema, then its CEL rules evaluated with kube's CEL validator against the generated CRD),
//! the schema defaults (serde defaults of the Rust types, the same values), the operator's own
//! [`validate`], and finally the same [`build_children`] the controller uses.
//!
//! Two things cannot be known offline and are documented in the output's behaviour:
//! - Secret resourceVersions: every referenced Secret is hashed as `unknown`, so the
//!   `fastagentic.io/config-hash` (and `fastagentic.io/applied-hash`) differ from the cluster's.
//! - The owner reference needs the resource's uid, which only the API server assigns; it is
//!   left out unless the input carries `metadata.uid`.
//! - Where the operator runs: a NetworkPolicy is shown without the operator's peer (the
//!   controller adds it with a concurrency target, from `--pod-namespace` and `--pod-labels`).
//!
//! A new resource starts with `spec.replicas` or 1 replica, as the controller does without a
//! live Deployment.

use fastagentic_crd::FastAgentic;
use serde::Serialize;
use serde_json::Value;

use crate::build::{BuildInputs, Children, build_children, validate};

/// Why the input cannot be rendered. `render` exits with status 2 for every variant.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The input does not parse as YAML.
    #[error("the input is not valid YAML: {0}")]
    NotYaml(String),
    /// The input holds no document.
    #[error("the input holds no FastAgentic document")]
    Empty,
    /// A document is not a valid FastAgentic; lists every problem found, each naming its field.
    #[error("document {doc}: {}", problems.join("; "))]
    Invalid {
        /// 1-based index of the document.
        doc: usize,
        /// `field: message` entries.
        problems: Vec<String>,
    },
    /// Building or printing the objects failed.
    #[error("document {doc}: {message}")]
    Output {
        /// 1-based index of the document.
        doc: usize,
        /// What failed.
        message: String,
    },
}

/// Parses and checks every document of `input`.
pub fn parse(input: &str) -> Result<Vec<FastAgentic>, RenderError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(input).map_err(|e| RenderError::NotYaml(e.to_string()))?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().filter(|d| !d.is_null()).enumerate() {
        let n = i + 1;
        let invalid = |problems: Vec<String>| RenderError::Invalid { doc: n, problems };
        if !doc.is_object() {
            return Err(invalid(vec!["the document is not a mapping".into()]));
        }
        // The API server's admission, client-side: structural schema, then CEL rules.
        if let Err(errors) = fastagentic_crd::admission::admit(&doc) {
            return Err(invalid(errors.0.iter().map(ToString::to_string).collect()));
        }
        let fa: FastAgentic =
            serde_json::from_value(doc).map_err(|e| invalid(vec![e.to_string()]))?;
        validate(&fa).map_err(|e| invalid(vec![e.to_string()]))?;
        out.push(fa);
    }
    if out.is_empty() {
        return Err(RenderError::Empty);
    }
    Ok(out)
}

/// The children of one (already checked) FastAgentic, as `render` shows them.
pub fn children(fa: &FastAgentic, doc: usize) -> Result<Children, RenderError> {
    let v = validate(fa).map_err(|e| RenderError::Invalid {
        doc,
        problems: vec![e.to_string()],
    })?;
    build_children(&v, &BuildInputs::default()).map_err(|e| RenderError::Output {
        doc,
        message: e.to_string(),
    })
}

fn push_yaml<T: Serialize>(out: &mut String, obj: &T, doc: usize) -> Result<(), RenderError> {
    let yaml = serde_saphyr::to_string(obj).map_err(|e| RenderError::Output {
        doc,
        message: e.to_string(),
    })?;
    out.push_str("---\n");
    out.push_str(&yaml);
    if !yaml.ends_with('\n') {
        out.push('\n');
    }
    Ok(())
}

/// Multi-document YAML of every object the operator would apply for `input`: per FastAgentic,
/// its Deployment, Service, then the HPA, PDB and NetworkPolicy when wanted.
pub fn render(input: &str) -> Result<String, RenderError> {
    let mut out = String::new();
    for (i, fa) in parse(input)?.iter().enumerate() {
        let doc = i + 1;
        let Children {
            deployment,
            service,
            hpa,
            pdb,
            network_policy,
        } = children(fa, doc)?;
        push_yaml(&mut out, &deployment, doc)?;
        push_yaml(&mut out, &service, doc)?;
        if let Some(h) = &hpa {
            push_yaml(&mut out, h, doc)?;
        }
        if let Some(p) = &pdb {
            push_yaml(&mut out, p, doc)?;
        }
        if let Some(n) = &network_policy {
            push_yaml(&mut out, n, doc)?;
        }
    }
    Ok(out)
}
