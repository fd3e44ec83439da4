//! Building `content` (text, markdown, sections) from sections, the same way
//! for every vendor, so `text` never carries markup and `markdown` is clean;
//! and sections from what vendors write: [`html`], [`markdown`].

pub mod html;
pub mod markdown;

use crate::canonical::{Content, Section};

impl Content {
    /// Prose paragraphs (rendered as paragraphs, and kept as one untitled
    /// section of items) followed by `sections`.
    pub fn from_prose(paragraphs: Vec<String>, sections: Vec<Section>) -> Self {
        if paragraphs.is_empty() {
            return Self::from_sections(sections);
        }
        let rest = Self::from_sections(sections);
        let mut text = paragraphs.join("\n\n");
        let mut markdown = paragraphs.iter().map(|p| escape_markdown(p)).collect::<Vec<_>>().join("\n\n");
        if !rest.text.is_empty() {
            text.push_str("\n\n");
            text.push_str(&rest.text);
            markdown.push_str("\n\n");
            markdown.push_str(&rest.markdown);
        }
        let mut all = vec![Section { title: None, items: paragraphs }];
        all.extend(rest.sections);
        Self { text, markdown, sections: all }
    }

    /// Renders `text` and `markdown` from the sections, dropping empty ones.
    pub fn from_sections(sections: Vec<Section>) -> Self {
        let sections: Vec<Section> =
            sections.into_iter().filter(|s| s.title.is_some() || !s.items.is_empty()).collect();
        let mut text = String::new();
        let mut markdown = String::new();
        for section in &sections {
            if !text.is_empty() {
                text.push_str("\n\n");
                markdown.push_str("\n\n");
            }
            if let Some(title) = &section.title {
                text.push_str(title);
                markdown.push_str("## ");
                markdown.push_str(&escape_markdown(title));
                if !section.items.is_empty() {
                    text.push('\n');
                    markdown.push_str("\n\n");
                }
            }
            for (i, item) in section.items.iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                    markdown.push('\n');
                }
                text.push_str("- ");
                text.push_str(item);
                markdown.push_str("- ");
                markdown.push_str(&escape_markdown(item));
            }
        }
        Self { text, markdown, sections }
    }
}

/// Backslash-escapes the characters that would turn plain text into markdown
/// (emphasis, code, links) or raw HTML.
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Collapses runs of whitespace into single spaces and trims.
pub fn normalize_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_markdown() {
        let c = Content::from_sections(vec![
            Section { title: Some("Call Summary".into()), items: vec!["a *b*".into(), "c".into()] },
            Section { title: None, items: vec![] },
            Section { title: None, items: vec!["loose".into()] },
        ]);
        assert_eq!(c.sections.len(), 2);
        assert_eq!(c.text, "Call Summary\n- a *b*\n- c\n\n- loose");
        assert_eq!(c.markdown, "## Call Summary\n\n- a \\*b\\*\n- c\n\n- loose");
    }

    #[test]
    fn prose_renders_as_paragraphs_before_sections() {
        let c = Content::from_prose(
            vec!["One *two*.".into(), "Three.".into()],
            vec![Section { title: Some("T".into()), items: vec!["i".into()] }],
        );
        assert_eq!(c.text, "One *two*.\n\nThree.\n\nT\n- i");
        assert_eq!(c.markdown, "One \\*two\\*.\n\nThree.\n\n## T\n\n- i");
        assert_eq!(c.sections.len(), 2);
        assert_eq!(c.sections[0].title, None);
    }
}
