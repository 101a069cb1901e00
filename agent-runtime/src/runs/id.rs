//! The run id of a request: the body's `run_id`, else the `Idempotency-Key` header, else a
//! generated one (see the module docs of [`super`]).

use crate::store::RunId;

/// Why a request's run id was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRunId(pub String);

/// Picks the run id of a request (see the module docs). Pure.
pub fn resolve_run_id(body: Option<&str>, header: Option<&str>) -> Result<RunId, BadRunId> {
    let parse =
        |source: &str, id: &str| RunId::parse(id).map_err(|e| BadRunId(format!("{source}: {e}")));
    match (body, header) {
        (Some(b), Some(h)) if b != h => Err(BadRunId(format!(
            "run_id {:?} and the Idempotency-Key header {:?} differ; send one, or the same \
             value in both",
            b.chars().take(40).collect::<String>(),
            h.chars().take(40).collect::<String>(),
        ))),
        (Some(b), _) => parse("run_id", b),
        (None, Some(h)) => parse("run_id (Idempotency-Key header)", h),
        (None, None) => Ok(RunId::generate()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_comes_from_body_or_header_and_they_must_agree() {
        assert_eq!(
            resolve_run_id(Some("a-1"), None).map(|r| r.to_string()),
            Ok("a-1".to_owned())
        );
        assert_eq!(
            resolve_run_id(None, Some("h-1")).map(|r| r.to_string()),
            Ok("h-1".to_owned())
        );
        assert_eq!(
            resolve_run_id(Some("same"), Some("same")).map(|r| r.to_string()),
            Ok("same".to_owned())
        );
        let conflict = resolve_run_id(Some("a"), Some("b"));
        assert!(
            matches!(&conflict, Err(BadRunId(m)) if m.contains("differ")),
            "{conflict:?}"
        );
        let bad = resolve_run_id(Some("has space"), None);
        assert!(
            matches!(&bad, Err(BadRunId(m)) if m.starts_with("run_id")),
            "{bad:?}"
        );
        let bad = resolve_run_id(None, Some("x/y"));
        assert!(
            matches!(&bad, Err(BadRunId(m)) if m.contains("Idempotency-Key")),
            "{bad:?}"
        );
        let generated = resolve_run_id(None, None).map(|r| r.to_string());
        assert!(
            matches!(&generated, Ok(id) if id.starts_with("run-")),
            "{generated:?}"
        );
    }
}
