//! ElevateAI's answers → canonical content and `data`, one kind at a time.
//!
//! The vendor's field names live only in [`TABLE`], the built-in JSONPath
//! defaults that a provider's `mappings:` overrides. Shapes marked [assumption]
//! are not published by ElevateAI (see `fixtures/README.md`); the mapping is
//! where ops correct them for the real vendor without a rebuild.

use serde_json::{Map, Value, json};

use crate::canonical::{Content, Kind, Section};
use crate::error::ProviderError;
use crate::mapping::{SectionMapping, SectionSpec, sections_from_plain};

/// The built-in mapping: one section per kind, plus `ask` for questions.
pub const TABLE: &[SectionSpec] = &[
    // [doc] {"summary": "..."}
    SectionSpec { name: "summary", fields: &[("text", Some("$.summary"))], content: true },
    // [doc] {"reasons", "actionsTakenByAgent", "entities": [{"type","value"}], "isResolved"}
    SectionSpec {
        name: "details",
        fields: &[
            ("reasons", Some("$.reasons[*]")),
            ("actions_taken", Some("$.actionsTakenByAgent[*]")),
            ("entities", Some("$.entities[*]")),
            ("entities.type", Some("$.type")),
            ("entities.value", Some("$.value")),
            ("resolved", Some("$.isResolved")),
        ],
        content: true,
    },
    // [assumption] {"actionItems": [{"description", "owner"}]}
    SectionSpec { name: "action_items", fields: &[("items", Some("$.actionItems[*].description"))], content: true },
    // [assumption] {"coachingPoints": [{"category", "feedback": [...]}]}
    SectionSpec {
        name: "coaching",
        fields: &[
            ("sections", Some("$.coachingPoints[*]")),
            ("sections.title", Some("$.category")),
            ("sections.items", Some("$.feedback[*]")),
        ],
        content: true,
    },
    // [assumption] {"topics": ["..."]}; `data.topics` is `items` unless `topics` is mapped.
    SectionSpec { name: "topics", fields: &[("items", Some("$.topics[*]")), ("topics", None)], content: true },
    // [assumption] {"concerns": [{"concern", "actions": [...], "resolutionStatus"}]}
    SectionSpec {
        name: "composition",
        fields: &[
            ("concerns", Some("$.concerns[*]")),
            ("concerns.concern", Some("$.concern")),
            ("concerns.actions", Some("$.actions[*]")),
            ("concerns.resolution_status", Some("$.resolutionStatus")),
        ],
        content: true,
    },
    // POST ask [doc]: {"answer"}; GET ask [assumption]: {"questions": [{"question","answer","status","askedAt"}]}
    SectionSpec {
        name: "ask",
        fields: &[
            ("answer", Some("$.answer")),
            ("questions", Some("$.questions[*]")),
            ("questions.question", Some("$.question")),
            ("questions.answer", Some("$.answer")),
            ("questions.status", Some("$.status")),
            ("questions.asked_at", Some("$.askedAt")),
        ],
        content: false,
    },
];

/// Maps one kind's answer. Fails (502) when none of the kind's expressions
/// selects anything: the vendor changed its shape and the mapping needs an update.
pub fn map_kind(kind: Kind, m: &SectionMapping, root: &Value) -> Result<(Content, Option<Value>), ProviderError> {
    if !selects_anything(m, root) {
        return Err(ProviderError::bad_answer(
            200,
            &format!(
                "an answer in which the `{}` mapping finds nothing (check mappings.{})",
                kind.as_str(),
                kind.as_str()
            ),
        ));
    }
    let prose = m.raw_text("text", root).map(sections_from_plain).unwrap_or_default();
    let prose: Vec<String> = prose.into_iter().flat_map(|s| s.items).collect();
    let (mut sections, data) = match kind {
        Kind::Summary => (Vec::new(), None),
        Kind::Details => details(m, root),
        Kind::ActionItems => (m.listed_sections(root, Some("Action items")), None),
        Kind::Coaching => (m.listed_sections(root, Some("Coaching")), None),
        Kind::Topics => topics(m, root),
        Kind::Composition => composition(m, root),
    };
    if !matches!(kind, Kind::ActionItems | Kind::Coaching | Kind::Topics) {
        // Content fields the kind does not use by default, if ops mapped them.
        sections.extend(m.listed_sections(root, None));
    }
    if kind == Kind::Summary && prose.is_empty() && sections.is_empty() {
        return Err(ProviderError::bad_answer(200, "a summary without text"));
    }
    Ok((Content::from_prose(prose, sections), data))
}

/// Whether any top-level expression of the section selects a node.
fn selects_anything(m: &SectionMapping, root: &Value) -> bool {
    const TOP_LEVEL: &[&str] =
        &["text", "items", "sections", "reasons", "actions_taken", "entities", "resolved", "topics", "concerns"];
    TOP_LEVEL.iter().any(|f| m.expr(f).is_some_and(|e| e.present(root)))
}

fn details(m: &SectionMapping, root: &Value) -> (Vec<Section>, Option<Value>) {
    let reasons = m.strings("reasons", root);
    let actions = m.strings("actions_taken", root);
    let entities: Vec<(String, String)> = m
        .nodes("entities", root)
        .into_iter()
        .filter_map(|e| {
            let value = m.string("entities.value", e)?;
            Some((m.string("entities.type", e).unwrap_or_else(|| "other".to_owned()), value))
        })
        .collect();
    let resolved = m.boolean("resolved", root);
    let mut sections = vec![
        Section { title: Some("Reasons for contact".into()), items: reasons.clone() },
        Section { title: Some("Actions taken".into()), items: actions.clone() },
        Section { title: Some("Entities".into()), items: entities.iter().map(|(t, v)| format!("{t}: {v}")).collect() },
    ];
    if let Some(resolved) = resolved {
        sections
            .push(Section { title: Some("Resolved".into()), items: vec![if resolved { "Yes" } else { "No" }.into()] });
    }
    sections.retain(|s| !s.items.is_empty());
    let data = json!({
        "reasons": reasons,
        "actions_taken": actions,
        "entities": entities.iter().map(|(t, v)| json!({"type": t, "value": v})).collect::<Vec<_>>(),
        "resolved": resolved,
    });
    (sections, Some(data))
}

fn topics(m: &SectionMapping, root: &Value) -> (Vec<Section>, Option<Value>) {
    let sections = m.listed_sections(root, Some("Topics"));
    let topics = if m.has("topics") {
        m.strings("topics", root)
    } else {
        sections.iter().find(|s| s.title.as_deref() == Some("Topics")).map(|s| s.items.clone()).unwrap_or_default()
    };
    (sections, Some(json!({ "topics": topics })))
}

fn composition(m: &SectionMapping, root: &Value) -> (Vec<Section>, Option<Value>) {
    let mut sections = Vec::new();
    let mut concerns = Vec::new();
    for node in m.nodes("concerns", root) {
        let Some(concern) = m.string("concerns.concern", node) else { continue };
        let actions = m.strings("concerns.actions", node);
        let status = m.string("concerns.resolution_status", node).map(|s| snake_case(&s));
        let mut items = actions.clone();
        if let Some(status) = &status {
            items.push(format!("Resolution: {}", status.replace('_', " ")));
        }
        sections.push(Section { title: Some(concern.clone()), items });
        let mut entry = Map::new();
        entry.insert("concern".into(), json!(concern));
        entry.insert("actions".into(), json!(actions));
        entry.insert("resolution_status".into(), json!(status));
        concerns.push(Value::Object(entry));
    }
    (sections, Some(json!({ "concerns": concerns })))
}

/// `partiallyResolved`, `Partially Resolved`, `partially-resolved` → `partially_resolved`.
fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut previous_lower = false;
    for c in s.trim().chars() {
        if c.is_uppercase() && previous_lower {
            out.push('_');
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
            previous_lower = false;
        }
    }
    out.trim_end_matches('_').to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::mapping::Mappings;

    fn defaults() -> Mappings {
        Mappings::build(TABLE, &BTreeMap::new()).expect("built-in mapping compiles")
    }

    #[test]
    fn resolution_statuses_become_snake_case() {
        assert_eq!(snake_case("partiallyResolved"), "partially_resolved");
        assert_eq!(snake_case("Partially Resolved"), "partially_resolved");
        assert_eq!(snake_case("UNRESOLVED"), "unresolved");
        assert_eq!(snake_case("resolved"), "resolved");
    }

    #[test]
    fn details_fill_data_and_sections() {
        let root = json!({"reasons": ["Double charge"], "actionsTakenByAgent": ["Refunded"],
            "entities": [{"type": "amount", "value": "$42"}, {"value": "March"}], "isResolved": true});
        let (content, data) = map_kind(Kind::Details, defaults().section("details"), &root).expect("maps");
        assert_eq!(
            data,
            Some(json!({"reasons": ["Double charge"], "actions_taken": ["Refunded"],
                "entities": [{"type": "amount", "value": "$42"}, {"type": "other", "value": "March"}], "resolved": true}))
        );
        let titles: Vec<_> = content.sections.iter().filter_map(|s| s.title.as_deref()).collect();
        assert_eq!(titles, ["Reasons for contact", "Actions taken", "Entities", "Resolved"]);
    }

    #[test]
    fn a_renamed_field_is_a_provider_error_not_an_empty_result() {
        let err = map_kind(Kind::Summary, defaults().section("summary"), &json!({"summaryText": "x"})).unwrap_err();
        assert!(err.to_string().contains("mappings.summary"), "{err}");
        assert!(map_kind(Kind::Topics, defaults().section("topics"), &json!({"topics": []})).is_ok(), "empty is fine");
        assert!(map_kind(Kind::ActionItems, defaults().section("action_items"), &json!({"actionItems": []})).is_ok());
        assert!(map_kind(Kind::Topics, defaults().section("topics"), &json!({"subjects": ["a"]})).is_err());
    }
}
