//! The simulator's summariser: the `answer` of a completed action, made from the
//! submitted text so that it reads like a summary of that text.
//!
//! Extractive and rule-based, and deterministic (the same text gives the same answer):
//! 1. the text is cut into speaker turns (`Agent:`, `Client:`, `Customer:`, ... or any
//!    name that labels at least two turns) and the turns into sentences;
//! 2. greetings and pleasantries are dropped ("Good morning, thank you for calling");
//! 3. the client's first request is the reason for contact, the agent's sentences with
//!    an action verb are the actions, and the agent's last word with the client's
//!    answer to it is the outcome ("Resolved during the conversation." when the last
//!    action already says so);
//! 4. English first-person speech is told in the third person ("my invoice" → "the
//!    client's invoice", "I have refunded you" → "the agent has refunded the client");
//!    a client's question is quoted; other languages keep their own words.
//!
//! A text without speaker labels is taken as a narrative: its first request is the
//! reason, its last sentence the outcome and the action verbs between them the
//! actions. Any text is accepted: no labels, no punctuation, any script.

/// Longer sentences are cut to this many characters.
const MAX_ITEM_CHARS: usize = 160;
/// At most this many actions.
const MAX_ACTIONS: usize = 3;

/// The completed answer: three bold-headed bullet sections, their items nested with `indent`.
pub(super) fn markdown(text: &str, language: &str, indent: &str) -> String {
    let words = Words::of(language);
    let sections = summarize(&strip_markers(text), &words);
    words
        .headers
        .iter()
        .zip(sections)
        .map(|(header, items)| {
            let items: Vec<String> = items.iter().map(|item| format!("{indent}- {}", shorten(item))).collect();
            format!("- **{header}**:\n{}", items.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text without the simulator's `[sim:...]` markers.
pub(super) fn strip_markers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[sim:") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find(']') else {
            return out;
        };
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// What the summary says in the answer's language (headers, and the few sentences of
/// its own); other languages get English.
struct Words {
    headers: [&'static str; 3],
    resolved: &'static str,
    follow_up: &'static str,
    thanked: &'static str,
    no_action: &'static str,
    no_outcome: &'static str,
    no_content: &'static str,
    /// Whether third-person English may be written (only into an English answer).
    english: bool,
}

impl Words {
    fn of(language: &str) -> Self {
        match language {
            "spanish" => Self {
                headers: ["Motivo de contacto del cliente", "Acciones del agente", "Resultado"],
                resolved: "Resuelto durante la conversación.",
                follow_up: "Pendiente de seguimiento.",
                thanked: "El cliente agradeció al agente.",
                no_action: "No se registró ninguna acción.",
                no_outcome: "No se registró ningún resultado.",
                no_content: "(sin contenido)",
                english: false,
            },
            "portuguese" => Self {
                headers: ["Motivo do contato do cliente", "Ações do agente", "Resultado"],
                resolved: "Resolvido durante a conversa.",
                follow_up: "Aguardando acompanhamento.",
                thanked: "O cliente agradeceu ao agente.",
                no_action: "Nenhuma ação registrada.",
                no_outcome: "Nenhum resultado registrado.",
                no_content: "(sem conteúdo)",
                english: false,
            },
            "french" => Self {
                headers: ["Motif de contact du client", "Actions de l'agent", "Résultat"],
                resolved: "Résolu pendant la conversation.",
                follow_up: "Suivi en attente.",
                thanked: "Le client a remercié l'agent.",
                no_action: "Aucune action enregistrée.",
                no_outcome: "Aucun résultat enregistré.",
                no_content: "(aucun contenu)",
                english: false,
            },
            "german" => Self {
                headers: ["Kontaktgrund des Kunden", "Maßnahmen des Agenten", "Ergebnis"],
                resolved: "Im Gespräch gelöst.",
                follow_up: "Nachverfolgung ausstehend.",
                thanked: "Der Kunde bedankte sich beim Agenten.",
                no_action: "Keine Maßnahme erfasst.",
                no_outcome: "Kein Ergebnis erfasst.",
                no_content: "(kein Inhalt)",
                english: false,
            },
            _ => Self {
                headers: ["Client reason for contact", "Agent actions", "Outcome"],
                resolved: "Resolved during the conversation.",
                follow_up: "Follow-up pending.",
                thanked: "The client thanked the agent.",
                no_action: "No action was recorded.",
                no_outcome: "No outcome was recorded.",
                no_content: "(no content)",
                english: language == "english",
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Agent,
    Client,
    /// No label, or a third speaker.
    Unknown,
}

#[derive(Debug)]
struct Sentence {
    role: Role,
    /// Greeting words taken off the front (`Hi,`), whitespace normalised.
    text: String,
    /// Index of its turn.
    turn: usize,
    /// Says something (not only a greeting, a thank-you or a one-word reply).
    substantive: bool,
}

impl Sentence {
    fn is_question(&self) -> bool {
        self.text.ends_with(['?', '？', '¿'])
    }
}

/// The three sections' items: reason, actions, outcome.
fn summarize(text: &str, words: &Words) -> [Vec<String>; 3] {
    let sentences = sentences(&turns(text));
    if sentences.is_empty() {
        return [
            vec![words.no_content.to_owned()],
            vec![words.no_content.to_owned()],
            vec![words.no_content.to_owned()],
        ];
    }
    let labelled = sentences.iter().any(|s| s.role != Role::Unknown);
    let english = words.english && looks_english(text);
    let tell = |s: &Sentence| tell(s, english);
    let said: Vec<&Sentence> = sentences.iter().filter(|s| s.substantive).collect();

    // The reason: the client's first request (or first words), else the text's.
    let by_client: Vec<&Sentence> = said.iter().copied().filter(|s| s.role == Role::Client).collect();
    let pool = if by_client.is_empty() { &said } else { &by_client };
    let reason = pool.iter().position(|s| has_cue(&s.text, REQUEST)).or((!pool.is_empty()).then_some(0));
    let mut reason_items: Vec<&Sentence> = Vec::new();
    if let Some(i) = reason {
        reason_items.push(pool[i]);
        // A second sentence of the same turn that adds to the request.
        if let Some(next) = pool.get(i + 1).filter(|n| n.turn == pool[i].turn && has_cue(&n.text, REQUEST)) {
            reason_items.push(next);
        }
    }
    let is_reason = |s: &Sentence| reason_items.iter().any(|r| std::ptr::eq(*r, s));

    // The agent's last word (or the narrative's last sentence): the outcome.
    let agent_said: Vec<&Sentence> = if labelled {
        said.iter().copied().filter(|s| s.role == Role::Agent && !s.is_question()).collect()
    } else {
        said.iter().copied().filter(|s| !is_reason(s)).collect()
    };
    let last = agent_said.last().copied();

    // Actions: the agent's sentences with an action verb, else the first ones.
    let mut actions: Vec<&Sentence> =
        agent_said.iter().copied().filter(|s| !is_reason(s) && has_cue(&s.text, ACTION)).take(MAX_ACTIONS).collect();
    if actions.is_empty() {
        let rest = agent_said.iter().copied().filter(|s| !is_reason(s));
        actions = if labelled {
            rest.take(2).collect()
        } else {
            rest.take(agent_said.len().saturating_sub(1).max(1)).take(2).collect()
        };
    }
    let mut outcome: Vec<String> = Vec::new();
    if let Some(last) = last {
        let last_is_action = actions.iter().any(|a| std::ptr::eq(*a, last));
        if last_is_action && actions.len() > 1 {
            actions.retain(|a| !std::ptr::eq(*a, last));
            outcome.push(tell(last));
        } else if last_is_action && has_cue(&last.text, PENDING) {
            outcome.push(words.follow_up.to_owned());
        } else if last_is_action && has_cue(&last.text, DONE) {
            outcome.push(words.resolved.to_owned());
        } else if !is_reason(last) {
            outcome.push(tell(last));
        }
    }
    // The client's answer to it, when the client spoke last.
    if labelled && last.is_some() {
        let after = |s: &&Sentence| last.is_none_or(|l| s.turn > l.turn) && s.role == Role::Client;
        let answer: Vec<&Sentence> = sentences.iter().filter(after).collect();
        if answer.iter().any(|s| has_cue(&s.text, THANKS)) && !answer.iter().any(|s| has_cue(&s.text, UNHAPPY)) {
            outcome.push(words.thanked.to_owned());
        } else if let Some(s) = answer.iter().rev().find(|s| s.substantive && !is_reason(s)) {
            outcome.push(tell(s));
        }
    }

    let reason_items: Vec<String> = if reason_items.is_empty() {
        // Nothing but greetings: they are all there is to report.
        sentences.first().map(|s| s.text.clone()).into_iter().collect()
    } else {
        reason_items.into_iter().map(tell).collect()
    };
    let mut action_items: Vec<String> = actions.into_iter().map(tell).collect();
    if action_items.is_empty() {
        action_items.push(words.no_action.to_owned());
    }
    if outcome.is_empty() {
        outcome.push(words.no_outcome.to_owned());
    }
    [reason_items, action_items, outcome]
}

// ---- turns and sentences ------------------------------------------------------------------

/// Speaker labels that say the role.
const AGENT_LABELS: &str = concat!(
    "agent|support|rep|representative|operator|advisor|adviser|assistant|bot|staff|consultant|",
    "specialist|technician|service|agente|asesor|atendente|conseiller|berater|mitarbeiter",
);
const CLIENT_LABELS: &str = concat!(
    "client|customer|caller|user|guest|visitor|member|patient|cliente|kunde|kundin|usuario|",
    "usuário|utilisateur",
);
/// A first turn like these is the agent's, when no label says who is who.
const AGENT_OPENING: &str = concat!(
    "how can i help|how may i help|how can i assist|thank you for calling|thanks for calling|",
    "speaking|support|welcome",
);

/// One speaker's turn: its label (none before the first) and its words.
struct Turn<'t> {
    label: Option<String>,
    words: Vec<&'t str>,
}

/// Cuts the text into turns at its speaker labels.
fn turns(text: &str) -> Vec<(Role, Vec<&str>)> {
    // Each word, and whether it starts a line.
    let mut words: Vec<(bool, &str)> = Vec::new();
    for line in text.lines() {
        for (i, word) in line.split_whitespace().enumerate() {
            words.push((i == 0, word));
        }
    }
    // Label candidates: `Name:` (one or two words) where a turn may start.
    let label_at = |i: usize| -> Option<(String, usize)> {
        let may_start =
            i == 0 || words[i].0 || words[i - 1].1.ends_with(['.', '!', '?', '…', ')', ']', '"', '。', '！', '？']);
        if !may_start {
            return None;
        }
        let one = words[i].1.strip_suffix(':').filter(|l| is_label_word(l)).map(|l| (l.to_owned(), 1));
        let two = || {
            let next = words.get(i + 1)?.1.strip_suffix(':')?;
            (is_label_word(words[i].1) && is_label_word(next) && !words[i + 1].0)
                .then(|| (format!("{} {next}", words[i].1), 2))
        };
        one.or_else(two)
    };
    let candidates: Vec<(usize, String, usize)> =
        (0..words.len()).filter_map(|i| label_at(i).map(|(label, len)| (i, label, len))).collect();
    // A label says a role, or labels two turns; once there is one, a name that
    // opens a line labels a turn too (a client who speaks once).
    let count = |label: &str| candidates.iter().filter(|(_, l, _)| l == label).count();
    let strong = |label: &str| known_role(label).is_some() || count(label) >= 2;
    let any_strong = candidates.iter().any(|(_, label, _)| strong(label));
    let accepted: Vec<&(usize, String, usize)> =
        candidates.iter().filter(|(at, label, _)| strong(label) || (any_strong && words[*at].0)).collect();

    let mut turns: Vec<Turn> = vec![Turn { label: None, words: Vec::new() }];
    let mut i = 0;
    while i < words.len() {
        if let Some((_, label, len)) = accepted.iter().find(|(at, ..)| *at == i) {
            turns.push(Turn { label: Some(label.clone()), words: Vec::new() });
            i += len;
            continue;
        }
        if let Some(turn) = turns.last_mut() {
            turn.words.push(words[i].1);
        }
        i += 1;
    }
    let roles = roles(&turns);
    turns
        .into_iter()
        .filter(|t| !t.words.is_empty())
        .map(|t| {
            (
                t.label.as_deref().and_then(|l| roles.iter().find(|(n, _)| n == l)).map_or(Role::Unknown, |(_, r)| *r),
                t.words,
            )
        })
        .collect()
}

/// `Agent`, `Dana`, `Customer Service`: letters (and `-`, `'`, `.`), starting with a capital.
fn is_label_word(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(char::is_uppercase)
        && word.chars().count() <= 24
        && chars.all(|c| c.is_alphabetic() || matches!(c, '-' | '\'' | '.'))
}

/// The role a label names (`Agent`, `Customer Service`, `Cliente`), if it names one.
fn known_role(label: &str) -> Option<Role> {
    let last = label.rsplit(' ').next().unwrap_or(label).to_lowercase();
    let first = label.split(' ').next().unwrap_or(label).to_lowercase();
    if listed(AGENT_LABELS, &last) {
        Some(Role::Agent)
    } else if listed(CLIENT_LABELS, &last) || listed(CLIENT_LABELS, &first) {
        Some(Role::Client)
    } else {
        None
    }
}

/// Each label's role: what it says, else the opposite of the other speaker's, else
/// (two names) whoever opens like an agent is the agent.
fn roles(turns: &[Turn]) -> Vec<(String, Role)> {
    let mut labels: Vec<&str> = Vec::new();
    for label in turns.iter().filter_map(|t| t.label.as_deref()) {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    let mut roles: Vec<(String, Role)> =
        labels.iter().map(|l| ((*l).to_owned(), known_role(l).unwrap_or(Role::Unknown))).collect();
    let has = |roles: &[(String, Role)], role| roles.iter().any(|(_, r)| *r == role);
    let fill = match (has(&roles, Role::Agent), has(&roles, Role::Client)) {
        (true, false) => Some(Role::Client),
        (false, true) => Some(Role::Agent),
        _ => None,
    };
    if let Some(fill) = fill {
        for (_, role) in roles.iter_mut().filter(|(_, r)| *r == Role::Unknown) {
            *role = fill;
        }
    } else if !has(&roles, Role::Agent) && roles.len() >= 2 {
        let opening = turns.iter().find(|t| t.label.as_deref() == Some(roles[0].0.as_str()));
        let opening = opening.map(|t| t.words.join(" ").to_lowercase()).unwrap_or_default();
        let first_is_agent = AGENT_OPENING.split('|').any(|cue| opening.contains(cue));
        let (first, second) = if first_is_agent { (Role::Agent, Role::Client) } else { (Role::Client, Role::Agent) };
        roles[0].1 = first;
        roles[1].1 = second;
    }
    roles
}

/// The turns' sentences, greetings taken off their fronts.
fn sentences(turns: &[(Role, Vec<&str>)]) -> Vec<Sentence> {
    let mut out = Vec::new();
    for (turn, (role, words)) in turns.iter().enumerate() {
        let mut current: Vec<&str> = Vec::new();
        let mut push = |current: &mut Vec<&str>| {
            if current.is_empty() {
                return;
            }
            let raw = current.join(" ");
            current.clear();
            let text = without_greeting(&raw);
            let substantive = text.split_whitespace().count() >= 2 && !is_pleasantry(&raw);
            let text = if text.is_empty() { raw.clone() } else { capitalize(text) };
            out.push(Sentence { role: *role, text, turn, substantive });
        };
        for word in words {
            current.push(word);
            if word.ends_with(['.', '!', '?', '…', '。', '！', '？']) {
                push(&mut current);
            }
        }
        push(&mut current);
    }
    out
}

/// Openers that carry nothing when followed by a comma or `!` (`Hi,`, `Sure!`, `I see it,`).
const OPENERS: &str = concat!(
    "hi|hello|hey|good morning|good afternoon|good evening|yes|yeah|yep|no|ok|okay|sure|",
    "alright|all right|well|so|great|perfect|thanks|thank you|oh|ah|um|uh|of course|certainly|",
    "absolutely|no problem|i see|i see it|i understand|understood|got it|one moment|",
    "let me check|let me see|sorry|i'm sorry|hmm|right|please|hola|buenos días|buenas tardes|",
    "bonjour|hallo|guten tag|olá|bom dia",
);

/// The sentence without openers (`Hi, my invoice` → `my invoice`); all of it if it is only those.
fn without_greeting(sentence: &str) -> &str {
    let mut rest = sentence.trim();
    'strip: loop {
        let lower = rest.to_lowercase().replace('’', "'");
        for opener in OPENERS.split('|') {
            // Compare on chars: lowercasing may change byte lengths of other scripts.
            if let Some(tail) = lower.strip_prefix(opener)
                && tail.starts_with([',', '!', '.', ';', '—'])
            {
                let cut = opener.chars().count() + 1;
                let Some((at, _)) = rest.char_indices().nth(cut) else {
                    return "";
                };
                rest = rest[at..].trim_start();
                continue 'strip;
            }
        }
        return rest;
    }
}

/// Only a greeting, a thank-you or a goodbye.
fn is_pleasantry(sentence: &str) -> bool {
    const PLEASANTRIES: &str = concat!(
        "good morning|good afternoon|good evening|thank you for calling|thanks for calling|",
        "how can i help|how may i help|how can i assist|welcome to|have a nice day|",
        "have a great day|goodbye|bye|you're welcome|you are welcome|my pleasure|anything else|",
        "thank you|thanks",
    );
    has_cue(sentence, PLEASANTRIES) && !has_cue(sentence, REQUEST) && !has_cue(sentence, ACTION)
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn shorten(sentence: &str) -> String {
    match sentence.char_indices().nth(MAX_ITEM_CHARS - 3) {
        Some((cut, _)) if sentence.chars().count() > MAX_ITEM_CHARS => format!("{}...", sentence[..cut].trim_end()),
        _ => sentence.to_owned(),
    }
}

// ---- cues (each list `|`-separated; a cue matches the start of a word) ----------------------

/// A client asking for something or reporting a problem.
const REQUEST: &str = concat!(
    "want|would like|i'd like|need|can't|cannot|couldn't|unable|problem|issue|error|wrong|",
    "broken|not working|doesn't work|charged|charge|refund|cancel|change|question|why|how do|",
    "noticed|missing|late|didn't|failed|complain|asked|request|please|lost|stolen|locked|",
    "declined|twice|double|damaged|delay|quiero|necesito|problema|voudrais|besoin|möchte|",
    "brauche|preciso|gostaria",
);
/// An agent doing something (stems: `check` is checked, checking, ...).
const ACTION: &str = concat!(
    "check|verif|confirm|refund|issued|issuing|reset|updat|cancel|sent|send |escalat|creat|",
    "process|applied|apply|review|looked|looking into|found|explain|book|schedul|credit|replac|",
    "fix|resolv|arrang|transferr|reactivat|unlock|restor|remov|waiv|adjust|correct|shipp|",
    "emailed|rais|logged|submitt|reimburs|reissu|reinstat|renew|extend|upgrad|activat|",
    "investigat|opened|will call|call you back|reembols|rembours|erstatt",
);
/// An action that is finished.
const DONE: &str = concat!(
    "refunded|resolved|fixed|issued|processed|cancelled|canceled|updated|reset|credited|",
    "replaced|restored|reactivated|unlocked|sent|done|completed|sorted|corrected|removed|",
    "waived|applied|booked|scheduled|reimbursed|working now|works now|reembolsé|reembolsado|",
    "resuelto|solucionado|remboursé|résolu|erstattet|gelöst|reembolsei|resolvido",
);
/// An action that is still under way.
const PENDING: &str = "escalat|investigat|follow up|follow-up|get back|call you back|ticket|will call|pending";
const THANKS: &str =
    concat!("thank|thanks|great|perfect|awesome|appreciate|wonderful|excellent|gracias|merci|danke|", "obrigad",);
const UNHAPPY: &str = "still|not happy|unacceptable|disappointed|frustrat|angry|not resolved|doesn't help";

/// Whether `word` is one of the `|`-separated `list`.
fn listed(list: &str, word: &str) -> bool {
    list.split('|').any(|w| w == word)
}

/// Whether a cue (`|`-separated) starts a word of the sentence (`charge` matches `charged`, not `surcharge`).
fn has_cue(sentence: &str, cues: &str) -> bool {
    let lower = sentence.to_lowercase().replace('’', "'");
    cues.split('|').any(|cue| {
        lower.match_indices(cue).any(|(at, _)| lower[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric()))
    })
}

/// Enough English function words to be English.
fn looks_english(text: &str) -> bool {
    const COMMON: &str = "the|and|to|is|i|my|you|a|of|it|was|have|for|your";
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphabetic() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let common = words.iter().filter(|w| listed(COMMON, w)).count();
    !words.is_empty() && common * 6 >= words.len()
}

// ---- telling it in the third person ----------------------------------------------------------

/// How a sentence goes into the summary: an English speaker's words in the third
/// person, a client's question quoted, anything else as it was said.
fn tell(sentence: &Sentence, english: bool) -> String {
    if !english || sentence.role == Role::Unknown {
        return sentence.text.clone();
    }
    if sentence.is_question() {
        return match sentence.role {
            Role::Client => format!("The client asked: \"{}\"", sentence.text),
            _ => format!("The agent asked: \"{}\"", sentence.text),
        };
    }
    capitalize(&third_person(&sentence.text, sentence.role))
}

#[derive(Clone, Copy)]
enum Number {
    Singular,
    Plural,
}

/// `I have refunded your charge` → `the agent has refunded the client's charge`.
fn third_person(sentence: &str, role: Role) -> String {
    let (me, other, other_possessive) = match role {
        Role::Client => ("the client", "the agent", "the company's"),
        _ => ("the agent", "the client", "the client's"),
    };
    let mut out: Vec<String> = Vec::new();
    // The verb after a subject written in the third person agrees with it.
    let mut agree: Option<Number> = None;
    let mut named = false;
    let mut subject_in_clause: Option<Number> = None;
    for (i, token) in sentence.split(' ').enumerate() {
        let (before, core, after) = split_punctuation(token);
        let lower = core.to_lowercase().replace('’', "'");
        let replaced: Option<(String, Option<Number>)> = match lower.as_str() {
            "i" | "i'm" | "i've" | "i'll" | "i'd" => {
                let (noun, number) = if named { ("they", Number::Plural) } else { (me, Number::Singular) };
                named = true;
                let tail = match (lower.as_str(), number) {
                    ("i'm", Number::Singular) => " is",
                    ("i'm", Number::Plural) => " are",
                    ("i've", Number::Singular) => " has",
                    ("i've", Number::Plural) => " have",
                    ("i'll", _) => " will",
                    ("i'd", _) => " would",
                    _ => "",
                };
                let next = if tail.is_empty() { Some(number) } else { None };
                subject_in_clause = Some(number);
                Some((format!("{noun}{tail}"), next))
            }
            "my" if i == 0 => {
                named = true;
                Some((format!("{me}'s"), None))
            }
            "my" => Some(("their".to_owned(), None)),
            "me" => Some(("them".to_owned(), None)),
            "mine" => Some(("theirs".to_owned(), None)),
            "myself" | "yourself" => Some(("themselves".to_owned(), None)),
            "you" | "you're" | "you've" | "you'll" => {
                let tail = match lower.as_str() {
                    "you're" => " is",
                    "you've" => " has",
                    "you'll" => " will",
                    _ => "",
                };
                let next = if tail.is_empty() { Some(Number::Singular) } else { None };
                Some((format!("{other}{tail}"), next))
            }
            "your" | "yours" => Some((other_possessive.to_owned(), None)),
            "we" | "we're" | "we've" | "we'll" if role == Role::Agent => {
                let tail = match lower.as_str() {
                    "we're" => " is",
                    "we've" => " has",
                    "we'll" => " will",
                    _ => "",
                };
                let next = if tail.is_empty() { Some(Number::Singular) } else { None };
                Some((format!("the team{tail}"), next))
            }
            "our" if role == Role::Agent => Some(("the team's".to_owned(), None)),
            "us" if role == Role::Agent => Some(("the team".to_owned(), None)),
            _ => None,
        };
        let word = if let Some((word, next)) = replaced {
            agree = next;
            word
        } else if let Some(number) = agree {
            match agreed(&lower, number) {
                Some(verb) => {
                    agree = None;
                    verb.to_owned()
                }
                // An adverb between subject and verb (`I also have`) keeps it waiting.
                None if listed(ADVERBS, &lower) => core.to_owned(),
                None => {
                    agree = None;
                    core.to_owned()
                }
            }
        } else if matches!(lower.as_str(), "and" | "but" | "then" | "so") && after.is_empty() {
            // `I see the duplicate and have refunded it`: a second verb of the same subject.
            agree = subject_in_clause.filter(|_| named);
            core.to_owned()
        } else {
            core.to_owned()
        };
        // A word the subject did not govern (`and have a nice day`) stays as it was.
        out.push(format!("{before}{word}{after}"));
    }
    out.join(" ")
}

/// Words that may stand between a subject and its verb.
const ADVERBS: &str = "also|just|already|really|still|only|never|always|now|actually|simply|recently";

/// The verb `word` agreeing with a third-person subject, if it changes.
fn agreed(word: &str, number: Number) -> Option<&'static str> {
    let singular: &[(&str, &str)] = &[
        ("am", "is"),
        ("are", "is"),
        ("have", "has"),
        ("do", "does"),
        ("don't", "doesn't"),
        ("haven't", "hasn't"),
        ("were", "was"),
        ("want", "wants"),
        ("need", "needs"),
        ("think", "thinks"),
        ("see", "sees"),
        ("hope", "hopes"),
        ("know", "knows"),
        ("like", "likes"),
        ("get", "gets"),
        ("go", "goes"),
        ("try", "tries"),
        ("feel", "feels"),
        ("use", "uses"),
        ("pay", "pays"),
        ("own", "owns"),
        ("wonder", "wonders"),
        ("believe", "believes"),
        ("expect", "expects"),
        ("keep", "keeps"),
        ("understand", "understands"),
        ("agree", "agrees"),
        ("mean", "means"),
        ("say", "says"),
        ("work", "works"),
        ("live", "lives"),
    ];
    let plural: &[(&str, &str)] = &[("am", "are"), ("was", "were"), ("wasn't", "weren't")];
    let table = match number {
        Number::Singular => singular,
        Number::Plural => plural,
    };
    table.iter().find(|(from, _)| *from == word).map(|(_, to)| *to)
}

/// `"(Hi,"` → `("(", "Hi", ",")`: punctuation around a word, kept as it was.
fn split_punctuation(token: &str) -> (&str, &str, &str) {
    let is_word = |c: char| c.is_alphanumeric() || c == '\'' || c == '’';
    let start = token.find(is_word).unwrap_or(token.len());
    let end = token.rfind(is_word).map_or(start, |i| i + token[i..].chars().next().map_or(1, char::len_utf8));
    let end = end.max(start);
    (&token[..start], &token[start..end], &token[end..])
}

#[cfg(test)]
mod tests;
