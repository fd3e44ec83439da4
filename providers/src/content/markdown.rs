//! A markdown summary → canonical sections: CommBox's answers, and `type: http`'s
//! `content_format: markdown`.
//!
//! CommBox answers bullet sections with bold headers:
//! `- **Client reason for contact**:\n - The client noticed ...`. A list item (at
//! any level) led by bold text is a title — the bold text without its trailing
//! `:` — and any text after the bold on that item is the section's first item.
//! Nested items and following plain sibling items are the section's items; deeper
//! nesting is flattened. The vendor indents sub-bullets by one space (CommonMark
//! siblings) or by two or more (nested): both give the same sections. Headings and
//! paragraphs of bold text alone are titles too; text before any title goes into
//! an untitled section.
//!
//! One pass over the events of a CommonMark parser (pulldown-cmark): entities are
//! decoded by it, markup never reaches the output (emphasis keeps its text, links
//! their text, images their alt text) and raw HTML is dropped whole.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::canonical::Section;
use crate::content::normalize_whitespace;

/// CommBox's markdown answer as titled sections of plain-text items.
pub fn sections_from_markdown(markdown: &str) -> Vec<Section> {
    // GFM extensions a language model is likely to write, so their markers
    // (`~~`, `[ ]`, table delimiter rows) are parsed rather than left as text.
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut walker = Walker::default();
    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(tag) => walker.start(&tag),
            Event::End(tag) => walker.end(tag),
            Event::Text(text) | Event::Code(text) | Event::InlineMath(text) | Event::DisplayMath(text) => {
                walker.text(&text);
            }
            Event::SoftBreak | Event::HardBreak => walker.text(" "),
            Event::Rule => walker.flush(),
            Event::Html(_) | Event::InlineHtml(_) | Event::FootnoteReference(_) | Event::TaskListMarker(_) => {}
        }
    }
    walker.finish()
}

/// How a block's text maps once the block ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Text of a list item (up to a nested block): a title when led by bold text.
    Item,
    /// A paragraph outside any list: a title when it is bold text alone.
    Paragraph,
    /// Always a title.
    Heading,
    /// Code blocks and table rows: always an item.
    Verbatim,
}

/// Whether a block starts with bold text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lead {
    /// Nothing but whitespace seen yet.
    Open,
    /// Inside the leading bold text, this many `Strong`s deep.
    Strong(usize),
    /// The leading bold text has ended.
    Titled,
    /// Text came before any bold.
    Plain,
}

/// The text of one block being collected.
struct Block {
    kind: Kind,
    lead: Lead,
    /// The leading bold text.
    title: String,
    /// Everything else, in order after `title`.
    rest: String,
}

impl Block {
    fn new(kind: Kind) -> Self {
        Self { kind, lead: Lead::Open, title: String::new(), rest: String::new() }
    }

    fn is_titled(&self) -> bool {
        matches!(self.lead, Lead::Titled | Lead::Strong(_))
    }

    fn is_blank(&self) -> bool {
        self.title.trim().is_empty() && self.rest.trim().is_empty()
    }

    /// All the block's text, bold or not.
    fn full(&self) -> String {
        normalize_whitespace(&format!("{}{}", self.title, self.rest))
    }
}

#[derive(Default)]
struct Walker {
    sections: Vec<Section>,
    /// Opened by the first text or bold of a block, closed at the next block boundary.
    block: Option<Block>,
    /// How many list items enclose the current position.
    item_depth: usize,
}

/// A title's text: whitespace normalized, trailing `:` and whitespace removed.
fn clean_title(s: &str) -> String {
    normalize_whitespace(s).trim_end_matches(|c: char| c == ':' || c.is_whitespace()).to_owned()
}

/// The text after a bold title: whitespace normalized, leading `:` and whitespace removed.
fn clean_rest(s: &str) -> String {
    normalize_whitespace(s).trim_start_matches(|c: char| c == ':' || c.is_whitespace()).to_owned()
}

impl Walker {
    fn start(&mut self, tag: &Tag<'_>) {
        match tag {
            Tag::Heading { .. } => self.open(Kind::Heading),
            Tag::CodeBlock(_) | Tag::TableHead | Tag::TableRow => self.open(Kind::Verbatim),
            Tag::TableCell => {
                if let Some(block) = &mut self.block
                    && !block.is_blank()
                {
                    block.rest.push_str(" | ");
                }
            }
            Tag::Item => {
                self.flush();
                self.item_depth += 1;
            }
            Tag::Strong => {
                let block = self.block();
                block.lead = match block.lead {
                    Lead::Open => Lead::Strong(1),
                    Lead::Strong(depth) => Lead::Strong(depth + 1),
                    lead => lead,
                };
            }
            Tag::Paragraph
            | Tag::BlockQuote(_)
            | Tag::HtmlBlock
            | Tag::List(_)
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::Table(_)
            | Tag::MetadataBlock(_) => self.flush(),
            Tag::Emphasis
            | Tag::Strikethrough
            | Tag::Superscript
            | Tag::Subscript
            | Tag::Link { .. }
            | Tag::Image { .. } => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Item => {
                self.flush();
                self.item_depth = self.item_depth.saturating_sub(1);
            }
            TagEnd::Strong => {
                if let Some(block) = &mut self.block
                    && let Lead::Strong(depth) = block.lead
                {
                    block.lead = if depth > 1 { Lead::Strong(depth - 1) } else { Lead::Titled };
                }
            }
            TagEnd::Paragraph
            | TagEnd::Heading(_)
            | TagEnd::BlockQuote(_)
            | TagEnd::CodeBlock
            | TagEnd::HtmlBlock
            | TagEnd::List(_)
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::Table
            | TagEnd::TableHead
            | TagEnd::TableRow
            | TagEnd::MetadataBlock(_) => self.flush(),
            TagEnd::Emphasis
            | TagEnd::Strikethrough
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::Link
            | TagEnd::Image
            | TagEnd::TableCell => {}
        }
    }

    fn text(&mut self, text: &str) {
        let block = self.block();
        match block.lead {
            Lead::Strong(_) => block.title.push_str(text),
            Lead::Open => {
                if !text.trim().is_empty() {
                    block.lead = Lead::Plain;
                }
                block.rest.push_str(text);
            }
            Lead::Titled | Lead::Plain => block.rest.push_str(text),
        }
    }

    /// Ends the current block and starts one of `kind`.
    fn open(&mut self, kind: Kind) {
        self.flush();
        self.block = Some(Block::new(kind));
    }

    /// The current block, opened on first use: text directly in a list item
    /// follows the item rule, any other text the paragraph rule.
    fn block(&mut self) -> &mut Block {
        let kind = if self.item_depth > 0 { Kind::Item } else { Kind::Paragraph };
        self.block.get_or_insert_with(|| Block::new(kind))
    }

    /// Ends the current block: it becomes a title, an item, or both.
    fn flush(&mut self) {
        let Some(block) = self.block.take() else { return };
        let title = if block.is_titled() { clean_title(&block.title) } else { String::new() };
        match block.kind {
            Kind::Heading => self.title(clean_title(&block.full())),
            Kind::Item if !title.is_empty() => {
                self.title(title);
                self.item(clean_rest(&block.rest));
            }
            Kind::Paragraph if !title.is_empty() && clean_rest(&block.rest).is_empty() => self.title(title),
            Kind::Item | Kind::Paragraph | Kind::Verbatim => self.item(block.full()),
        }
    }

    fn title(&mut self, title: String) {
        if !title.is_empty() {
            self.sections.push(Section { title: Some(title), items: Vec::new() });
        }
    }

    fn item(&mut self, item: String) {
        if item.is_empty() {
            return;
        }
        match self.sections.last_mut() {
            Some(section) => section.items.push(item),
            None => self.sections.push(Section { title: None, items: vec![item] }),
        }
    }

    fn finish(mut self) -> Vec<Section> {
        self.flush();
        self.sections.retain(|s| s.title.is_some() || !s.items.is_empty());
        self.sections
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Content;

    fn section(title: Option<&str>, items: &[&str]) -> Section {
        Section { title: title.map(str::to_owned), items: items.iter().map(|&s| s.to_owned()).collect() }
    }

    const ONE_SPACE: &str = "- **Client reason for contact**:\n \
        - The client noticed the invoice was wrong.\n \
        - They were charged twice.\n\
        - **Agent actions**:\n \
        - Refunded the fee.\n\
        - **Outcome**:\n \
        - The client was satisfied.\n";

    const TWO_SPACES: &str = "- **Client reason for contact**:\n  \
        - The client noticed the invoice was wrong.\n  \
        - They were charged twice.\n\
        - **Agent actions**:\n  \
        - Refunded the fee.\n\
        - **Outcome**:\n  \
        - The client was satisfied.\n";

    fn three_sections() -> Vec<Section> {
        vec![
            section(
                Some("Client reason for contact"),
                &["The client noticed the invoice was wrong.", "They were charged twice."],
            ),
            section(Some("Agent actions"), &["Refunded the fee."]),
            section(Some("Outcome"), &["The client was satisfied."]),
        ]
    }

    #[test]
    fn providers_md_example() {
        let sections = sections_from_markdown("- **Client reason for contact**:\n - The client noticed ...");
        assert_eq!(sections, [section(Some("Client reason for contact"), &["The client noticed ..."])]);
    }

    #[test]
    fn one_and_two_space_sub_bullets_give_the_same_sections() {
        assert_eq!(sections_from_markdown(ONE_SPACE), three_sections());
        assert_eq!(sections_from_markdown(TWO_SPACES), three_sections());
    }

    #[test]
    fn deeper_nesting_and_loose_lists_are_flattened() {
        let md = "- **Agent actions**:\n  - Refunded the fee.\n    - Within the hour.\n      - By card.\n\n\
                  - **Outcome**:\n\n  - Resolved.\n";
        assert_eq!(
            sections_from_markdown(md),
            [
                section(Some("Agent actions"), &["Refunded the fee.", "Within the hour.", "By card."]),
                section(Some("Outcome"), &["Resolved."]),
            ]
        );
    }

    #[test]
    fn text_after_the_bold_is_the_first_item() {
        let md = "- **Outcome**: refund issued\n  - Confirmed by email.\n- **Sentiment:** positive\n1. **Next**";
        assert_eq!(
            sections_from_markdown(md),
            [
                section(Some("Outcome"), &["refund issued", "Confirmed by email."]),
                section(Some("Sentiment"), &["positive"]),
                section(Some("Next"), &[]),
            ]
        );
    }

    #[test]
    fn headings_and_bold_paragraphs_are_titles() {
        let md = "## Outcome\n\n- Refunded.\n\nSummary:\n---\nShort call.\n\n**Follow-up**:\n\n* Call back.\n\n\
                  **Note** the client is a VIP.";
        assert_eq!(
            sections_from_markdown(md),
            [
                section(Some("Outcome"), &["Refunded."]),
                section(Some("Summary"), &["Short call."]),
                section(Some("Follow-up"), &["Call back.", "Note the client is a VIP."]),
            ]
        );
    }

    #[test]
    fn text_before_any_title_is_untitled() {
        let md = "Here is the summary.\n\n- A loose bullet.\n\n## Details\n- One.";
        assert_eq!(
            sections_from_markdown(md),
            [section(None, &["Here is the summary.", "A loose bullet."]), section(Some("Details"), &["One."])]
        );
    }

    #[test]
    fn html_is_dropped() {
        let md = "<script>alert('x')</script>\n\n- **Title** <b>bold</b>:\n - Text <img src=x onerror=alert(1)> here.\n\
                  - Visible <!-- comment -->&amp; &lt;escaped&gt;\n\n<div>\nblock html\n</div>\n";
        let sections = sections_from_markdown(md);
        assert_eq!(sections, [section(Some("Title"), &["bold:", "Text here.", "Visible & <escaped>"])]);
    }

    #[test]
    fn links_code_and_emphasis_are_flattened() {
        let md = "- **Agent _actions_**:\n - Sent [the form](https://example.com/form) and `REF-42`.\n \
                  - *Very* __happy__ ~~not~~ ![smiley](s.png)\n - <https://example.com>\n";
        assert_eq!(
            sections_from_markdown(md),
            [section(
                Some("Agent actions"),
                &["Sent the form and REF-42.", "Very happy not smiley", "https://example.com"]
            )]
        );
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(sections_from_markdown(&ONE_SPACE.replace('\n', "\r\n")), three_sections());
        assert_eq!(sections_from_markdown(&TWO_SPACES.replace('\n', "\r\n")), three_sections());
        assert_eq!(
            sections_from_markdown("## Title\r\nline one\r\nline two\r\n"),
            [section(Some("Title"), &["line one line two"])]
        );
    }

    #[test]
    fn empty_input_gives_no_sections() {
        for md in ["", "   ", "\n\r\n\t", "- \n-\n", "<p></p>", "****", "**"] {
            let sections = sections_from_markdown(md);
            assert!(sections.iter().all(|s| s.items.iter().all(|i| !i.is_empty())), "{md:?} → {sections:?}");
        }
        assert!(sections_from_markdown("").is_empty());
        assert!(sections_from_markdown("  \n\t\r\n").is_empty());
        assert!(sections_from_markdown("<!-- nothing -->").is_empty());
    }

    #[test]
    fn odd_markdown_still_maps() {
        let md = "| a | b |\n|---|---|\n| **1** | 2 |\n\n```\nlet x = 1;\n```\n\n- **unclosed bold\n> quoted **Q**";
        assert_eq!(
            sections_from_markdown(md),
            [section(None, &["a | b", "1 | 2", "let x = 1;", "**unclosed bold", "quoted Q"]),]
        );
    }

    #[test]
    fn content_text_has_no_markup() {
        let md = "Summary of the chat:\n\n- **Client reason for contact**:\n - The client saw a *wrong* invoice.\n\
                  - **Agent actions**:\n  - Opened [ticket](https://t.example/1) `#42`.\n## Outcome\n**Resolved**";
        let content = Content::from_sections(sections_from_markdown(md));
        assert_eq!(
            content.text,
            "- Summary of the chat:\n\nClient reason for contact\n- The client saw a wrong invoice.\n\n\
             Agent actions\n- Opened ticket #42.\n\nOutcome\n\nResolved"
        );
        for c in ['*', '<', '`', '['] {
            assert!(!content.text.contains(c), "{c} in {}", content.text);
        }
        assert!(!content.text.replace("#42", "").contains('#'), "{}", content.text);
    }

    #[test]
    fn random_markdownish_input_never_panics() {
        const FRAGMENTS: [&str; 32] = [
            "- ", " - ", "  - ", "    - ", "1. ", "**", "*", "_", "__", "`", "```", "\n", "\r\n", "\n\n", "## ", "#",
            "text", "Title", ":", "[", "](", ")", "<b>", "</b>", "<script>", "&amp;", "| a |", "|---|", "> ", "---",
            "![", "\\",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(state >> 33).unwrap_or_default()
        };
        for _ in 0..500 {
            let len = next() % 40;
            let md: String = (0..len).map(|_| FRAGMENTS[next() % FRAGMENTS.len()]).collect();
            for section in sections_from_markdown(&md) {
                assert!(section.title.is_some() || !section.items.is_empty(), "{md:?}");
                for s in section.title.iter().chain(section.items.iter()) {
                    assert!(!s.is_empty() && s.trim() == s, "{md:?} → {s:?}");
                }
            }
        }
        let long = ONE_SPACE.repeat(5_000);
        assert_eq!(sections_from_markdown(&long).len(), 15_000);
    }
}
