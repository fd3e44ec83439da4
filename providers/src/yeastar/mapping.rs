//! Yeastar's HTML summary → canonical sections.
//!
//! Yeastar writes `<p>Title</p><ul><li>item</li>...</ul>` per section. A `<p>`
//! (or heading) followed by a list is a title; its `<li>`s are the items. A `<p>`
//! not followed by a list is prose and becomes an item. Entities are decoded by
//! the HTML parser (html5ever via scraper), so no markup or entity survives.

use ego_tree::NodeRef;
use scraper::{Html, Node};

use crate::canonical::Section;
use crate::content::normalize_whitespace;

/// Parses the summary HTML into sections.
pub fn sections_from_html(html: &str) -> Vec<Section> {
    let fragment = Html::parse_fragment(html);
    let mut builder = Builder::default();
    walk(*fragment.root_element(), &mut builder);
    builder.finish()
}

#[derive(Default)]
struct Builder {
    sections: Vec<Section>,
}

impl Builder {
    fn title(&mut self, title: String) {
        self.sections.push(Section { title: Some(title), items: Vec::new() });
    }

    fn item(&mut self, item: String) {
        match self.sections.last_mut() {
            Some(section) => section.items.push(item),
            None => self.sections.push(Section { title: None, items: vec![item] }),
        }
    }

    fn finish(self) -> Vec<Section> {
        self.sections
    }
}

fn is_heading(name: &str) -> bool {
    matches!(name, "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6")
}

fn is_list(name: &str) -> bool {
    matches!(name, "ul" | "ol")
}

fn walk(node: NodeRef<'_, Node>, out: &mut Builder) {
    for child in node.children() {
        match child.value() {
            Node::Element(el) => {
                let name = el.name();
                if matches!(name, "script" | "style" | "template" | "head") {
                    continue;
                }
                if is_heading(name) {
                    let text = text_of(child, false);
                    if text.is_empty() {
                        continue;
                    }
                    if next_element_is_list(child) {
                        out.title(text);
                    } else {
                        // Prose paragraph: an item of the current (or an untitled) section.
                        if out.sections.last().is_some_and(|s| !s.items.is_empty() || s.title.is_none()) {
                            out.item(text);
                        } else {
                            out.sections.push(Section { title: None, items: vec![text] });
                        }
                    }
                } else if name == "li" {
                    let text = text_of(child, true);
                    if !text.is_empty() {
                        out.item(text);
                    }
                    // Nested lists inside an item are items too.
                    for grandchild in child.children() {
                        if let Node::Element(e) = grandchild.value()
                            && is_list(e.name())
                        {
                            walk(grandchild, out);
                        }
                    }
                } else {
                    walk(child, out);
                }
            }
            Node::Text(text) => {
                // Loose text outside any element: one item per line.
                for line in text.lines() {
                    let line = normalize_whitespace(line);
                    if !line.is_empty() {
                        out.item(line);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The text of an element with whitespace collapsed; `skip_lists` leaves out nested lists.
fn text_of(node: NodeRef<'_, Node>, skip_lists: bool) -> String {
    let mut raw = String::new();
    collect_text(node, skip_lists, &mut raw);
    normalize_whitespace(&raw)
}

fn collect_text(node: NodeRef<'_, Node>, skip_lists: bool, out: &mut String) {
    for child in node.children() {
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) => {
                let name = e.name();
                if (skip_lists && is_list(name)) || matches!(name, "script" | "style" | "template") {
                    continue;
                }
                if name == "br" {
                    out.push(' ');
                }
                collect_text(child, skip_lists, out);
                if matches!(name, "p" | "div" | "li") {
                    out.push(' ');
                }
            }
            _ => {}
        }
    }
}

fn next_element_is_list(node: NodeRef<'_, Node>) -> bool {
    let mut next = node.next_sibling();
    while let Some(sibling) = next {
        match sibling.value() {
            Node::Element(e) => return is_list(e.name()),
            Node::Text(t) if t.trim().is_empty() => next = sibling.next_sibling(),
            Node::Comment(_) => next = sibling.next_sibling(),
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles(sections: &[Section]) -> Vec<Option<&str>> {
        sections.iter().map(|s| s.title.as_deref()).collect()
    }

    #[test]
    fn docs_example_has_three_sections_of_three_items() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/getaisummary_docs.json")).unwrap();
        let html = fixture["data"]["dst"]["summary"].as_str().unwrap();
        let sections = sections_from_html(html);
        assert_eq!(titles(&sections), [Some("Call Summary"), Some("Key Points"), Some("Follow-Up Actions")]);
        assert!(sections.iter().all(|s| s.items.len() == 3), "{sections:?}");
        assert_eq!(sections[0].items[0], "Kristin Hale was transferred to a human agent regarding a login issue.");
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
    fn prose_only_is_an_untitled_section() {
        let sections = sections_from_html("<p>One.</p><p>Two.</p>");
        assert_eq!(sections, [Section { title: None, items: vec!["One.".into(), "Two.".into()] }]);
    }
}
