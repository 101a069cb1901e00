//! Helpers shared by the example and admission tests.

// Tests fail loudly on broken fixtures; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crds/ has a parent")
        .join("examples")
}

/// Parses one YAML document into JSON, the form the API server validates.
pub fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).expect("valid YAML")
}

pub fn read_example(name: &str) -> String {
    let path = examples_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
