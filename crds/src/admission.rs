//! Admission without a cluster: [`admit`] checks a FastAgentic object against the generated CRD
//! the way the API server does when it is created.
//!
//! Two passes, in the API server's order:
//! 1. the structural schema — types, enums, ranges, lengths, required fields and unknown fields
//!    (kubectl's default `--validate=strict` rejects unknown fields, so this does too);
//! 2. the CEL rules (`x-kubernetes-validations`), evaluated by `kube`'s CEL engine after the
//!    schema defaults have been applied.
//!
//! This is the one client-side implementation of the admission rules: the rules themselves are
//! the CEL expressions on the Rust types (what the API server evaluates), never rewritten in
//! Rust. `fastagentic-operator render` uses it to reject a file before building anything, the
//! operator's `build::validate` runs it again on every object it reconciles (an API server
//! older than CEL validation admits what the rules forbid), and the tests use it to prove that
//! every example is admitted and every invalid resource is rejected by the rule meant for it.
//! The control-plane tests prove the same against a real API server.

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// One reason an object is not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the offending field, e.g. `spec.workers` (`<root>` for the object itself).
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All reasons an object is not admitted (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected(pub Vec<FieldError>);

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for Rejected {}

/// The `openAPIV3Schema` of the generated CRD, as JSON (generated once per process).
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        crate::crd()
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null)
    })
}

/// Admits or rejects a whole FastAgentic object (`apiVersion`, `kind`, `metadata`, `spec`) as
/// the API server would on create, with every reason it is rejected.
pub fn admit(object: &Value) -> Result<(), Rejected> {
    let schema = schema();
    let mut errors = Vec::new();
    check_type_meta(object, &mut errors);
    // metadata is validated by the API server itself, not by the CRD schema; check the name
    // rules here through CEL below and only the shape here.
    let mut normalized = object.clone();
    walk(schema, &mut normalized, "", &mut errors, true);
    if !errors.is_empty() {
        return Err(Rejected(errors));
    }
    let root = kube::core::cel::RootContext {
        api_version: format!("{}/{}", crate::GROUP, crate::VERSION),
        api_group: crate::GROUP.to_string(),
        kind: crate::KIND.to_string(),
    };
    if let Err(cel_errors) = kube::core::cel::Validator::new().validate_with_context(
        schema,
        &normalized,
        None,
        Some(&root),
    ) {
        for e in cel_errors.iter() {
            errors.push(FieldError {
                field: if e.field_path.is_empty() {
                    "<root>".to_string()
                } else {
                    e.field_path.clone()
                },
                message: e.message.clone(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Rejected(errors))
    }
}

fn check_type_meta(object: &Value, errors: &mut Vec<FieldError>) {
    let want_api_version = format!("{}/{}", crate::GROUP, crate::VERSION);
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == want_api_version => {}
        other => errors.push(FieldError {
            field: "apiVersion".into(),
            message: format!(
                "Unsupported value: {}: supported values: \"{want_api_version}\"",
                show(other)
            ),
        }),
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(k) if k == crate::KIND => {}
        other => errors.push(FieldError {
            field: "kind".into(),
            message: format!(
                "Unsupported value: {}: supported values: \"{}\"",
                show(other),
                crate::KIND
            ),
        }),
    }
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => {}
        _ => errors.push(FieldError {
            field: "metadata.name".into(),
            message: "Required value: name is required".into(),
        }),
    }
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "<missing>".to_string(), |s| format!("\"{s}\""))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks `value` against `schema`, applying schema defaults to absent properties on the way
/// and turning integers in `number` fields into floats (as the API server's CEL sees them).
fn walk(schema: &Value, value: &mut Value, path: &str, errors: &mut Vec<FieldError>, root: bool) {
    let field = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) || root {
            return;
        }
        errors.push(FieldError {
            field: field.into(),
            message: "Invalid value: \"null\": must not be null".into(),
        });
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(FieldError {
                field: field.into(),
                message: format!(
                    "Invalid value: \"{}\": must be an integer or a string",
                    type_name(value)
                ),
            });
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let ok = match want {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => true,
        };
        if !ok {
            errors.push(FieldError {
                field: field.into(),
                message: format!(
                    "Invalid value: \"{}\": {field} in body must be of type {want}: \"{}\"",
                    type_name(value),
                    type_name(value)
                ),
            });
            return;
        }
        if want == "number"
            && let Some(n) = value.as_f64().and_then(serde_json::Number::from_f64)
        {
            *value = Value::Number(n);
        }
    }
    check_enum(schema, value, field, errors);
    check_range(schema, value, field, errors);
    check_length(schema, value, field, errors);
    check_items(schema, value, field, errors);

    match value {
        Value::Object(map) => walk_object(schema, map, path, errors, root),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), errors, false);
                }
            }
        }
        _ => {}
    }
}

fn walk_object(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
    root: bool,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                errors.push(FieldError {
                    field: join(path, key),
                    message: "Required value".into(),
                });
            }
        }
    }
    if let Some(props) = properties {
        for (key, prop_schema) in props {
            if !map.contains_key(key)
                && let Some(default) = prop_schema.get("default")
            {
                map.insert(key.clone(), default.clone());
            }
        }
    }
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let additional = schema.get("additionalProperties");
    for (key, child) in map.iter_mut() {
        let child_path = join(path, key);
        // The API server owns these; the CRD schema does not describe them.
        if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(prop_schema), _) => walk(prop_schema, child, &child_path, errors, false),
            (None, Some(add)) if add.is_object() => walk(add, child, &child_path, errors, false),
            (None, Some(Value::Bool(true))) => {}
            (None, _) if preserve => {}
            (None, _) => errors.push(FieldError {
                field: child_path,
                message: format!("unknown field \"{key}\""),
            }),
        }
    }
}

fn check_enum(schema: &Value, value: &Value, field: &str, errors: &mut Vec<FieldError>) {
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(Value::to_string).collect();
        errors.push(FieldError {
            field: field.into(),
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            ),
        });
    }
}

fn check_range(schema: &Value, value: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let Some(n) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        if n < min || (exclusive && n <= min) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(FieldError {
                field: field.into(),
                message: format!("Invalid value: {value}: {field} in body should be {rel} {min}"),
            });
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
        if n > max || (exclusive && n >= max) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(FieldError {
                field: field.into(),
                message: format!("Invalid value: {value}: {field} in body should be {rel} {max}"),
            });
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("int32")
        && let Some(i) = value.as_i64()
        && i32::try_from(i).is_err()
    {
        errors.push(FieldError {
            field: field.into(),
            message: format!("Invalid value: {value}: {field} must fit in a 32-bit integer"),
        });
    }
}

fn check_length(schema: &Value, value: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let Some(s) = value.as_str() else { return };
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        errors.push(FieldError {
            field: field.into(),
            message: format!(
                "Invalid value: \"{s}\": {field} in body should be at least {min} chars long"
            ),
        });
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errors.push(FieldError {
            field: field.into(),
            message: format!("Too long: may not be more than {max} characters"),
        });
    }
}

fn check_items(schema: &Value, value: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let Some(items) = value.as_array() else {
        return;
    };
    let len = items.len() as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && len < min
    {
        errors.push(FieldError {
            field: field.into(),
            message: format!(
                "Invalid value: {len}: {field} in body should have at least {min} items"
            ),
        });
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && len > max
    {
        errors.push(FieldError {
            field: field.into(),
            message: format!("Too many: {len}: must have at most {max} items"),
        });
    }
}
