//! Content hashes: the pod-template config hash and the per-child applied hash.

use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::BuildError;

/// Pod-template annotation: hash of everything that should roll the pods, including the
/// resourceVersions of the referenced Secrets.
pub const ANNOTATION_CONFIG_HASH: &str = "fastagentic.io/config-hash";
/// Annotation on every child: hash of the object the operator applied. A reconcile whose desired
/// object has the same hash as the live one (and whose fields are still in place) writes nothing.
pub const ANNOTATION_APPLIED_HASH: &str = "fastagentic.io/applied-hash";

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hash of an object as the operator would apply it, ignoring its own applied-hash annotation.
/// serde_json serializes struct fields in declaration order and maps sorted (`BTreeMap`), so the
/// hash is stable across runs and versions of this binary built from the same k8s-openapi.
pub fn applied_hash<K: Resource + Serialize + Clone>(obj: &K) -> Result<String, serde_json::Error> {
    let mut copy = obj.clone();
    let meta = copy.meta_mut();
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(ANNOTATION_APPLIED_HASH);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    Ok(sha256_hex(&serde_json::to_vec(&copy)?))
}

/// Sets `fastagentic.io/applied-hash` on `obj` to [`applied_hash`].
pub fn stamp_applied_hash<K: Resource + Serialize + Clone>(
    obj: &mut K,
    what: &'static str,
) -> Result<(), BuildError> {
    let hash = applied_hash(obj).map_err(|source| BuildError::Serialize { what, source })?;
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_APPLIED_HASH.to_string(), hash);
    Ok(())
}
