//! The vendors this build knows: [`VENDORS`], one entry each. From an entry
//! come the config type of its `type` (parsing, the JSON Schema and the
//! reference: [`config_types`]), the adapter of a configured provider of that
//! type ([`build`]) and, with the `sim` feature, its simulator for `demo` and
//! `simulate`. A new vendor is its folder (`providers/src/<vendor>/`), its config
//! type and one entry here.

use std::sync::Arc;

use gateway_config::providers::{commbox::CommBoxConfig, elevateai::ElevateAiConfig, yeastar::YeastarConfig};
use gateway_config::{CommonConfig, HttpConfig, ProviderConfig, VendorOf, VendorSettings, VendorType};

use crate::outbound::AnswerBudget;
use crate::shared::SharedState;
use crate::vendor::Vendor;

/// One vendor of this build.
pub struct Entry {
    /// Its `type`: the keys it takes and how they are checked.
    pub config: &'static dyn VendorType,
    /// Its adapter, for a provider of its `type`.
    pub build: BuildFn,
    /// Its simulator, if it has one (`type: http` has none: it is whichever vendor it describes).
    #[cfg(any(test, feature = "sim"))]
    pub simulator: Option<&'static crate::sim_hooks::Simulator>,
}

/// Builds an adapter; errors are every problem found, each with its path under the provider.
pub type BuildFn = fn(&Build<'_>) -> Result<Box<dyn Vendor>, Vec<String>>;

/// The vendors of this build, in the order the schema and the reference list them.
pub static VENDORS: &[Entry] = &[
    Entry {
        config: &VendorOf::<CommBoxConfig>::NEW,
        build: |b| Ok(Box::new(crate::commbox::CommBox::new(b.name(), b.common(), b.settings()?, b.budget)?)),
        #[cfg(any(test, feature = "sim"))]
        simulator: Some(&crate::commbox::simulator::SIMULATOR),
    },
    Entry {
        config: &VendorOf::<ElevateAiConfig>::NEW,
        build: |b| {
            let (name, common, shared) = (b.name(), b.common(), b.shared.clone());
            Ok(Box::new(crate::elevateai::ElevateAi::new(name, common, b.settings()?, shared, b.budget)?))
        },
        #[cfg(any(test, feature = "sim"))]
        simulator: Some(&crate::elevateai::simulator::SIMULATOR),
    },
    Entry {
        config: &VendorOf::<YeastarConfig>::NEW,
        build: |b| {
            let (name, common, shared) = (b.name(), b.common(), b.shared.clone());
            Ok(Box::new(crate::yeastar::Yeastar::new(name, common, b.settings()?, shared, b.budget)?))
        },
        #[cfg(any(test, feature = "sim"))]
        simulator: Some(&crate::yeastar::simulator::SIMULATOR),
    },
    Entry {
        config: &VendorOf::<HttpConfig>::NEW,
        build: |b| Ok(Box::new(crate::http::Declared::new(b.name(), b.common(), b.settings()?, b.budget)?)),
        #[cfg(any(test, feature = "sim"))]
        simulator: None,
    },
];

/// The config types of [`VENDORS`]: what `gateway_config::Config`'s loaders,
/// `json_schema` and `reference_markdown` take.
pub fn config_types() -> Vec<&'static dyn VendorType> {
    VENDORS.iter().map(|entry| entry.config).collect()
}

/// The vendors that have a simulator, with it.
#[cfg(any(test, feature = "sim"))]
pub fn simulators() -> impl Iterator<Item = (&'static str, &'static crate::sim_hooks::Simulator)> {
    VENDORS.iter().filter_map(|entry| Some((entry.config.type_name(), entry.simulator?)))
}

/// What an adapter is built from.
pub struct Build<'a> {
    /// The provider's name (metric labels, log fields).
    pub name: &'a Arc<str>,
    pub config: &'a ProviderConfig,
    /// State shared with the other replicas, if there are others.
    pub shared: Option<Arc<dyn SharedState>>,
    /// The bytes of vendor answers the process's providers buffer at once.
    pub budget: &'a AnswerBudget,
}

impl Build<'_> {
    pub fn name(&self) -> Arc<str> {
        Arc::clone(self.name)
    }

    pub fn common(&self) -> &CommonConfig {
        &self.config.common
    }

    /// The provider's vendor keys as its entry's config type `T`.
    pub fn settings<T: VendorSettings>(&self) -> Result<&T, Vec<String>> {
        self.config.vendor.settings::<T>().ok_or_else(|| {
            vec![format!("type: the keys of type `{}` are not those of `{}`", self.config.vendor.type_name(), T::TYPE)]
        })
    }
}

/// Builds the adapter of a configured provider with the entry of its `type`;
/// errors are every problem found, each with its path under the provider.
pub fn build(build: &Build<'_>) -> Result<Box<dyn Vendor>, Vec<String>> {
    let type_name = build.config.vendor.type_name();
    let entry = VENDORS
        .iter()
        .find(|entry| entry.config.type_name() == type_name)
        .ok_or_else(|| vec![format!("type: no vendor `{type_name}` in this build")])?;
    (entry.build)(build)
}

#[cfg(test)]
mod tests;
