use std::fmt::Write as _;

use super::*;

/// README.md's CommBox example.
const README: &str = "Agent: Good morning, Acme support. Client: Hi, my March invoice was charged twice and I would \
                      like the duplicate refunded. Agent: I see it, I have refunded the duplicate charge.";

/// The end-to-end tests' conversation (tests/e2e/common.rs).
const E2E: &str = "Agent: Good morning, thank you for calling Acme support, how can I help? Client: Hi, I noticed my \
                   March invoice was charged twice. Agent: I see the duplicate and have refunded it. Client: Thanks! \
                   (lifecycle)";

#[test]
fn the_readme_conversation_reads_like_a_summary() {
    assert_eq!(
        markdown(README, "english", " "),
        "- **Client reason for contact**:\n \
         - The client's March invoice was charged twice and they would like the duplicate refunded.\n\
         - **Agent actions**:\n - The agent has refunded the duplicate charge.\n\
         - **Outcome**:\n - Resolved during the conversation."
    );
    assert_eq!(
        markdown(E2E, "english", "  "),
        "- **Client reason for contact**:\n  - The client noticed their March invoice was charged twice.\n\
         - **Agent actions**:\n  - The agent sees the duplicate and has refunded it.\n\
         - **Outcome**:\n  - Resolved during the conversation.\n  - The client thanked the agent."
    );
}

#[test]
fn conversations_of_every_shape() {
    let cases: &[(&str, &str, &str)] = &[
        ("readme", "english", README),
        ("e2e", "english", E2E),
        (
            "narrative without speakers",
            "english",
            "The client noticed a double charge on the March invoice and asked for a refund. The agent checked the \
             billing history and confirmed the duplicate payment. The refund was issued and the client was satisfied.",
        ),
        (
            "names instead of roles, one line per turn",
            "english",
            "Dana: Thanks for calling Northwind, Dana speaking, how can I help?\n\
             Sam: My router keeps dropping the connection every evening and I need it fixed.\n\
             Dana: I'm sorry to hear that. Could you read me the serial number?\n\
             Sam: It is NW-4431.\n\
             Dana: Thank you. I have reset the line and I've sent you a replacement router.\n\
             Dana: It should arrive on Thursday.\n\
             Sam: Great, thanks a lot!",
        ),
        (
            "escalated, the client unhappy",
            "english",
            "Customer: Hello. I was promised a callback yesterday and nobody called. I want to cancel my \
             subscription. Agent: I apologise. I have escalated your case to the billing team; they will get back \
             to you within 24 hours. Customer: This is still not resolved and I am disappointed.",
        ),
        (
            "a question for a reason",
            "english",
            "Agent: Hello, you are through to support. Client: Can you tell me why my card was declined? Agent: I \
             checked your account and found the card had expired. We've updated the card on file. Client: Perfect.",
        ),
        (
            "spanish, answered in spanish",
            "spanish",
            "Agente: Buenos días, ¿en qué puedo ayudarle? Cliente: Hola, me cobraron dos veces la factura de marzo y \
             quiero un reembolso. Agente: He revisado su cuenta y ya le reembolsé el cargo duplicado. Cliente: \
             Gracias.",
        ),
        ("no punctuation, no labels", "english", "the customer wants a new password because the old one is lost"),
        (
            "an english conversation answered in german",
            "german",
            "Agent: Hello. Client: I would like to change my delivery address. Agent: I have updated your address.",
        ),
    ];
    let mut rendered = String::new();
    for (name, language, text) in cases {
        let _ = write!(rendered, "## {name} ({language})\n{text}\n\n{}\n\n", markdown(text, language, " "));
    }
    insta::assert_snapshot!("conversations", rendered);
}

#[test]
fn the_same_text_gives_the_same_summary() {
    for text in [README, E2E] {
        assert_eq!(markdown(text, "english", " "), markdown(text, "english", " "));
    }
    assert_ne!(markdown(README, "english", " "), markdown(E2E, "english", " "));
}

#[test]
fn texts_with_nothing_to_pick_still_have_three_sections() {
    assert_eq!(
        markdown("", "english", " "),
        "- **Client reason for contact**:\n - (no content)\n- **Agent actions**:\n - (no content)\n\
         - **Outcome**:\n - (no content)"
    );
    assert_eq!(
        markdown("Only one sentence here", "italian", "  "),
        "- **Client reason for contact**:\n  - Only one sentence here\n\
         - **Agent actions**:\n  - No action was recorded.\n\
         - **Outcome**:\n  - No outcome was recorded."
    );
    // Greetings only: they are what there is.
    let md = markdown("Agent: Good morning! Client: Hello!", "french", " ");
    assert!(md.starts_with("- **Motif de contact du client**:\n - Good morning!\n"), "{md}");
    // Long sentences are cut, markers never show.
    let long = format!("{} end. Next one? [sim:hold] Last!", "word ".repeat(100));
    let md = markdown(&long, "spanish", " ");
    assert!(md.starts_with("- **Motivo de contacto del cliente**:\n - Word word"), "{md}");
    assert!(md.lines().all(|l| l.chars().count() <= 170), "{md}");
    assert!(!md.contains("[sim:"), "{md}");
}

#[test]
fn any_text_is_summarized() {
    const PIECES: &[&str] = &[
        "Agent:",
        "Client:",
        "Dana:",
        "Sam Lee:",
        "I",
        "my",
        "you",
        "your",
        "have",
        "and",
        "refunded",
        "charged",
        "Hi,",
        "thanks",
        "é",
        "日本語",
        "İ",
        "ß",
        "’",
        "'",
        "\n",
        ".",
        "?",
        "!",
        ",",
        ":",
        "[sim:",
        "]",
        "…",
        "😀",
        "—",
        "(",
        ")",
        "\"",
        "   ",
        "i'm",
        "I've",
        "we'll",
        "؟",
        "ا",
        "the",
        "Thank you for calling",
        "0",
    ];
    // A fixed linear congruential sequence: the same texts on every run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).unwrap_or(0) % bound
    };
    for _ in 0..3000 {
        let len = next(60);
        let mut text = String::new();
        for _ in 0..len {
            text.push_str(PIECES[next(PIECES.len())]);
            if next(3) > 0 {
                text.push(' ');
            }
        }
        for language in ["english", "german", "thai"] {
            let md = markdown(&text, language, " ");
            let headers: Vec<&str> = md.lines().filter(|l| l.starts_with("- **")).collect();
            assert_eq!(headers.len(), 3, "{text:?}\n{md}");
            let items = md.lines().filter(|l| l.starts_with(" - ")).count();
            assert!(items >= 3, "every section has an item: {text:?}\n{md}");
            assert!(md.lines().all(|l| !l.trim().is_empty() && l.trim() != "-"), "{text:?}\n{md}");
        }
    }
}

#[test]
fn first_person_is_told_in_the_third() {
    for (role, said, told) in [
        (Role::Agent, "I have refunded your charge.", "the agent has refunded the client's charge."),
        (
            Role::Agent,
            "I'll send you a new card and you'll get it Monday.",
            "the agent will send the client a new card and the client will get it Monday.",
        ),
        (
            Role::Agent,
            "We've updated your plan, you are all set.",
            "the team has updated the client's plan, the client is all set.",
        ),
        (
            Role::Client,
            "I also need my PIN reset, I'm locked out.",
            "the client also needs their PIN reset, they are locked out.",
        ),
        (
            Role::Client,
            "My card was charged twice and I was not told.",
            "the client's card was charged twice and they were not told.",
        ),
        (Role::Client, "Thanks and have a nice day.", "Thanks and have a nice day."),
    ] {
        assert_eq!(third_person(said, role), told, "{said}");
    }
}

#[test]
fn markers_are_stripped() {
    assert_eq!(strip_markers("a [sim:fail] b [sim:x"), "a  b ");
    assert_eq!(strip_markers("no markers: ü"), "no markers: ü");
}

#[test]
fn labels_are_found_where_a_turn_may_start() {
    let roles = |text: &str| -> Vec<Role> { turns(text).iter().map(|(role, _)| *role).collect() };
    assert_eq!(roles("Agent: hi. Client: hello."), [Role::Agent, Role::Client]);
    // A one-off `Word:` inside a sentence is not a speaker.
    assert_eq!(roles("Client: my order. Note: it is late. Agent: checking."), [Role::Client, Role::Agent]);
    assert_eq!(roles("Customer Service: hello. Customer: hi."), [Role::Agent, Role::Client]);
    // Two names: whoever opens like an agent is the agent.
    assert_eq!(
        roles("Sam: my bill. Dana: how can I help? Sam: refund. Dana: done."),
        [Role::Client, Role::Agent, Role::Client, Role::Agent]
    );
    // A name that labels one turn only is not taken for a speaker.
    assert_eq!(roles("Sam: my bill. Dana: sure. Sam: thanks."), [Role::Unknown, Role::Unknown]);
    // ...also when one of them speaks once, on a line of their own.
    assert_eq!(
        roles("Dana: Acme support, how can I help?\nSam: my bill.\nDana: done."),
        [Role::Agent, Role::Client, Role::Agent]
    );
    assert_eq!(roles("no labels at all"), [Role::Unknown]);
}
