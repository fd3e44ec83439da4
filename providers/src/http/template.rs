//! Request templates of `type: http` providers: strings with placeholders,
//! parsed once when the provider is built and rendered per request.
//!
//! `{conversation.text}`, `{conversation.id}`, `{conversation.party}`,
//! `{conversation.extension_id}`, `{language}`, `{kind}` and, in `job.poll`,
//! `{ref}`; `{{` and `}}` are literal braces. In a path a value is
//! percent-encoded (it stays one segment); query values are encoded by the URL
//! builder; in a JSON body a string that is exactly one placeholder takes the
//! value's JSON type (`extension_id` a number, an absent value `null`).

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::vendor::SummaryRequest;

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Text,
    Id,
    Party,
    ExtensionId,
    Language,
    Kind,
    Ref,
}

impl Var {
    const NAMES: [(&'static str, Self); 7] = [
        ("conversation.text", Self::Text),
        ("conversation.id", Self::Id),
        ("conversation.party", Self::Party),
        ("conversation.extension_id", Self::ExtensionId),
        ("language", Self::Language),
        ("kind", Self::Kind),
        ("ref", Self::Ref),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn names(allow_ref: bool) -> String {
        Self::NAMES
            .iter()
            .filter(|(_, v)| allow_ref || *v != Self::Ref)
            .map(|(n, _)| format!("{{{n}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The values a request is rendered with.
pub struct Values<'a> {
    pub request: Option<&'a SummaryRequest>,
    /// The vendor's own value for the request's language (after `languages`).
    pub language: Option<&'a str>,
    pub kind: &'a str,
    pub job_ref: Option<&'a str>,
}

impl Values<'_> {
    fn text(&self, var: Var) -> Option<String> {
        let c = self.request.map(|r| &r.conversation);
        match var {
            Var::Text => c.and_then(|c| c.text.clone()),
            Var::Id => c.and_then(|c| c.id.clone()),
            Var::Party => c.and_then(|c| c.party).map(|p| p.as_str().to_owned()),
            Var::ExtensionId => c.and_then(|c| c.extension_id).map(|e| e.to_string()),
            Var::Language => self.language.map(str::to_owned),
            Var::Kind => Some(self.kind.to_owned()),
            Var::Ref => self.job_ref.map(str::to_owned),
        }
    }

    fn json(&self, var: Var) -> Value {
        match var {
            Var::ExtensionId => self.request.and_then(|r| r.conversation.extension_id).map_or(Value::Null, Value::from),
            _ => self.text(var).map_or(Value::Null, Value::String),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Var(Var),
}

/// A string with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

/// What a rendered value must be escaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As given (query values, which the URL builder encodes; headers).
    None,
    /// One path segment: `/`, `?`, `#`, `%` and the rest percent-encoded.
    PathSegment,
}

/// RFC 3986 path-segment characters stay; everything else is encoded.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl Template {
    /// Parses `source`; `{ref}` is allowed only where `allow_ref` (the poll).
    pub fn parse(source: &str, allow_ref: bool) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if tail.starts_with('}') {
                return Err(format!("`{source}`: a `}}` without its `{{` (write `}}}}` for a brace)"));
            } else {
                let Some(end) = tail.find('}') else {
                    return Err(format!("`{source}`: a `{{` without its `}}` (write `{{{{` for a brace)"));
                };
                let name = &tail[1..end];
                let var = Var::parse(name.trim()).filter(|v| allow_ref || *v != Var::Ref).ok_or_else(|| {
                    format!("unknown placeholder `{{{name}}}`; placeholders are {}", Var::names(allow_ref))
                })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Var(var));
                rest = &tail[end + 1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Self(pieces))
    }

    /// The placeholders it uses.
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.0.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(*v),
            Piece::Literal(_) => None,
        })
    }

    /// The one placeholder it is, if it is exactly one.
    fn only_var(&self) -> Option<Var> {
        match self.0.as_slice() {
            [Piece::Var(v)] => Some(*v),
            _ => None,
        }
    }

    /// The text with every placeholder's value (an absent value renders empty).
    pub fn render(&self, values: &Values<'_>, escape: Escape) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::Var(v) => {
                    let value = values.text(*v).unwrap_or_default();
                    match escape {
                        Escape::None => out.push_str(&value),
                        Escape::PathSegment => out.extend(utf8_percent_encode(&value, SEGMENT)),
                    }
                }
            }
        }
        out
    }
}

/// A JSON body with placeholders in its strings (keys are taken as written).
#[derive(Debug, Clone, PartialEq)]
pub enum BodyTemplate {
    Value(Value),
    Text(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    /// Parses every string of `body`; errors name the key path (`body.text`).
    pub fn parse(body: &Value, path: &str, allow_ref: bool, errors: &mut Vec<String>) -> Self {
        match body {
            Value::String(s) => match Template::parse(s, allow_ref) {
                Ok(t) => Self::Text(t),
                Err(e) => {
                    errors.push(format!("{path}: {e}"));
                    Self::Value(Value::Null)
                }
            },
            Value::Array(items) => Self::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Self::parse(v, &format!("{path}[{i}]"), allow_ref, errors))
                    .collect(),
            ),
            Value::Object(fields) => Self::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Self::parse(v, &format!("{path}.{k}"), allow_ref, errors)))
                    .collect(),
            ),
            other => Self::Value(other.clone()),
        }
    }

    /// The placeholders it uses.
    pub fn vars(&self) -> Vec<Var> {
        match self {
            Self::Value(_) => Vec::new(),
            Self::Text(t) => t.vars().collect(),
            Self::Array(items) => items.iter().flat_map(Self::vars).collect(),
            Self::Object(fields) => fields.iter().flat_map(|(_, v)| v.vars()).collect(),
        }
    }

    pub fn render(&self, values: &Values<'_>) -> Value {
        match self {
            Self::Value(v) => v.clone(),
            Self::Text(t) => match t.only_var() {
                Some(var) => values.json(var),
                None => Value::String(t.render(values, Escape::None)),
            },
            Self::Array(items) => Value::Array(items.iter().map(|i| i.render(values)).collect()),
            Self::Object(fields) => {
                Value::Object(fields.iter().map(|(k, v)| (k.clone(), v.render(values))).collect::<Map<_, _>>())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::canonical::{Conversation, Kind, Party};

    fn request() -> SummaryRequest {
        SummaryRequest {
            kind: Kind::Summary,
            language: Some("pt-BR".into()),
            conversation: Conversation {
                id: Some("a/b?c d".into()),
                party: Some(Party::Callee),
                extension_id: Some(3202),
                text: Some("Hello \"there\"".into()),
            },
        }
    }

    fn values(req: &SummaryRequest) -> Values<'_> {
        Values { request: Some(req), language: Some("portuguese"), kind: "summary", job_ref: Some("j 1") }
    }

    #[test]
    fn placeholders_render_escaped_for_their_place() {
        let req = request();
        let t = Template::parse("/v2/{conversation.id}/{kind}{{x}}", false).unwrap();
        assert_eq!(t.render(&values(&req), Escape::PathSegment), "/v2/a%2Fb%3Fc%20d/summary{x}");
        let t = Template::parse("{language}-{conversation.party}-{conversation.extension_id}", false).unwrap();
        assert_eq!(t.render(&values(&req), Escape::None), "portuguese-callee-3202");
    }

    #[test]
    fn a_body_string_that_is_one_placeholder_takes_the_values_type() {
        let req = request();
        let mut errors = Vec::new();
        let body = json!({"text": "{conversation.text}", "ext": "{conversation.extension_id}",
                          "label": "ext {conversation.extension_id}", "n": 3, "list": ["{kind}"], "none": "{ref}"});
        let t = BodyTemplate::parse(&body, "request.body", true, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let mut v = values(&req);
        v.job_ref = None;
        assert_eq!(
            t.render(&v),
            json!({"text": "Hello \"there\"", "ext": 3202, "label": "ext 3202", "n": 3, "list": ["summary"], "none": null})
        );
    }

    #[test]
    fn unknown_placeholders_and_lone_braces_are_errors() {
        assert!(Template::parse("/x/{conversation.name}", false).unwrap_err().contains("unknown placeholder"));
        assert!(Template::parse("/x/{ref}", false).unwrap_err().contains("unknown placeholder `{ref}`"));
        assert!(Template::parse("/x/{ref}", true).is_ok());
        assert!(Template::parse("/x/{kind", false).unwrap_err().contains("without its"));
        assert!(Template::parse("/x/kind}", false).unwrap_err().contains("without its"));
        let mut errors = Vec::new();
        BodyTemplate::parse(&json!({"a": {"b": "{nope}"}}), "request.body", false, &mut errors);
        assert!(errors[0].starts_with("request.body.a.b: unknown placeholder `{nope}`"), "{errors:?}");
    }
}
