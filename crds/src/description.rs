//! The schema's descriptions as `kubectl explain` shows them.
//!
//! Doc comments become descriptions with their line breaks, wrapped at 100 columns for the
//! source; `kubectl explain` wraps every line again at its own width and keeps those breaks,
//! which leaves ragged half-lines. [`unwrap_descriptions`] joins the lines of each paragraph,
//! keeping blank lines between paragraphs and list items on lines of their own (the
//! Kubernetes types' own descriptions have both).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// Unwraps the description of `schema` and of every schema below it.
pub fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(d) = schema.description.as_mut() {
        *d = unwrap(d);
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten());
    for child in children {
        unwrap_descriptions(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(s)) => unwrap_descriptions(s),
        Some(JSONSchemaPropsOrArray::Schemas(list)) => {
            list.iter_mut().for_each(unwrap_descriptions)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(s)) = schema.additional_properties.as_mut() {
        unwrap_descriptions(s);
    }
}

/// Joins the lines of each paragraph of `text` with a space, except around a list item.
fn unwrap(text: &str) -> String {
    let is_item = |line: &str| line.trim_start().starts_with(['-', '*']);
    text.split("\n\n")
        .map(|paragraph| {
            let mut out = String::with_capacity(paragraph.len());
            let mut after_item = false;
            for (i, line) in paragraph.split('\n').enumerate() {
                let item = is_item(line);
                let keep_break = item || after_item;
                if i > 0 {
                    out.push(if keep_break { '\n' } else { ' ' });
                }
                out.push_str(if keep_break { line } else { line.trim_start() });
                after_item = item;
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::unwrap;

    #[test]
    fn lines_of_a_paragraph_are_joined_and_paragraphs_and_list_items_kept() {
        assert_eq!(
            unwrap("Port the agent listens on; it must\ndiffer from `spec.port`."),
            "Port the agent listens on; it must differ from `spec.port`."
        );
        assert_eq!(unwrap("One.\n\nTwo\nlines."), "One.\n\nTwo lines.");
        assert_eq!(
            unwrap("Example:\n  * double the pods\n  * add 4 pods\nNo stabilization.\nAt all."),
            "Example:\n  * double the pods\n  * add 4 pods\nNo stabilization. At all."
        );
        assert_eq!(unwrap("one line"), "one line");
    }
}
