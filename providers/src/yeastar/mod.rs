//! Yeastar P-Series: `GET /openapi/v2.0/cdr/getaisummary` by call leg and party.
//!
//! - [`Yeastar`]: the adapter — request validation, the call with its token in the
//!   query string, errcode mapping, HTML → canonical content.
//! - [`token`]: the shared access token (single flight, refresh ahead, one login for
//!   the fleet through the shared store, never retry a rejected credential).
//! - HTML summary → sections: [`crate::content::html`] (shared with `type: http`).
//! - [`simulator`]: a faithful stand-in for the PBX, used by tests and the demo.
//! - `fixtures/`: the vendor docs' example and the simulator's seed data.
//!
//! Vendor facts (PROVIDERS.md): errors come as HTTP 200 with a non-zero `errcode`;
//! `data` is keyed `src` or `dst` whichever party was asked; `created_at` may be a
//! string or an integer.

#[cfg(any(test, feature = "sim"))]
pub mod simulator;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_config::CommonConfig;
use gateway_config::providers::yeastar::YeastarConfig;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use url::Url;

use self::token::TokenManager;
use crate::canonical::{Content, Kind, Participant, Party};
use crate::error::{ProviderError, RequestProblem, VendorDetail};
use crate::mapping::{Mappings, SectionSpec};
use crate::metrics::VendorCodes;
use crate::outbound::{Answer, AnswerBudget, Outbound};
use crate::shared::SharedState;
use crate::vendor::{Completed, Input, Started, SummaryRequest, Vendor};

/// Errcode: the access token expired (refresh and retry once).
const TOKEN_EXPIRED: i64 = 10_004;

/// The errcodes PROVIDERS.md lists (and 0: an answer without a summary; 20002:
/// a refused login, the simulator's guess), and the statuses told apart: the
/// `vendor_code` label's values.
pub const VENDOR_CODES: VendorCodes = VendorCodes {
    codes: &[
        "-2", "-1", "0", "2", "10001", "10004", "10005", "20002", "40001", "40002", "60001", "60002", "70004", "70087",
        "70120",
    ],
    statuses: &crate::metrics::COMMON_STATUSES,
};

/// The Yeastar adapter of one configured provider.
pub struct Yeastar {
    provider: Arc<str>,
    out: Outbound,
    tokens: TokenManager,
    summary_url: Url,
    mappings: Mappings,
}

/// The built-in mapping of `getaisummary`'s answer. The record is under
/// `data.src` or `data.dst` (whichever the PBX chose; the docs' own example
/// asks for the caller and answers under `dst`), hence `data.*`.
pub const MAPPING: &[SectionSpec] = &[SectionSpec {
    name: "summary",
    fields: &[
        ("text", Some("$.data.*.summary")),
        ("participant_name", Some("$.data.*.name")),
        ("participant_extension", Some("$.data.*.ext_num")),
        ("summary_id", Some("$.data.*.id")),
        ("call_id", Some("$.data.*.call_id")),
        ("created_at", Some("$.data.*.created_at")),
        ("updated_at", Some("$.data.*.updated_at")),
    ],
    content: true,
}];

impl Yeastar {
    /// Kinds a PBX can produce.
    pub const KINDS: &'static [Kind] = &[Kind::Summary];

    /// `shared`: where the replicas of the gateway keep one token for the fleet
    /// (None: this process logs in on its own). `budget`: the bytes of answers
    /// the process's providers buffer at once.
    pub fn new(
        provider: Arc<str>,
        common: &CommonConfig,
        config: &YeastarConfig,
        shared: Option<Arc<dyn SharedState>>,
        budget: &AnswerBudget,
    ) -> Result<Self, Vec<String>> {
        Mappings::build_adapter(MAPPING, &common.mappings, |m| {
            Self::with_mappings(provider, common, config, m, shared, budget)
        })
    }

    fn with_mappings(
        provider: Arc<str>,
        common: &CommonConfig,
        config: &YeastarConfig,
        mappings: Mappings,
        shared: Option<Arc<dyn SharedState>>,
        budget: &AnswerBudget,
    ) -> Result<Self, String> {
        let mut base = config.base_url.clone().ok_or("base_url is required")?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let out = Outbound::new(common, &config.user_agent, budget.clone()).map_err(|e| format!("HTTP client: {e}"))?;
        let tokens = TokenManager::new(
            Arc::clone(&provider),
            &base,
            config.client_id(),
            config.client_secret(),
            config.token_refresh_margin,
            shared,
        )
        .map_err(|e| format!("base_url: {e}"))?;
        let summary_url = base.join("openapi/v2.0/cdr/getaisummary").map_err(|e| format!("base_url: {e}"))?;
        Ok(Self { provider, out, tokens, summary_url, mappings })
    }

    /// False once the PBX has rejected the gateway's credentials.
    pub fn is_available(&self) -> bool {
        !self.tokens.is_rejected()
    }

    /// Checks a request's conversation fits this vendor before any call
    /// (the kind is checked by [`crate::Provider::validate`]).
    pub fn validate(req: &SummaryRequest) -> Result<(), RequestProblem> {
        let c = &req.conversation;
        if c.text.is_some() {
            return Err(RequestProblem::Invalid(
                "conversation.text: yeastar providers summarize recorded calls; give conversation.id, party and extension_id".into(),
            ));
        }
        let Some(id) = &c.id else {
            return Err(RequestProblem::Invalid(
                "conversation.id: required (the call leg id, e.g. 20260513223234-3EE9E)".into(),
            ));
        };
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(RequestProblem::Invalid(
                "conversation.id: a call leg id is 1-64 characters of letters, digits, `-`, `_` and `.`".into(),
            ));
        }
        if c.party.is_none() {
            return Err(RequestProblem::Invalid(
                "conversation.party: required for yeastar (`caller` or `callee`)".into(),
            ));
        }
        if c.extension_id.is_none() {
            return Err(RequestProblem::Invalid("conversation.extension_id: required for yeastar (an integer)".into()));
        }
        Ok(())
    }

    /// Fetches the summary of one call leg and party.
    pub async fn summarize(&self, req: &SummaryRequest) -> Result<Completed, ProviderError> {
        let c = &req.conversation;
        let (Some(cdr_id), Some(party), Some(ext)) = (c.id.as_deref(), c.party, c.extension_id) else {
            return Err(ProviderError::Rejected {
                message: "incomplete conversation".into(),
                vendor: VendorDetail::default(),
            });
        };
        let _slot = self.out.slot().await?;
        let deadline = Instant::now() + self.out.timeout();
        let mut token = self.tokens.get(&self.out).await?;
        let mut replaced = false;
        let mut busy_retries = 0_u32;
        loop {
            let mut url = self.summary_url.clone();
            url.query_pairs_mut()
                .append_pair("access_token", token.access())
                .append_pair("cdr_id", cdr_id)
                .append_pair(party_param(party), &ext.to_string());
            let answer = self.out.send(self.out.client().get(url)).await?;
            if matches!(answer.status, 429 | 503) {
                // Retryable per field reports; back off inside the request's deadline.
                let backoff = Duration::from_millis(200 * 4_u64.pow(busy_retries));
                if busy_retries < 2 && Instant::now() + backoff < deadline {
                    busy_retries += 1;
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                return Err(ProviderError::Unavailable {
                    message: "the PBX is busy".into(),
                    retry_after: answer.retry_after().unwrap_or(Duration::from_secs(5)),
                    vendor: VendorDetail::new(Some(answer.status), None, None),
                });
            }
            let envelope = parse_envelope(&answer)?;
            match envelope.errcode {
                0 => return self.map_summary(party, envelope.rest),
                TOKEN_EXPIRED if !replaced => {
                    tracing::debug!(provider = %self.provider, "yeastar: token expired at the PBX; renewing and retrying once");
                    token = self.tokens.replace(&self.out, token.generation).await?;
                    replaced = true;
                }
                code => return Err(errcode_error(code, envelope.errmsg.as_deref())),
            }
        }
    }
}

impl Yeastar {
    /// A successful answer → canonical parts, through the mapping.
    fn map_summary(&self, asked: Party, rest: Map<String, Value>) -> Result<Completed, ProviderError> {
        let root = Value::Object(rest);
        let m = self.mappings.section("summary");
        let Some(html) = m.raw_text("text", &root) else {
            return Err(ProviderError::NotFound {
                message: "the PBX answered without a summary for this call leg".into(),
                vendor: VendorDetail::new(Some(200), Some(0.into()), None),
            });
        };
        let mut sections = crate::content::html::sections_from_html(html);
        sections.extend(m.listed_sections(&root, None));
        let participant = Participant {
            role: asked.as_str().to_owned(),
            name: m.string("participant_name", &root),
            extension: m.string("participant_extension", &root),
        };
        let mut provider_ref = Map::new();
        if let Some(id) = m.value("summary_id", &root) {
            provider_ref.insert("summary_id".into(), id.clone());
        }
        if let Some(call_id) = m.string("call_id", &root) {
            provider_ref.insert("call_id".into(), json!(call_id));
        }
        Ok(Completed {
            content: Content::from_sections(sections),
            data: None,
            participants: vec![participant],
            provider_ref: Some(Value::Object(provider_ref)),
            created_at: m.value("created_at", &root).and_then(timestamp),
            updated_at: m.value("updated_at", &root).and_then(timestamp),
        })
    }
}

const fn party_param(party: Party) -> &'static str {
    match party {
        Party::Caller => "src_ext_id",
        Party::Callee => "dst_ext_id",
    }
}

/// Every Yeastar answer: `errcode`, `errmsg`, and the rest of the fields.
pub(crate) struct Envelope {
    pub errcode: i64,
    pub errmsg: Option<String>,
    pub rest: Map<String, Value>,
}

/// Reference in (a call leg and party), synchronous; language is not the caller's to choose.
#[async_trait::async_trait]
impl Vendor for Yeastar {
    fn input(&self) -> Input {
        Input::Reference
    }

    fn vendor_codes(&self) -> &'static VendorCodes {
        &VENDOR_CODES
    }

    fn kinds(&self) -> &[Kind] {
        Self::KINDS
    }

    fn is_available(&self) -> bool {
        Self::is_available(self)
    }

    fn validate(&self, req: &SummaryRequest) -> Result<(), RequestProblem> {
        Self::validate(req)
    }

    async fn start(&self, req: &SummaryRequest, _callback: Option<&Url>) -> Result<Started, ProviderError> {
        self.summarize(req).await.map(Started::Done)
    }
}

pub(crate) fn parse_envelope(answer: &Answer) -> Result<Envelope, ProviderError> {
    if (500..=599).contains(&answer.status) {
        // The PBX failing, as for the other vendors (and what the circuit breaker counts).
        return Err(ProviderError::Unavailable {
            message: format!("the PBX failed (HTTP {})", answer.status),
            retry_after: answer.retry_after().unwrap_or(Duration::from_secs(5)),
            vendor: VendorDetail::new(Some(answer.status), None, None),
        });
    }
    if answer.status != 200 {
        return Err(ProviderError::bad_answer(answer.status, &format!("HTTP {}", answer.status)));
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&answer.body) else {
        return Err(ProviderError::bad_answer(answer.status, "something that is not a JSON object"));
    };
    let errcode = match fields.remove("errcode") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ProviderError::bad_answer(answer.status, "an answer without errcode"))?;
    let errmsg = match fields.remove("errmsg") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(Envelope { errcode, errmsg, rest: fields })
}

/// Maps a non-zero errcode to the gateway's error table.
pub(crate) fn errcode_error(errcode: i64, errmsg: Option<&str>) -> ProviderError {
    let vendor = VendorDetail::new(Some(200), Some(errcode.into()), errmsg);
    let rejected = |message: &str| ProviderError::Rejected { message: message.to_owned(), vendor: vendor.clone() };
    match errcode {
        2 => ProviderError::NotReady {
            message: "the PBX is still processing this call's summary".into(),
            retry_after: Duration::from_secs(30),
            vendor,
        },
        60_001 => {
            ProviderError::NotFound { message: "the PBX has no summary for this call leg and party".into(), vendor }
        }
        60_002 => ProviderError::Unavailable {
            message: "the PBX's request limit is exceeded".into(),
            retry_after: Duration::from_secs(60),
            vendor,
        },
        70_004 => ProviderError::Unavailable {
            message: "the PBX has blocked the gateway's IP address after failed logins".into(),
            retry_after: Duration::from_secs(600),
            vendor,
        },
        10_001 => rejected("the PBX does not offer this interface (API v2.0 needed)"),
        10_004 => rejected("the PBX refused a freshly renewed access token"),
        10_005 => rejected("the PBX denied access to this summary"),
        40_001 | 40_002 => rejected("the PBX rejected the request's parameters"),
        70_087 => rejected("the PBX forbids the gateway's IP address"),
        70_120 => rejected("the organization is disabled on the PBX"),
        _ => rejected("the PBX answered with an error"),
    }
}

/// Seconds since the epoch, given as an integer or a string of digits.
fn timestamp(v: &Value) -> Option<SystemTime> {
    let secs = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    (secs > 0).then(|| UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
