//! Authentication and authorization failures.

/// Why a caller may not proceed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// 401: no key in `Authorization: Bearer` or `?access_token=`.
    #[error("an API key is required: send `Authorization: Bearer <key>` or `?access_token=<key>`")]
    Missing,
    /// 401: a key that no caller has.
    #[error("the API key is not valid")]
    Unknown,
    /// 401: a caller's key past its `not_after` (which key is not said).
    #[error("the API key has expired: use the caller's new key")]
    Expired,
    /// 403: the caller's key is not allowed on this provider.
    #[error("this API key may not use provider `{provider}`")]
    Forbidden { provider: String },
}
