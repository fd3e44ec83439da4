//! Response mappings as data: which part of a vendor's answer fills which
//! canonical field is a JSONPath expression (RFC 9535, jsonpath-rust), with
//! built-in defaults per vendor that ops override per provider in YAML:
//!
//! ```yaml
//! providers:
//!   analytics:
//!     type: elevateai
//!     mappings:
//!       summary: { text: "$.summaryText" }      # the vendor renamed `summary`
//! ```
//!
//! A vendor's mapping is a table of *sections* — one per kind it produces, plus
//! `ask` for questions — each with the fields it takes and their defaults
//! ([`SectionSpec`]). Every expression is compiled once, when the provider is
//! built; a bad one, an unknown section or an unknown field is a config error
//! naming its path (`mappings.topics.items: ...`), which `check-config` prints.
//!
//! Fields are evaluated against the vendor's JSON answer (`$` is its root),
//! except the fields of a list of objects, written `<list>.<field>`
//! (`sections.title`, `entities.type`, `concerns.actions`): those are
//! evaluated against each object the list's expression selected.
//!
//! What a field gives is read leniently, because vendors drift:
//! - a list of strings ([`SectionMapping::strings`]): every selected string
//!   (numbers and booleans as text); a selected array gives its elements, so
//!   `$.reasons` and `$.reasons[*]` mean the same; objects and nulls are skipped;
//! - one string or value: the first selected;
//! - a list of objects ([`SectionMapping::nodes`]): every selected node, or the
//!   elements of a single selected array.

use std::collections::BTreeMap;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use crate::canonical::Section;
use crate::content::normalize_whitespace;

/// The fields every kind takes to build `content`:
/// - `text`: the prose, read in the vendor's own format (markdown, HTML, plain);
/// - `items`: a list of strings, one section (titled by `title`, if it gives one);
/// - `sections`: a list of objects, each a section with `sections.title` and `sections.items`.
pub const CONTENT_FIELDS: &[&str] = &["text", "title", "items", "sections", "sections.title", "sections.items"];

/// One section of a vendor's mapping table: its name (a kind, or `ask`) and its
/// fields with their built-in expressions (`None`: the field can be mapped but
/// is not by default).
#[derive(Debug, Clone, Copy)]
pub struct SectionSpec {
    pub name: &'static str,
    pub fields: &'static [(&'static str, Option<&'static str>)],
    /// Whether the content fields ([`CONTENT_FIELDS`]) are accepted too.
    pub content: bool,
}

/// A compiled JSONPath expression.
#[derive(Debug, Clone)]
pub struct Expr {
    source: Box<str>,
    query: JpQuery,
    /// The part before the first `[*]` (`$.topics` of `$.topics[*]`): an empty
    /// list selects no nodes, yet the answer has the field.
    container: Option<JpQuery>,
}

impl Expr {
    /// Compiles an expression; the error is one line, fit for a config message.
    pub fn compile(source: &str) -> Result<Self, String> {
        let query = parse_json_path(source).map_err(|e| one_line(&e.to_string()))?;
        let container = source.find("[*]").and_then(|at| parse_json_path(&source[..at]).ok());
        Ok(Self { source: source.into(), query, container })
    }

    /// Whether the answer has what the expression points at (an empty list counts).
    pub fn present(&self, root: &Value) -> bool {
        !self.nodes(root).is_empty()
            || self.container.as_ref().is_some_and(|c| js_path_process(c, root).is_ok_and(|n| !n.is_empty()))
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it selects at most one node by its form (RFC 9535 §2.3.5.1: names
    /// and indexes only; no wildcard, slice, filter, union or descendant).
    pub fn is_singular(&self) -> bool {
        let mut in_quotes = None;
        let mut depth = 0_u32;
        for c in self.source.chars() {
            if let Some(quote) = in_quotes {
                if c == quote {
                    in_quotes = None;
                }
                continue;
            }
            match c {
                '\'' | '"' => in_quotes = Some(c),
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                '*' | '?' => return false,
                ':' | ',' if depth > 0 => return false,
                _ => {}
            }
        }
        !self.source.contains("..")
    }

    /// The nodes it selects in `root` (none if it selects nothing or cannot apply).
    pub fn nodes<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        js_path_process(&self.query, root).map(|refs| refs.into_iter().map(|r| r.val).collect()).unwrap_or_default()
    }
}

/// A parser error on one line: pest's multi-line report is reduced to its
/// position and its `= expected ...` line.
fn one_line(message: &str) -> String {
    let position = message.lines().find_map(|l| l.split_once("--> ")).and_then(|(_, p)| p.trim().split(':').nth(1));
    let expected = message.lines().find_map(|l| l.trim().strip_prefix("= "));
    match (position, expected) {
        (Some(col), Some(what)) => format!("{what} at character {col}"),
        _ => normalize_whitespace(message),
    }
}

/// The compiled fields of one section.
#[derive(Debug, Clone, Default)]
pub struct SectionMapping {
    fields: Vec<(Box<str>, Expr)>,
}

impl SectionMapping {
    /// The expression of a field, if it is mapped.
    pub fn expr(&self, field: &str) -> Option<&Expr> {
        self.fields.iter().find(|(name, _)| &**name == field).map(|(_, e)| e)
    }

    /// Every mapped field with its expression, in the order written.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Expr)> {
        self.fields.iter().map(|(name, e)| (&**name, e))
    }

    /// Whether a field is mapped.
    pub fn has(&self, field: &str) -> bool {
        self.expr(field).is_some()
    }

    /// Every string the field selects in `node`, whitespace-normalized, empty ones dropped.
    pub fn strings(&self, field: &str, node: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(expr) = self.expr(field) {
            for v in expr.nodes(node) {
                push_strings(v, &mut out);
            }
        }
        out
    }

    /// The first string the field selects.
    pub fn string(&self, field: &str, node: &Value) -> Option<String> {
        self.strings(field, node).into_iter().next()
    }

    /// The raw text (line breaks kept) of the first string the field selects.
    pub fn raw_text<'a>(&self, field: &str, node: &'a Value) -> Option<&'a str> {
        self.expr(field)?.nodes(node).into_iter().find_map(Value::as_str)
    }

    /// The first value the field selects.
    pub fn value<'a>(&self, field: &str, node: &'a Value) -> Option<&'a Value> {
        self.expr(field)?.nodes(node).into_iter().find(|v| !v.is_null())
    }

    /// The first value the field selects, read as a boolean (`true`, `"yes"`, `1`, ...).
    pub fn boolean(&self, field: &str, node: &Value) -> Option<bool> {
        match self.value(field, node)? {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => n.as_f64().map(|f| f != 0.0),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "1" | "resolved" => Some(true),
                "false" | "no" | "n" | "0" | "unresolved" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// The nodes of a list field: every selected node, or the elements of a single selected array.
    pub fn nodes<'a>(&self, field: &str, node: &'a Value) -> Vec<&'a Value> {
        let Some(expr) = self.expr(field) else { return Vec::new() };
        let nodes = expr.nodes(node);
        match nodes.as_slice() {
            [Value::Array(items)] => items.iter().collect(),
            _ => nodes.into_iter().filter(|v| !v.is_null()).collect(),
        }
    }

    /// The content fields as sections: the `sections` list, then the `items`
    /// section (titled by `title`, else `default_title`).
    /// (`text` is read by the adapter, which knows its format.)
    pub fn listed_sections(&self, root: &Value, default_title: Option<&str>) -> Vec<Section> {
        let mut sections = Vec::new();
        for node in self.nodes("sections", root) {
            let title = self.string("sections.title", node);
            let items = self.strings("sections.items", node);
            if title.is_some() || !items.is_empty() {
                sections.push(Section { title, items });
            }
        }
        let items = self.strings("items", root);
        if !items.is_empty() {
            let title = self.string("title", root).or_else(|| default_title.map(str::to_owned));
            sections.push(Section { title, items });
        }
        sections
    }
}

fn push_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            let s = normalize_whitespace(s);
            if !s.is_empty() {
                out.push(s);
            }
        }
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(b.to_string()),
        Value::Array(items) => {
            for item in items {
                if !item.is_array() {
                    push_strings(item, out);
                }
            }
        }
        Value::Object(_) | Value::Null => {}
    }
}

/// A provider's compiled mapping: every section of its vendor's table, defaults
/// overridden by the provider's `mappings:`.
#[derive(Debug, Clone, Default)]
pub struct Mappings {
    sections: Vec<(Box<str>, SectionMapping)>,
}

impl Mappings {
    /// Compiles the vendor's table with the provider's overrides. Errors name
    /// their path under the provider (`mappings.topics.items: ...`); all are reported.
    pub fn build(
        table: &'static [SectionSpec],
        overrides: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        for (section, fields) in overrides {
            let Some(spec) = table.iter().find(|s| s.name == section) else {
                let names: Vec<&str> = table.iter().map(|s| s.name).collect();
                errors.push(format!(
                    "mappings.{section}: this provider has no `{section}` to map; it maps {}",
                    names.join(", ")
                ));
                continue;
            };
            for field in fields.keys() {
                if field_name(spec, field).is_none() {
                    errors.push(format!(
                        "mappings.{section}.{field}: unknown field; `{section}` takes {}",
                        spec_fields(spec).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        let mut sections = Vec::with_capacity(table.len());
        for spec in table {
            let overridden = overrides.get(spec.name);
            let mut mapping = SectionMapping::default();
            for field in spec_fields(spec) {
                let default = spec.fields.iter().find(|(f, _)| *f == field).and_then(|(_, d)| *d);
                let source = overridden.and_then(|o| o.get(field)).map(String::as_str).or(default);
                let Some(source) = source else { continue };
                match Expr::compile(source) {
                    Ok(expr) => mapping.fields.push((field.into(), expr)),
                    Err(e) => errors.push(format!(
                        "mappings.{}.{field}: `{source}` is not a valid JSONPath expression: {e}",
                        spec.name
                    )),
                }
            }
            sections.push((spec.name.into(), mapping));
        }
        if errors.is_empty() { Ok(Self { sections }) } else { Err(errors) }
    }

    /// Compiles a mapping that has no built-in table (`type: http`): one section
    /// per name of `sections` (its kinds), each required, each taking the content
    /// fields ([`CONTENT_FIELDS`]) and any data field (`a-z`, `0-9`, `_`).
    pub fn build_declared(
        sections: &[&str],
        mappings: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        for section in mappings.keys() {
            if !sections.contains(&section.as_str()) {
                errors.push(format!(
                    "mappings.{section}: `{section}` is not one of this provider's kinds ({})",
                    sections.join(", ")
                ));
            }
        }
        let mut compiled = Vec::with_capacity(sections.len());
        for name in sections {
            let fields = mappings.get(*name).filter(|f| !f.is_empty());
            let Some(fields) = fields else {
                errors.push(format!(
                    "mappings.{name}: missing: every kind needs a mapping (`text`, `items`, `sections` or data fields)"
                ));
                continue;
            };
            let mut mapping = SectionMapping::default();
            for (field, source) in fields {
                let data_field = !field.is_empty()
                    && field.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && field.as_bytes()[0].is_ascii_lowercase();
                if !CONTENT_FIELDS.contains(&field.as_str()) && !data_field {
                    errors.push(format!(
                        "mappings.{name}.{field}: a field is one of {} or a data field named with a-z, 0-9 and `_`",
                        CONTENT_FIELDS.join(", ")
                    ));
                    continue;
                }
                match Expr::compile(source) {
                    Ok(expr) => mapping.fields.push((field.as_str().into(), expr)),
                    Err(e) => {
                        errors.push(format!(
                            "mappings.{name}.{field}: `{source}` is not a valid JSONPath expression: {e}"
                        ));
                    }
                }
            }
            compiled.push(((*name).into(), mapping));
        }
        if errors.is_empty() { Ok(Self { sections: compiled }) } else { Err(errors) }
    }

    /// Builds an adapter with its compiled mapping, reporting the mapping's
    /// problems and the adapter's own together.
    pub fn build_adapter<T>(
        table: &'static [SectionSpec],
        overrides: &BTreeMap<String, BTreeMap<String, String>>,
        build: impl FnOnce(Self) -> Result<T, String>,
    ) -> Result<T, Vec<String>> {
        let (mappings, mut errors) = match Self::build(table, overrides) {
            Ok(m) => (m, Vec::new()),
            Err(e) => (Self::default(), e),
        };
        match build(mappings) {
            Ok(adapter) if errors.is_empty() => Ok(adapter),
            Ok(_) => Err(errors),
            Err(e) => {
                errors.insert(0, e);
                Err(errors)
            }
        }
    }

    /// The compiled section (a kind's name, or `ask`); empty if the table has none.
    pub fn section(&self, name: &str) -> &SectionMapping {
        static EMPTY: SectionMapping = SectionMapping { fields: Vec::new() };
        self.sections.iter().find(|(n, _)| &**n == name).map_or(&EMPTY, |(_, m)| m)
    }
}

/// Every field a section takes: its own, then the content fields if it takes them.
fn spec_fields(spec: &SectionSpec) -> impl Iterator<Item = &'static str> {
    let content: &'static [&'static str] = if spec.content { CONTENT_FIELDS } else { &[] };
    spec.fields
        .iter()
        .map(|(f, _)| *f)
        .chain(content.iter().copied().filter(|c| !spec.fields.iter().any(|(f, _)| f == c)))
}

fn field_name(spec: &SectionSpec, field: &str) -> Option<&'static str> {
    spec_fields(spec).find(|f| *f == field)
}

/// Plain prose → one untitled section: a paragraph (lines up to a blank line)
/// is one item; lines that start with a bullet (`-`, `*`, `•`, `1.`) are items of their own.
pub fn sections_from_plain(text: &str) -> Vec<Section> {
    let mut items = Vec::new();
    let mut paragraph = String::new();
    let flush = |paragraph: &mut String, items: &mut Vec<String>| {
        let p = normalize_whitespace(paragraph);
        if !p.is_empty() {
            items.push(p);
        }
        paragraph.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            flush(&mut paragraph, &mut items);
        } else if let Some(item) = strip_bullet(trimmed) {
            flush(&mut paragraph, &mut items);
            paragraph.push_str(item);
            flush(&mut paragraph, &mut items);
        } else {
            paragraph.push(' ');
            paragraph.push_str(trimmed);
        }
    }
    flush(&mut paragraph, &mut items);
    if items.is_empty() { Vec::new() } else { vec![Section { title: None, items }] }
}

fn strip_bullet(line: &str) -> Option<&str> {
    for bullet in ["- ", "* ", "• "] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return Some(rest);
        }
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=3).contains(&digits) {
        let rest = &line[digits..];
        return rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") "));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TABLE: &[SectionSpec] = &[
        SectionSpec { name: "summary", fields: &[("text", Some("$.summary"))], content: true },
        SectionSpec {
            name: "details",
            fields: &[("reasons", Some("$.reasons[*]")), ("resolved", Some("$.isResolved"))],
            content: true,
        },
        SectionSpec { name: "ask", fields: &[("answer", Some("$.answer"))], content: false },
    ];

    fn overrides(entries: &[(&str, &str, &str)]) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (section, field, expr) in entries {
            out.entry((*section).to_owned()).or_default().insert((*field).to_owned(), (*expr).to_owned());
        }
        out
    }

    #[test]
    fn defaults_apply_and_an_override_replaces_one_field() {
        let m = Mappings::build(TABLE, &overrides(&[("summary", "text", "$.summaryText")])).expect("valid");
        let answer = json!({"summary": "old", "summaryText": "new", "reasons": ["a", " b  c "], "isResolved": "yes"});
        assert_eq!(m.section("summary").string("text", &answer).as_deref(), Some("new"));
        assert_eq!(m.section("details").strings("reasons", &answer), ["a", "b c"]);
        assert_eq!(m.section("details").boolean("resolved", &answer), Some(true));
        assert!(!m.section("nothing").has("text"));
    }

    #[test]
    fn every_bad_entry_is_reported_with_its_path() {
        let errors = Mappings::build(
            TABLE,
            &overrides(&[
                ("summary", "text", "$.["),
                ("summary", "colour", "$.x"),
                ("coaching", "items", "$.x"),
                ("ask", "items", "$.x"),
                ("details", "reasons", "summary"),
            ]),
        )
        .expect_err("invalid");
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(
            errors.iter().any(|e| e.starts_with("mappings.summary.text: `$.[` is not a valid JSONPath")),
            "{errors:#?}"
        );
        assert!(errors.iter().any(|e| e.starts_with("mappings.summary.colour: unknown field")));
        assert!(errors.iter().any(|e| e.starts_with("mappings.coaching: this provider has no `coaching`")));
        assert!(errors.iter().any(|e| e.starts_with("mappings.ask.items: unknown field; `ask` takes answer")));
        assert!(errors.iter().any(|e| e.starts_with("mappings.details.reasons: `summary` is not")));
        assert!(errors.iter().all(|e| !e.contains('\n')), "one line each: {errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("mappings.summary.text: `$.[` is not a valid JSONPath expression: expected")
                    && e.ends_with("at character 3")),
            "{errors:#?}"
        );
    }

    #[test]
    fn list_fields_accept_an_array_or_its_elements() {
        let m = Mappings::build(
            TABLE,
            &overrides(&[
                ("details", "sections", "$.groups"),
                ("details", "sections.title", "$.name"),
                ("details", "sections.items", "$.points"),
                ("details", "items", "$.loose[*]"),
                ("details", "title", "$.heading"),
            ]),
        )
        .expect("valid");
        let answer = json!({
            "groups": [{"name": "One", "points": ["a", 2, true, {"x": 1}, null]}, {"name": null, "points": []}],
            "loose": ["x"], "heading": "Loose"
        });
        let sections = m.section("details").listed_sections(&answer, Some("Default"));
        assert_eq!(
            sections,
            vec![
                Section { title: Some("One".into()), items: vec!["a".into(), "2".into(), "true".into()] },
                Section { title: Some("Loose".into()), items: vec!["x".into()] },
            ]
        );
    }

    #[test]
    fn plain_prose_becomes_paragraph_and_bullet_items() {
        let sections = sections_from_plain("The customer called.\nThey were upset.\n\n- Refund issued\n2. Follow up\n");
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].items, ["The customer called. They were upset.", "Refund issued", "Follow up"]);
        assert!(sections_from_plain("  \n").is_empty());
    }
}
