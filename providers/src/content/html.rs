//! An HTML summary → canonical sections: Yeastar's answers, and `type: http`'s
//! `content_format: html`.
//!
//! Yeastar writes `<p>Title</p><ul><li>item</li>...</ul>` per section. A `<p>`
//! (or heading) followed by a list is a title; its `<li>`s are the items. A `<p>`
//! not followed by a list is prose and becomes an item. Nested lists are items
//! too. Text outside any element is one item per line.
//!
//! One pass over the tokens of a WHATWG-compliant tokenizer (html5gum): entities
//! are decoded by it, tags never reach the output, and no DOM is built — a
//! summary is small and flat, and this runs on every vendor round trip.

use html5gum::{Token, Tokenizer};

use crate::canonical::Section;
use crate::content::normalize_whitespace;

/// Parses the summary HTML into sections.
pub fn sections_from_html(html: &str) -> Vec<Section> {
    let mut walker = Walker::default();
    for Ok(token) in Tokenizer::new(html) {
        match token {
            Token::StartTag(tag) => walker.start(&tag.name),
            Token::EndTag(tag) => walker.end(&tag.name),
            Token::String(text) => walker.text(&String::from_utf8_lossy(&text)),
            Token::Comment(_) | Token::Doctype(_) | Token::Error(_) => {}
        }
    }
    walker.finish()
}

/// What text is being collected into.
#[derive(Default)]
enum Capture {
    /// Outside any paragraph or item.
    #[default]
    Loose,
    /// Inside `<p>` / `<h1>`..`<h6>`.
    Paragraph(String),
    /// Inside `<li>` (up to a nested list).
    Item(String),
}

#[derive(Default)]
struct Walker {
    sections: Vec<Section>,
    capture: Capture,
    /// A finished paragraph whose role (title or prose) the next token decides.
    pending: Option<String>,
    /// Inside `<script>`, `<style>`, ...: everything is dropped until this end tag.
    skip_until: Option<Vec<u8>>,
}

fn is_heading(name: &[u8]) -> bool {
    matches!(name, b"p" | b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6")
}

impl Walker {
    fn start(&mut self, name: &[u8]) {
        if self.skip_until.is_some() {
            return;
        }
        match name {
            b"script" | b"style" | b"template" | b"head" | b"title" | b"noscript" => {
                self.flush();
                self.skip_until = Some(name.to_vec());
            }
            _ if is_heading(name) => {
                self.flush();
                self.capture = Capture::Paragraph(String::new());
            }
            b"ul" | b"ol" => {
                // Ends an open paragraph or the text of the enclosing item.
                self.flush();
                if let Some(title) = self.pending.take() {
                    self.sections.push(Section { title: Some(title), items: Vec::new() });
                }
            }
            b"li" => {
                self.flush();
                self.capture = Capture::Item(String::new());
            }
            // Line breaks and block boundaries separate words.
            b"br" | b"div" | b"tr" | b"td" | b"th" | b"section" | b"article" => self.space(),
            _ => {}
        }
    }

    fn end(&mut self, name: &[u8]) {
        if let Some(skipped) = &self.skip_until {
            if skipped.as_slice() == name {
                self.skip_until = None;
            }
            return;
        }
        match name {
            _ if is_heading(name) => self.flush(),
            b"li" | b"ul" | b"ol" => self.flush(),
            b"br" | b"div" | b"td" | b"th" => self.space(),
            _ => {}
        }
    }

    fn text(&mut self, text: &str) {
        if self.skip_until.is_some() {
            return;
        }
        match &mut self.capture {
            Capture::Paragraph(buf) | Capture::Item(buf) => buf.push_str(text),
            Capture::Loose => {
                for line in text.lines() {
                    let line = normalize_whitespace(line);
                    if !line.is_empty() {
                        self.settle_pending_as_prose();
                        self.item(line);
                    }
                }
            }
        }
    }

    fn space(&mut self) {
        if let Capture::Paragraph(buf) | Capture::Item(buf) = &mut self.capture {
            buf.push(' ');
        }
    }

    /// Ends the current paragraph (it becomes pending) or item (it is added).
    fn flush(&mut self) {
        match std::mem::take(&mut self.capture) {
            Capture::Loose => {}
            Capture::Paragraph(buf) => {
                let text = normalize_whitespace(&buf);
                if !text.is_empty() {
                    self.settle_pending_as_prose();
                    self.pending = Some(text);
                }
            }
            Capture::Item(buf) => {
                let text = normalize_whitespace(&buf);
                self.settle_pending_as_prose();
                if !text.is_empty() {
                    self.item(text);
                }
            }
        }
    }

    /// A paragraph not followed by a list is prose: an item of the current
    /// section, or of a new untitled one after a titled section without items.
    fn settle_pending_as_prose(&mut self) {
        if let Some(text) = self.pending.take() {
            match self.sections.last_mut() {
                Some(section) if !section.items.is_empty() || section.title.is_none() => section.items.push(text),
                _ => self.sections.push(Section { title: None, items: vec![text] }),
            }
        }
    }

    fn item(&mut self, item: String) {
        match self.sections.last_mut() {
            Some(section) => section.items.push(item),
            None => self.sections.push(Section { title: None, items: vec![item] }),
        }
    }

    fn finish(mut self) -> Vec<Section> {
        self.flush();
        self.settle_pending_as_prose();
        self.sections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles(sections: &[Section]) -> Vec<Option<&str>> {
        sections.iter().map(|s| s.title.as_deref()).collect()
    }

    #[test]
    fn decodes_entities_and_drops_markup() {
        let sections = sections_from_html(
            "<p>Notes &amp; more</p><ul><li>Said &quot;hi&quot; <b>loudly</b><br>then&nbsp;left</li>\
             <li>outer<ul><li>inner</li></ul></li></ul><script>alert(1)</script><p>A closing paragraph.</p>",
        );
        assert_eq!(titles(&sections), [Some("Notes & more")]);
        assert_eq!(sections[0].items, ["Said \"hi\" loudly then left", "outer", "inner", "A closing paragraph."]);
    }

    #[test]
    fn plain_text_becomes_items() {
        let sections = sections_from_html("first line\nsecond line");
        assert_eq!(sections, [Section { title: None, items: vec!["first line".into(), "second line".into()] }]);
    }

    #[test]
    fn unclosed_paragraphs_and_items_still_map() {
        let sections = sections_from_html("<p>Title<ul><li>one<li>two</ul><p>Next</p><ol><li>three</ol>");
        assert_eq!(titles(&sections), [Some("Title"), Some("Next")]);
        assert_eq!(sections[0].items, ["one", "two"]);
        assert_eq!(sections[1].items, ["three"]);
    }

    #[test]
    fn malformed_html_never_leaks_markup() {
        for html in ["<p>a <b>b", "<ul><li>x</ul></li></p>", "<p>&lt;script&gt;</p>", "<<p>>", "<style>p{}</style>text"]
        {
            for section in sections_from_html(html) {
                for s in section.title.iter().chain(section.items.iter()) {
                    assert!(
                        !s.contains("<p") && !s.contains("<b") && !s.contains("<li") && !s.contains("p{}"),
                        "{html} → {s}"
                    );
                }
            }
        }
        assert_eq!(
            sections_from_html("<p>&lt;script&gt;</p>")[0].items,
            ["<script>"],
            "decoded text is text, not markup"
        );
    }

    #[test]
    fn prose_only_is_an_untitled_section() {
        let sections = sections_from_html("<p>One.</p><p>Two.</p>");
        assert_eq!(sections, [Section { title: None, items: vec!["One.".into(), "Two.".into()] }]);
    }
}
