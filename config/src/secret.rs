//! `Secret<T>`: a value that never prints.
//!
//! Debug, Display and Serialize all write `*****`, so a config dump, a log line
//! or an error message can never leak a key, a vendor token or a client secret
//! by accident. Reading the value is explicit: [`Secret::expose`].

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A secret value (API key, vendor token, client secret, webhook secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself. Call it only where the value is sent to its destination.
    pub const fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

thread_local! {
    /// Set while [`digest_of`] serializes: secrets write a digest instead of `*****`.
    static DIGESTING: Cell<bool> = const { Cell::new(false) };
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if DIGESTING.get() {
            // Only inside `digest_of`, whose output is itself hashed: a changed
            // secret changes the configuration's fingerprint, and neither the
            // value nor a digest of it alone ever leaves the process.
            let value = serde_json::to_vec(&self.0).map_err(serde::ser::Error::custom)?;
            return serializer.serialize_str(&hex::encode(Sha256::digest(value)));
        }
        serializer.serialize_str("*****")
    }
}

/// SHA-256 of `value` serialized as JSON, with every [`Secret`] in it counted
/// by a digest of its value (not masked): two values differing only in a secret
/// differ here.
pub fn digest_of<V: Serialize>(value: &V) -> Result<[u8; 32], serde_json::Error> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DIGESTING.set(false);
        }
    }
    DIGESTING.set(true);
    let _reset = Reset;
    let bytes = serde_json::to_vec(value)?;
    Ok(Sha256::digest(bytes).into())
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

/// The schema of the value itself, marked `writeOnly`: it goes in, never out.
impl<T: JsonSchema> JsonSchema for Secret<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Secret_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = generator.subschema_for::<T>();
        schema.insert("writeOnly".to_owned(), true.into());
        schema
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?} {s}"), "***** *****");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"*****\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
