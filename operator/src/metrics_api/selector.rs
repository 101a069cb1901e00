//! Label selectors in their string form (`a=b,c!=d,e in (f,g),!h`), as the HorizontalPodAutoscaler
//! sends them in `labelSelector`.

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<(String, Op)>);

impl Selector {
    /// Parses the string form; the error names the term that is not understood.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_term(term)?);
        }
        Ok(Self(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(key, op)| {
            let value = labels.get(key);
            match op {
                Op::Equals(v) => value == Some(v),
                Op::NotEquals(v) => value != Some(v),
                Op::In(vs) => value.is_some_and(|x| vs.contains(x)),
                Op::NotIn(vs) => value.is_none_or(|x| !vs.contains(x)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// Splits on the commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

fn parse_term(term: &str) -> Result<(String, Op), String> {
    let bad = || {
        format!(
            "label selector term {term:?} is not one of key=value, key==value, key!=value, \
             key in (v1,v2), key notin (v1,v2), key, !key"
        )
    };
    let key = |k: &str| {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            Err(bad())
        } else {
            Ok(k.to_string())
        }
    };
    if let Some(k) = term.strip_prefix('!') {
        return Ok((key(k)?, Op::DoesNotExist));
    }
    for (word, set_op) in [(" notin ", true), (" in ", false)] {
        if let Some((k, rest)) = term.split_once(word) {
            let values = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?
                .split(',')
                .map(|v| v.trim().to_string())
                .collect();
            let op = if set_op {
                Op::NotIn(values)
            } else {
                Op::In(values)
            };
            return Ok((key(k)?, op));
        }
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok((key(k)?, Op::NotEquals(v.trim().to_string())));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok((key(k)?, Op::Equals(v.trim().to_string())));
    }
    if term.contains(['(', ')', '<', '>']) {
        return Err(bad());
    }
    Ok((key(term)?, Op::Exists))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn every_operator_of_the_string_form() {
        let l = labels(&[("app", "agent"), ("tier", "web"), ("canary", "")]);
        for (sel, want) in [
            ("", true),
            ("app=agent", true),
            ("app==agent", true),
            ("app=other", false),
            ("app!=other", true),
            ("missing!=x", true),
            ("app in (agent, x)", true),
            ("app in (x,y)", false),
            ("tier notin (db)", true),
            ("tier notin (web)", false),
            ("missing notin (web)", true),
            ("canary", true),
            ("!canary", false),
            ("!missing", true),
            ("app=agent,tier in (web,api),!missing", true),
            ("app=agent,tier=db", false),
        ] {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn malformed_terms_are_named() {
        for sel in ["app in agent", "a b", "x in (a", "=v"] {
            let err = Selector::parse(sel).expect_err(sel);
            assert!(err.contains("label selector term"), "{sel}: {err}");
        }
    }
}
