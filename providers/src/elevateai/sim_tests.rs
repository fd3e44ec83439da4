use super::*;

const TOKEN: &str = "demo-elevateai-token";

/// A simulator answering without latency (the concurrency tests set their own).
async fn start() -> RunningSimulator {
    start_with(SimOptions { latency: Duration::ZERO, ..SimOptions::default() }).await
}

async fn start_with(options: SimOptions) -> RunningSimulator {
    ElevateAiSimulator::start(options).await.unwrap()
}

fn client() -> reqwest::Client {
    crate::outbound::install_crypto_provider();
    reqwest::Client::new()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let answer = req.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

fn url(sim: &RunningSimulator, id: &str, path: &str) -> String {
    format!("{}/v1/interactions/{id}/{path}", sim.base_url())
}

async fn get_json(sim: &RunningSimulator, id: &str, path: &str) -> (u16, Value) {
    send(client().get(url(sim, id, path)).header(TOKEN_HEADER, TOKEN)).await
}

async fn ask(sim: &RunningSimulator, id: &str, question: &str) -> (u16, Value) {
    let req = client().post(url(sim, id, "gen-ai/cx/ask")).header(TOKEN_HEADER, TOKEN);
    send(req.json(&json!({ "question": question }))).await
}

async fn hook(sim: &RunningSimulator, path: &str, body: Value) {
    let answer = client().post(format!("{}{path}", sim.base_url())).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 204);
}

async fn declare(sim: &RunningSimulator, body: Value) -> (u16, Value) {
    let req = client().post(format!("{}{INTERACTIONS_PATH}", sim.base_url())).header(TOKEN_HEADER, TOKEN);
    send(req.json(&body)).await
}

fn fixture() -> Vec<Value> {
    serde_json::from_str(include_str!("fixtures/interactions.json")).unwrap()
}

fn fixture_of(id: &str) -> Value {
    fixture().into_iter().find(|i| i["identifier"] == id).unwrap()
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

#[test]
fn fixtures_parse_and_match_the_consts() {
    let seeds = seeds();
    assert_eq!(seeds.len(), fixture().len());
    let ids: Vec<&str> = seeds.iter().map(|s| s.identifier.as_str()).collect();
    assert_eq!(ids, [BILLING_CALL, OUTAGE_CHAT, PROCESSING_CALL]);
    for seed in &seeds {
        let languages: Vec<&str> = seed.content.summary.keys().map(String::as_str).collect();
        for language in SUMMARY_LANGUAGES {
            assert!(languages.contains(language), "{} has no {language} summary", seed.identifier);
        }
        for concern in &seed.content.concerns {
            assert!(["resolved", "partiallyResolved", "unresolved"].contains(&concern.resolution_status.as_str()));
        }
        assert!(seed.content.action_items.iter().all(|a| a.owner == "agent" || a.owner == "customer"));
    }
    let processing: Vec<bool> = seeds.iter().map(|s| s.processed).collect();
    assert_eq!(processing, [true, true, false]);
}

#[tokio::test]
async fn refuses_a_missing_or_wrong_token() {
    let sim = start().await;
    let client = client();
    let summary = url(&sim, BILLING_CALL, "gen-ai/cx/summary");
    let expected = json!({"code": "UNAUTHORIZED", "message": "Missing or invalid X-API-Token"});
    for req in [
        client.get(&summary),
        client.get(&summary).header(TOKEN_HEADER, "wrong"),
        client.get(&summary).bearer_auth(TOKEN),
        client.get(url(&sim, BILLING_CALL, "status")),
        client.post(url(&sim, BILLING_CALL, "gen-ai/ask")).json(&json!({"question": "Why?"})),
        client.post(format!("{}{INTERACTIONS_PATH}", sim.base_url())).json(&json!({"type": "chat"})),
    ] {
        assert_eq!(send(req).await, (401, expected.clone()));
    }
    let stats = sim.stats();
    assert_eq!((stats.unauthorized, stats.asks, stats.declared), (6, 0, 0));
    assert!(stats.requests.is_empty() && stats.languages.is_empty());
}

/// A simulator with the token endpoint, tokens living 100 s.
async fn start_oauth() -> RunningSimulator {
    let oauth = OAuthOptions {
        client_id: "cid".into(),
        client_secret: "s3cret".into(),
        token_lifetime: Duration::from_secs(100),
    };
    start_with(SimOptions { latency: Duration::ZERO, oauth: Some(oauth), ..SimOptions::default() }).await
}

/// `POST /oauth/token` with `form` as the body: (status, `WWW-Authenticate`, body).
async fn token_request(
    sim: &RunningSimulator,
    client: Option<(&str, &str)>,
    form: &str,
) -> (u16, Option<String>, Value) {
    let mut req = self::client()
        .post(format!("{}{TOKEN_PATH}", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some((id, secret)) = client {
        req = req.basic_auth(id, Some(secret));
    }
    let answer = req.send().await.unwrap();
    let status = answer.status().as_u16();
    let challenge = answer.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    if status == 200 {
        assert_eq!(answer.headers()["cache-control"], "no-store", "RFC 6749 §5.1");
    }
    (status, challenge, answer.json().await.unwrap())
}

#[tokio::test]
async fn the_token_endpoint_is_off_by_default() {
    let sim = start().await;
    let answer = client()
        .post(format!("{}{TOKEN_PATH}", sim.base_url()))
        .basic_auth("demo-elevateai-client", Some("demo-elevateai-client-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    let stats = sim.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (0, 0));
}

#[tokio::test]
async fn the_token_endpoint_grants_client_credentials_and_refuses_the_rest() {
    let sim = start_oauth().await;
    let good = Some(("cid", "s3cret"));
    let (status, _, body) = token_request(&sim, good, "grant_type=client_credentials&scope=summaries").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["token_type"], &body["expires_in"], &body["scope"]),
        (&json!("Bearer"), &json!(100), &json!("summaries"))
    );
    let first = body["access_token"].as_str().unwrap().to_owned();
    let (_, _, again) = token_request(&sim, good, "grant_type=client_credentials").await;
    assert_ne!(again["access_token"], first.as_str(), "a new token each time");
    assert!(again.get("scope").is_none());

    let basic = Some(r#"Basic realm="elevateai-simulator""#.to_owned());
    for (client, form, status, challenge, error) in [
        (Some(("cid", "wrong")), "grant_type=client_credentials", 401, basic.clone(), "invalid_client"),
        (Some(("other", "s3cret")), "grant_type=client_credentials", 401, basic.clone(), "invalid_client"),
        (None, "grant_type=client_credentials", 401, basic, "invalid_client"),
        (good, "grant_type=password&username=a&password=b", 400, None, "unsupported_grant_type"),
        (good, "scope=summaries", 400, None, "invalid_request"),
        (good, "grant_type=client_credentials&grant_type=client_credentials", 400, None, "invalid_request"),
    ] {
        let (got, got_challenge, body) = token_request(&sim, client, form).await;
        assert_eq!((got, got_challenge, body["error"].as_str()), (status, challenge, Some(error)), "{form}");
    }
    let seen = sim.stats();
    assert_eq!((seen.token_requests, seen.tokens_issued, seen.token_refusals), (8, 2, 6));
    assert_eq!(seen.scopes, ["summaries", ""]);
    assert_eq!(sim.issued_tokens().len(), 2);
    assert_eq!(seen.unauthorized, 0, "the token endpoint's refusals are not API refusals");
}

#[tokio::test]
async fn the_api_takes_a_bearer_token_until_it_expires_or_is_revoked() {
    let sim = start_oauth().await;
    let (_, _, body) = token_request(&sim, Some(("cid", "s3cret")), "grant_type=client_credentials").await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let summary = url(&sim, BILLING_CALL, "gen-ai/cx/summary");
    let with = |bearer: &str| client().get(&summary).bearer_auth(bearer);
    assert_eq!(send(with(&token)).await.0, 200);
    assert_eq!(send(client().get(url(&sim, BILLING_CALL, "status")).bearer_auth(&token)).await.0, 200);
    assert_eq!(send(client().get(&summary).header(TOKEN_HEADER, TOKEN)).await.0, 200, "the API key still works");

    let refused = json!({"code": "UNAUTHORIZED", "message": "The access token expired, was revoked or is unknown"});
    let stale = |req: reqwest::RequestBuilder| async move {
        let answer = req.send().await.unwrap();
        assert_eq!(answer.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
        (answer.status().as_u16(), answer.json::<Value>().await.unwrap())
    };
    assert_eq!(stale(with("never-issued")).await, (401, refused.clone()));
    sim.advance(Duration::from_secs(99));
    assert_eq!(send(with(&token)).await.0, 200);
    sim.advance(Duration::from_secs(1));
    assert_eq!(stale(with(&token)).await, (401, refused.clone()), "expired on the simulator's clock");

    let (_, _, body) = token_request(&sim, Some(("cid", "s3cret")), "grant_type=client_credentials").await;
    let renewed = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(send(with(&renewed)).await.0, 200);
    hook(&sim, "/_sim/revoke_tokens", json!({})).await;
    assert_eq!(stale(with(&renewed)).await, (401, refused));
    assert_eq!(sim.revoke_tokens(), 0, "none left to revoke");
    // Without a bearer token the refusal is the API key's, as without the endpoint.
    let (status, body) = send(client().get(&summary)).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHORIZED"));
    let seen = sim.stats();
    assert_eq!((seen.stale_tokens, seen.unauthorized, seen.tokens_issued), (3, 4, 2));
    assert_eq!(seen.requests["summary"], 4, "refused requests are not gen-AI requests");
}

#[tokio::test]
async fn every_kind_on_both_variants() {
    let sim = start().await;
    let billing = fixture_of(BILLING_CALL);
    let cx = [
        ("gen-ai/cx/summary", json!({ "summary": billing["summary"]["en"] })),
        ("gen-ai/cx/summary/details", billing["details"].clone()),
        ("gen-ai/cx/agent/action-items", json!({ "actionItems": billing["actionItems"] })),
        ("gen-ai/cx/agent/coaching-assistant", json!({ "coachingPoints": billing["coachingPoints"] })),
        ("gen-ai/cx/topics", json!({ "topics": billing["topics"] })),
        ("gen-ai/cx/conversation-composition", json!({ "concerns": billing["concerns"] })),
    ];
    for (path, expected) in &cx {
        assert_eq!(get_json(&sim, BILLING_CALL, path).await, (200, expected.clone()), "{path}");
    }
    let (_, details) = get_json(&sim, BILLING_CALL, "gen-ai/cx/summary/details").await;
    assert_eq!(details["isResolved"], true);
    assert_eq!(details["entities"][0], json!({"type": "PERSON", "value": "Maria Lopez"}));

    // The standard variant answers the same shapes for the kinds it has.
    for (standard, same_as) in
        [("gen-ai/summary", 0), ("gen-ai/summary/details", 1), ("gen-ai/action-items", 2), ("gen-ai/topics", 4)]
    {
        assert_eq!(get_json(&sim, BILLING_CALL, standard).await, (200, cx[same_as].1.clone()), "{standard}");
    }
    let no_route = json!({"code": "NOT_FOUND", "message": "No such route"});
    for missing in ["gen-ai/agent/coaching-assistant", "gen-ai/conversation-composition", "gen-ai/coaching-assistant"] {
        assert_eq!(get_json(&sim, BILLING_CALL, missing).await, (404, no_route.clone()), "{missing}");
    }
    let (status, body) =
        send(client().post(url(&sim, BILLING_CALL, "gen-ai/cx/summary")).header(TOKEN_HEADER, TOKEN)).await;
    assert_eq!((status, code(&body)), (405, "METHOD_NOT_ALLOWED"));

    // The chat has its own content.
    let (_, topics) = get_json(&sim, OUTAGE_CHAT, "gen-ai/cx/topics").await;
    assert_eq!(topics["topics"][0], "Broadband outage");
    let (_, composition) = get_json(&sim, OUTAGE_CHAT, "gen-ai/cx/conversation-composition").await;
    assert_eq!(composition["concerns"][2]["resolutionStatus"], "unresolved");

    let seen = sim.stats();
    let requests: Vec<(&str, u64)> = seen.requests.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        requests,
        [("action_items", 2), ("coaching", 1), ("composition", 2), ("details", 3), ("summary", 2), ("topics", 3)]
    );
    assert_eq!(seen.variants.get("cx"), Some(&9));
    assert_eq!(seen.variants.get("standard"), Some(&4));
    assert_eq!(seen.max_in_flight, 1);
}

#[tokio::test]
async fn accept_language_chooses_the_summary_language() {
    let sim = start().await;
    let billing = fixture_of(BILLING_CALL);
    let summary = |language: Option<&'static str>| {
        let mut req = client().get(url(&sim, BILLING_CALL, "gen-ai/cx/summary")).header(TOKEN_HEADER, TOKEN);
        if let Some(language) = language {
            req = req.header("Accept-Language", language);
        }
        send(req)
    };
    assert_eq!(summary(Some("pt-BR")).await, (200, json!({ "summary": billing["summary"]["pt"] })));
    let (_, english) = summary(None).await;
    assert_eq!(english["summary"], billing["summary"]["en"]);
    let (_, german) = summary(Some("ja-JP, de-DE;q=0.8, fr;q=0.9")).await;
    assert_eq!(german["summary"], billing["summary"]["fr"]);
    let (_, fallback) = summary(Some("ja")).await;
    assert_eq!(fallback["summary"], billing["summary"]["en"]);
    let (_, spanish) = summary(Some("es-419")).await;
    assert!(spanish["summary"].as_str().unwrap().starts_with("La clienta llamó"));

    // Only the summary kind is translated, and only its requests are recorded.
    let req = client().get(url(&sim, BILLING_CALL, "gen-ai/cx/summary/details")).header(TOKEN_HEADER, TOKEN);
    let (_, details) = send(req.header("Accept-Language", "pt-BR")).await;
    assert_eq!(details, billing["details"]);
    assert_eq!(sim.stats().languages, ["pt-BR", "", "ja-JP, de-DE;q=0.8, fr;q=0.9", "ja", "es-419"]);
}

#[tokio::test]
async fn audio_is_processing_until_the_clock_passes() {
    let sim = start().await;
    let (status, body) = get_json(&sim, PROCESSING_CALL, "status").await;
    assert_eq!(status, 200);
    assert_eq!(body["identifier"], PROCESSING_CALL);
    assert_eq!(body["status"], "processing");
    assert_eq!((body["processed"].clone(), body["errorMessage"].clone()), (Value::Null, Value::Null));
    let declared = body["declared"].as_str().unwrap();
    assert_eq!((declared.len(), &declared[10..11], &declared[19..]), (20, "T", "Z"), "{declared}");

    let answer = client().get(url(&sim, PROCESSING_CALL, "gen-ai/cx/summary")).header(TOKEN_HEADER, TOKEN);
    let answer = answer.send().await.unwrap();
    assert_eq!(answer.status(), 409);
    assert!(answer.headers().get("retry-after").is_none());
    let body: Value = answer.json().await.unwrap();
    assert_eq!(code(&body), "INTERACTION_NOT_PROCESSED");
    assert_eq!(code(&ask(&sim, PROCESSING_CALL, "Why did he call?").await.1), "INTERACTION_NOT_PROCESSED");
    assert!(!sim.interaction(PROCESSING_CALL).unwrap().processed);

    hook(&sim, "/_sim/clock", json!({ "advance_secs": 59 })).await;
    assert_eq!(get_json(&sim, PROCESSING_CALL, "gen-ai/topics").await.0, 409);
    hook(&sim, "/_sim/clock", json!({ "advance_secs": 1 })).await;
    let (status, topics) = get_json(&sim, PROCESSING_CALL, "gen-ai/topics").await;
    assert_eq!((status, topics["topics"][0].as_str()), (200, Some("Contract cancellation")));
    let (_, body) = get_json(&sim, PROCESSING_CALL, "status").await;
    assert_eq!(body["status"], "processed");
    assert!(body["processed"].is_string());
    assert!(sim.interaction(PROCESSING_CALL).unwrap().processed);
}

#[tokio::test]
async fn set_processed_finishes_at_once() {
    let sim = start().await;
    assert_eq!(get_json(&sim, PROCESSING_CALL, "gen-ai/cx/summary").await.0, 409);
    hook(&sim, "/_sim/processed", json!({ "identifier": PROCESSING_CALL.to_uppercase() })).await;
    assert_eq!(get_json(&sim, PROCESSING_CALL, "gen-ai/cx/summary").await.0, 200);
    assert!(!sim.set_processed("3f6a2c1e-0000-4e7a-9c2f-5d1b7e9a0c41"));
}

#[tokio::test]
async fn unknown_interactions_are_not_found() {
    let sim = start().await;
    let unknown = "00000000-1111-4222-8333-444444444444";
    for id in [unknown, "not-a-guid", "12345"] {
        let (status, body) = get_json(&sim, id, "gen-ai/cx/summary").await;
        assert_eq!((status, code(&body)), (404, "INTERACTION_NOT_FOUND"), "{id}");
        assert_eq!(body["message"], format!("No interaction with identifier {id}"));
        assert_eq!(get_json(&sim, id, "status").await.0, 404);
        assert_eq!(code(&ask(&sim, id, "Anything?").await.1), "INTERACTION_NOT_FOUND");
    }
    let (status, body) = send(client().get(format!("{}/v1/nothing", sim.base_url()))).await;
    assert_eq!((status, body), (404, json!({"code": "NOT_FOUND", "message": "No such route"})));
    assert_eq!(sim.stats().asks, 0);
}

#[tokio::test]
async fn declared_interactions() {
    let sim = start().await;
    let (status, body) = declare(&sim, json!({ "type": "chat", "languageTag": "pt-br", "vertical": "default" })).await;
    assert_eq!(status, 201);
    let chat = body["interactionIdentifier"].as_str().unwrap().to_owned();
    assert!(Uuid::parse_str(&chat).is_ok());
    let (status, first) = get_json(&sim, &chat, "gen-ai/cx/summary").await;
    assert_eq!(status, 200);
    assert_eq!(get_json(&sim, &chat, "gen-ai/cx/summary").await.1, first);
    assert!(first["summary"].as_str().unwrap().contains(&chat[..8]));
    for path in ["gen-ai/cx/summary/details", "gen-ai/action-items", "gen-ai/cx/agent/coaching-assistant"] {
        assert_eq!(get_json(&sim, &chat, path).await.0, 200, "{path}");
    }
    assert_eq!(get_json(&sim, &chat, "status").await.1["status"], "processed");

    let (_, body) = declare(&sim, json!({ "type": "audio", "languageTag": "en-us" })).await;
    let audio = body["interactionIdentifier"].as_str().unwrap().to_owned();
    assert_eq!(get_json(&sim, &audio, "gen-ai/cx/summary").await.0, 409);
    assert_eq!(get_json(&sim, &audio, "status").await.1["status"], "processing");
    sim.advance(Duration::from_secs(60));
    let (status, second) = get_json(&sim, &audio, "gen-ai/cx/summary").await;
    assert_eq!(status, 200);
    assert_ne!(second, first);

    for invalid in [json!({ "type": "video", "languageTag": "en-us" }), json!({ "type": "chat" }), json!([])] {
        let (status, body) = declare(&sim, invalid).await;
        assert_eq!((status, code(&body)), (422, "INVALID_REQUEST"));
    }
    let recorded = sim.interaction(&chat).unwrap();
    assert_eq!(
        recorded,
        SimInteraction {
            identifier: chat.clone(),
            media: "chat".into(),
            language_tag: "pt-br".into(),
            vertical: "default".into(),
            processed: true,
        }
    );
    assert_eq!(sim.interaction(&audio).unwrap().vertical, "default");
    assert_eq!(sim.interaction_ids(), [BILLING_CALL, OUTAGE_CHAT, PROCESSING_CALL, chat.as_str(), audio.as_str()]);
    assert_eq!(sim.stats().declared, 2);
}

#[tokio::test]
async fn ask_answers_from_the_interaction() {
    let sim = start().await;
    let (status, body) = ask(&sim, BILLING_CALL, "Was the refund issued to the card?").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "question": "Was the refund issued to the card?",
            "answer": "Regarding \"Was the refund issued to the card?\": The agent verified the account, confirmed \
                       that autopay had charged the card twice on March 3 and issued a refund of $89.99 to the card \
                       on file."
        })
    );
    // Deterministic, and the standard path shares the log.
    let req = client().post(url(&sim, BILLING_CALL, "gen-ai/ask")).header(TOKEN_HEADER, TOKEN);
    let (_, again) = send(req.json(&json!({ "question": "Was the refund issued to the card?" }))).await;
    assert_eq!(again, body);

    let (status, body) = ask(&sim, OUTAGE_CHAT, "When will the repair be finished?").await;
    assert_eq!(status, 200);
    assert!(body["answer"].as_str().unwrap().contains("estimated repair time of 6 pm"), "{body}");

    for invalid in [json!({}), json!({ "question": "  " }), json!({ "question": 5 })] {
        let req = client().post(url(&sim, OUTAGE_CHAT, "gen-ai/cx/ask")).header(TOKEN_HEADER, TOKEN);
        let (status, body) = send(req.json(&invalid)).await;
        assert_eq!((status, code(&body)), (422, "INVALID_REQUEST"));
    }
    assert_eq!(sim.stats().asks, 6);
    assert_eq!(sim.stats().variants.get("standard"), Some(&1));
}

#[tokio::test]
async fn ask_limits() {
    let sim = start().await;
    let too_long = "x".repeat(MAX_QUESTION_CHARS + 1);
    let (status, body) = ask(&sim, BILLING_CALL, &too_long).await;
    assert_eq!((status, code(&body)), (422, "QUESTION_TOO_LONG"));
    // 250 characters (multi-byte ones too) is still fine.
    assert_eq!(ask(&sim, BILLING_CALL, &"é".repeat(MAX_QUESTION_CHARS)).await.0, 200);
    for n in 2..=5 {
        assert_eq!(ask(&sim, BILLING_CALL, &format!("Question {n}?")).await.0, 200);
    }
    let (status, body) = ask(&sim, BILLING_CALL, "Sixth question?").await;
    assert_eq!((status, code(&body)), (409, "QUESTION_LIMIT_REACHED"));
    // Failed questions have their own allowance.
    for n in 1..=5 {
        let (status, body) = ask(&sim, BILLING_CALL, &format!("Failure {n} {MARK_UNANSWERABLE}")).await;
        assert_eq!((status, code(&body)), (422, "QUESTION_NOT_ANSWERABLE"), "{n}");
    }
    let (status, body) = ask(&sim, BILLING_CALL, &format!("Failure 6 {MARK_UNANSWERABLE}")).await;
    assert_eq!((status, code(&body)), (409, "QUESTION_LIMIT_REACHED"));
    // A too long question is refused before the limit counts.
    assert_eq!(code(&ask(&sim, BILLING_CALL, &too_long).await.1), "QUESTION_TOO_LONG");

    // The other interaction is untouched; a failure there leaves its answers free.
    assert_eq!(ask(&sim, OUTAGE_CHAT, &format!("What {MARK_UNANSWERABLE}")).await.0, 422);
    assert_eq!(ask(&sim, OUTAGE_CHAT, "What happened?").await.0, 200);

    let (status, list) = get_json(&sim, BILLING_CALL, "gen-ai/cx/ask").await;
    assert_eq!(status, 200);
    let questions = list["questions"].as_array().unwrap();
    assert_eq!(questions.len(), 10);
    let asked: Vec<&str> = questions.iter().map(|q| q["question"].as_str().unwrap()).collect();
    assert_eq!(asked[1..5], ["Question 2?", "Question 3?", "Question 4?", "Question 5?"]);
    assert_eq!(asked[5], format!("Failure 1 {MARK_UNANSWERABLE}"));
    let statuses: Vec<&str> = questions.iter().map(|q| q["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, [["answered"; 5], ["failed"; 5]].concat());
    assert!(questions[..5].iter().all(|q| q["answer"].as_str().is_some_and(|a| a.starts_with("Regarding \""))));
    assert!(questions[5..].iter().all(|q| q["answer"].is_null()));
    let at = questions[0]["askedAt"].as_str().unwrap();
    assert_eq!((at.len(), &at[10..11], &at[19..]), (20, "T", "Z"), "{at}");
    // The standard path lists the same log.
    assert_eq!(get_json(&sim, BILLING_CALL, "gen-ai/ask").await.1, list);

    let seen = sim.stats();
    assert_eq!((seen.asks, seen.ask_lists), (16, 2));
}

#[tokio::test]
async fn at_most_max_concurrent_in_flight() {
    let sim =
        start_with(SimOptions { latency: Duration::from_millis(150), max_concurrent: 10, ..SimOptions::default() })
            .await;
    let client = client();
    let requests = (0..25).map(|i| {
        let path = if i % 5 == 0 { "gen-ai/cx/ask" } else { "gen-ai/cx/topics" };
        let req = client.get(url(&sim, OUTAGE_CHAT, path)).header(TOKEN_HEADER, TOKEN);
        send(req)
    });
    let answers = futures::future::join_all(requests).await;
    let busy: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 429).map(|(_, b)| b).collect();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok + busy.len(), 25, "{answers:?}");
    assert!(!busy.is_empty());
    assert!(busy.iter().all(|b| code(b) == "TOO_MANY_REQUESTS"));
    let stats = sim.stats();
    assert_eq!(stats.max_in_flight, 10);
    assert_eq!(stats.rejected_busy, u64::try_from(busy.len()).unwrap());
    assert_eq!(sim.in_flight(), 0);
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_slot() {
    // The request would hold its slot for a second; the client gives up after 50 ms and
    // the slot is free long before the second is over: the dropped request gave it back.
    let sim = start_with(SimOptions { latency: Duration::from_secs(1), ..SimOptions::default() }).await;
    let started = std::time::Instant::now();
    let req = client().get(url(&sim, OUTAGE_CHAT, "gen-ai/cx/summary")).header(TOKEN_HEADER, TOKEN);
    assert!(req.timeout(Duration::from_millis(50)).send().await.is_err());
    while sim.in_flight() > 0 && started.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sim.in_flight(), 0);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(sim.stats().max_in_flight, 1);
}

#[tokio::test]
async fn injected_faults() {
    let sim = start().await;
    sim.fail_next(408, 1);
    // Authentication comes first and does not use up the fault.
    assert_eq!(send(client().get(url(&sim, BILLING_CALL, "gen-ai/cx/summary"))).await.0, 401);
    let (status, body) = get_json(&sim, BILLING_CALL, "gen-ai/cx/summary").await;
    assert_eq!((status, code(&body)), (408, "MODEL_TIMEOUT"));
    assert_eq!(get_json(&sim, BILLING_CALL, "gen-ai/cx/summary").await.0, 200);

    hook(&sim, "/_sim/fail_next", json!({ "status": 504, "count": 2 })).await;
    assert_eq!(code(&ask(&sim, BILLING_CALL, "Why?").await.1), "GATEWAY_TIMEOUT");
    let (status, body) = get_json(&sim, "not-a-guid", "gen-ai/topics").await;
    assert_eq!((status, code(&body)), (504, "GATEWAY_TIMEOUT"));
    assert_eq!(get_json(&sim, BILLING_CALL, "gen-ai/topics").await.0, 200);

    for (status, expected) in [(500, "INTERNAL_ERROR"), (503, "SERVICE_UNAVAILABLE"), (429, "TOO_MANY_REQUESTS")] {
        sim.fail_next(status, 1);
        let (got, body) = get_json(&sim, BILLING_CALL, "gen-ai/topics").await;
        assert_eq!((got, code(&body)), (status, expected));
    }
    // Faults are not the concurrency limit; declaration and status are not faulted.
    sim.fail_next(500, 1);
    assert_eq!(get_json(&sim, BILLING_CALL, "status").await.0, 200);
    assert_eq!(get_json(&sim, BILLING_CALL, "gen-ai/topics").await.0, 500);
    assert_eq!(sim.stats().rejected_busy, 0);
    assert_eq!(sim.stats().asks, 0);

    let bad = client().post(format!("{}/_sim/fail_next", sim.base_url())).json(&json!({ "status": 200, "count": 1 }));
    assert_eq!(bad.send().await.unwrap().status(), 400);
}

#[tokio::test]
async fn latency_and_stats_hooks() {
    let sim = start().await;
    hook(&sim, "/_sim/latency", json!({ "millis": 50 })).await;
    let started = std::time::Instant::now();
    assert_eq!(get_json(&sim, BILLING_CALL, "gen-ai/cx/summary").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(50));
    // The status route is not a gen-AI request and takes no latency.
    let started = std::time::Instant::now();
    assert_eq!(get_json(&sim, BILLING_CALL, "status").await.0, 200);
    assert!(started.elapsed() < Duration::from_millis(50));

    let (status, body) = send(client().get(format!("{}/_sim/stats", sim.base_url()))).await;
    assert_eq!(status, 200);
    let seen: SimStats = serde_json::from_value(body).unwrap();
    assert_eq!(seen, sim.stats());
    assert_eq!(seen.languages, [""]);
}

#[test]
fn helpers() {
    let summaries: BTreeMap<String, String> =
        [("en", "E"), ("pt", "P"), ("fr", "F")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    assert_eq!(summary_in(&summaries, None), "E");
    assert_eq!(summary_in(&summaries, Some("PT_br")), "P");
    assert_eq!(summary_in(&summaries, Some("pt;q=0, fr;q=0.1")), "F");
    assert_eq!(summary_in(&summaries, Some("*, fr")), "F");
    assert_eq!(summary_in(&summaries, Some(";;,")), "E");
    assert_eq!(sentences("One $89.99 two. Three? Four"), ["One $89.99 two.", "Three?", "Four"]);
    assert_eq!(upper_snake("Service Unavailable"), "SERVICE_UNAVAILABLE");
    assert_eq!(rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(951_868_799)), "2000-02-29T23:59:59Z");
}
