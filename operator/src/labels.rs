//! The labels the operator puts on what it creates: the `app.kubernetes.io/*` keys, their
//! values, and the label sets built from them (the pod selector and the standard labels).
//!
//! Other names live with what they name: the field manager in the crate root, the annotation
//! keys with the hashes (`build::hash`), the container's names and numbers with the Deployment
//! builder, the replicas hand-off manager with the applier.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of`.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/component`.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// Value of `app.kubernetes.io/name` and `app.kubernetes.io/part-of`.
pub const APP_NAME: &str = "fastagentic";
/// Value of `app.kubernetes.io/managed-by` (also the Events' reporting controller).
pub const MANAGED_BY: &str = "fastagentic-operator";
/// Value of `app.kubernetes.io/component`.
pub const COMPONENT: &str = "agent-server";

/// The labels that select the pods: `app.kubernetes.io/name` and `/instance`.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), name.to_string()),
    ])
}

/// The selector as the string `status.selector` carries (for the scale subresource).
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The standard labels every child and pod carries.
pub fn standard_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_PART_OF.into(), APP_NAME.into());
    labels.insert(LABEL_COMPONENT.into(), COMPONENT.into());
    labels
}

/// Parses `key=value,key=value` (the `--pod-labels` flag) into a label map. Empty input is
/// no labels; a pair without `=`, an empty key or a repeated key is an error naming it.
pub fn parse_label_list(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("label {key:?} is given twice"));
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lists_parse_and_bad_pairs_are_named() {
        assert_eq!(
            parse_label_list("app.kubernetes.io/name=op, app.kubernetes.io/instance=r"),
            Ok(BTreeMap::from([
                ("app.kubernetes.io/instance".to_string(), "r".to_string()),
                ("app.kubernetes.io/name".to_string(), "op".to_string()),
            ]))
        );
        assert_eq!(parse_label_list(""), Ok(BTreeMap::new()));
        assert_eq!(
            parse_label_list("a=1,b"),
            Err("\"b\" is not key=value".to_string())
        );
        assert_eq!(
            parse_label_list("=1"),
            Err("\"=1\" has an empty key".to_string())
        );
        assert_eq!(
            parse_label_list("a=1,a=2"),
            Err("label \"a\" is given twice".to_string())
        );
    }
}
