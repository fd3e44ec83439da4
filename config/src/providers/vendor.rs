//! What a vendor type is to the configuration: [`VendorSettings`], implemented by
//! each vendor's config struct in its own file, and [`VendorType`], the same seen
//! through a `dyn` so that the list of types a build knows is a value (the
//! providers crate's registry) rather than an enum here.
//!
//! The loader, the JSON Schema and the reference take that list
//! (`&[&dyn VendorType]`); a parsed provider holds its settings type-erased in
//! [`VendorConfig`], and its adapter gets them back with [`VendorConfig::settings`].

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::DeserializeOwned;
use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::CommonConfig;
use crate::EnvLookup;
use crate::error::{ConfigError, deserialize_all};
use crate::schema::properties;

/// A common key whose default a vendor type changes: `max_concurrency` is 10 for
/// a vendor that refuses more per account. The loader applies it and the schema
/// (so the reference) shows it with `why`.
#[derive(Debug, Clone)]
pub struct CommonDefault {
    pub key: &'static str,
    pub default: Value,
    /// Why, one clause: "ElevateAI refuses more concurrent requests per account".
    pub why: &'static str,
}

/// The keys of one provider `type` besides the common ones: a serde struct with
/// `deny_unknown_fields`, documented by its `///` comments (they are the reference).
pub trait VendorSettings:
    DeserializeOwned + Serialize + JsonSchema + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The `type` in YAML (`yeastar`).
    const TYPE: &'static str;
    /// The name of its provider schema in `$defs` (`YeastarProvider`).
    const DEF: &'static str;
    /// Its worked example, a file in `config/examples/` the reference links to.
    const EXAMPLE: Option<&'static str> = None;

    /// Rules serde cannot check (required keys, ranges, URLs) and `*_env` secrets
    /// resolved with `env`; every problem pushed with its path under `path`
    /// (`providers.<name>`).
    fn resolve(&mut self, path: &str, env: &EnvLookup, errors: &mut Vec<ConfigError>);

    /// Common keys whose default this type changes.
    fn common_defaults() -> Vec<CommonDefault> {
        Vec::new()
    }

    /// Declaration order of the keys of the structs nested in it, by `$defs`
    /// name (`[("HttpJob", field_names::<HttpJob>())]`), so the reference lists
    /// them as declared.
    fn nested_field_orders() -> Vec<(&'static str, &'static [&'static str])> {
        Vec::new()
    }
}

/// A vendor type as the loader, the schema and the reference use it; for a
/// [`VendorSettings`] struct it is [`VendorOf`]`::<T>::NEW`.
pub trait VendorType: Send + Sync {
    /// The `type` in YAML.
    fn type_name(&self) -> &'static str;
    /// The `$defs` name of its provider schema.
    fn def_name(&self) -> &'static str;
    /// Its example file in `config/examples/`, if it has one.
    fn example(&self) -> Option<&'static str>;
    /// Parses the vendor's keys of `providers.<name>` (`path`), `type` and the
    /// common keys already taken out.
    fn parse(&self, path: &str, fields: Value, env: &EnvLookup, errors: &mut Vec<ConfigError>) -> Option<VendorConfig>;
    /// `providers.<name>` with this `type`: a `$ref` into `generator`'s definitions.
    fn provider_schema(&self, generator: &mut SchemaGenerator) -> Schema;
    /// Its own keys in declaration order.
    fn fields(&self) -> &'static [&'static str];
    /// See [`VendorSettings::common_defaults`].
    fn common_defaults(&self) -> Vec<CommonDefault>;
    /// See [`VendorSettings::nested_field_orders`].
    fn nested_field_orders(&self) -> Vec<(&'static str, &'static [&'static str])>;
}

/// The [`VendorType`] of a [`VendorSettings`] struct.
pub struct VendorOf<T>(PhantomData<fn() -> T>);

impl<T> VendorOf<T> {
    /// For a registry entry: `&VendorOf::<YeastarConfig>::NEW`.
    pub const NEW: Self = Self(PhantomData);
}

impl<T: VendorSettings> VendorType for VendorOf<T> {
    fn type_name(&self) -> &'static str {
        T::TYPE
    }

    fn def_name(&self) -> &'static str {
        T::DEF
    }

    fn example(&self) -> Option<&'static str> {
        T::EXAMPLE
    }

    fn parse(&self, path: &str, fields: Value, env: &EnvLookup, errors: &mut Vec<ConfigError>) -> Option<VendorConfig> {
        deserialize_all::<T>(path, fields, errors).map(|mut settings| {
            settings.resolve(path, env, errors);
            VendorConfig::new(settings)
        })
    }

    fn provider_schema(&self, generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<ProviderOfType<T>>()
    }

    fn fields(&self) -> &'static [&'static str] {
        field_names::<T>()
    }

    fn common_defaults(&self) -> Vec<CommonDefault> {
        T::common_defaults()
    }

    fn nested_field_orders(&self) -> Vec<(&'static str, &'static [&'static str])> {
        T::nested_field_orders()
    }
}

/// The vendor-specific part of a provider: its `type` and its settings, whose
/// struct the vendor's adapter knows ([`VendorConfig::settings`]).
#[derive(Clone)]
pub struct VendorConfig {
    type_name: &'static str,
    settings: Arc<dyn Settings>,
}

impl VendorConfig {
    pub fn new<T: VendorSettings>(settings: T) -> Self {
        Self { type_name: T::TYPE, settings: Arc::new(settings) }
    }

    /// The `type` as written in YAML.
    pub const fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The settings, if they are a `T` (the adapter of `T::TYPE` asks for its own).
    pub fn settings<T: VendorSettings>(&self) -> Option<&T> {
        let settings: &dyn Any = &*self.settings;
        settings.downcast_ref::<T>()
    }
}

/// What [`VendorConfig`] needs of its settings, object-safe.
trait Settings: Any + fmt::Debug + Send + Sync {
    fn eq_settings(&self, other: &dyn Settings) -> bool;
    /// As serde writes them. A YAML value: its maps keep the fields' order (a
    /// JSON one would sort them), so `check-config --print` lists them as declared.
    fn to_tree(&self) -> Result<serde_yaml::Value, serde_yaml::Error>;
}

impl<T: VendorSettings> Settings for T {
    fn eq_settings(&self, other: &dyn Settings) -> bool {
        let other: &dyn Any = other;
        other.downcast_ref::<T>() == Some(self)
    }

    fn to_tree(&self) -> Result<serde_yaml::Value, serde_yaml::Error> {
        serde_yaml::to_value(self)
    }
}

impl PartialEq for VendorConfig {
    fn eq(&self, other: &Self) -> bool {
        self.type_name == other.type_name && self.settings.eq_settings(&*other.settings)
    }
}

impl fmt::Debug for VendorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(self.type_name).field(&self.settings).finish()
    }
}

/// `type` first, then the vendor's keys (flattened into `providers.<name>`).
impl Serialize for VendorConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tree = self.settings.to_tree().map_err(S::Error::custom)?;
        let serde_yaml::Value::Mapping(fields) = tree else {
            return Err(S::Error::custom(format!("the settings of type `{}` are not a map", self.type_name)));
        };
        let mut map = serializer.serialize_map(Some(fields.len() + 1))?;
        map.serialize_entry("type", self.type_name)?;
        for (key, value) in &fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The serde field names of a struct, in declaration order (what `deny_unknown_fields`
/// accepts), read from its `Deserialize` impl.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    crate::reference::serde_fields::<T>()
}

/// `providers.<name>` as written for one `type`: the common keys and the vendor's,
/// in one map that denies any other key (what the loader accepts).
struct ProviderOfType<V>(PhantomData<V>);

impl<V: VendorSettings> JsonSchema for ProviderOfType<V> {
    fn schema_name() -> Cow<'static, str> {
        V::DEF.into()
    }

    fn schema_id() -> Cow<'static, str> {
        format!("{}::{}", module_path!(), V::DEF).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let common = CommonConfig::json_schema(generator).to_value();
        let vendor = V::json_schema(generator).to_value();
        let mut props = Map::new();
        props.insert(
            "type".to_owned(),
            serde_json::json!({ "const": V::TYPE, "description": format!("`{}`: this vendor.", V::TYPE) }),
        );
        props.extend(properties(&vendor));
        let overrides = V::common_defaults();
        for (key, mut schema) in properties(&common) {
            if let Some(o) = overrides.iter().find(|o| o.key == key) {
                let text = schema.get("description").and_then(Value::as_str).unwrap_or_default();
                let text = format!("{text} For `{}` it defaults to {}: {}.", V::TYPE, o.default, o.why);
                schema["description"] = Value::from(text);
                schema["default"] = o.default.clone();
            }
            props.insert(key, schema);
        }
        let mut required = vec![Value::from("type")];
        required.extend(vendor.get("required").and_then(Value::as_array).cloned().unwrap_or_default());
        let mut schema = json_schema!({
            "title": format!("providers.<name> with type: {}", V::TYPE),
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        });
        for key in ["description", "allOf"] {
            if let Some(value) = vendor.get(key) {
                schema.insert(key.to_owned(), value.clone());
            }
        }
        schema
    }
}
