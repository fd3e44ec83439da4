//! The vendors this build knows: one entry each. From an entry come the
//! adapter of a configured provider of its `type`; a new vendor is its folder
//! (`providers/src/<vendor>/`), its config type and one entry here.

use std::sync::Arc;

use gateway_config::{ProviderConfig, VendorConfig};

use crate::outbound::AnswerBudget;
use crate::shared::SharedState;
use crate::vendor::Vendor;

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

/// Builds the adapter of a configured provider; errors are every problem found,
/// each with its path under the provider.
pub fn build(build: &Build<'_>) -> Result<Box<dyn Vendor>, Vec<String>> {
    let Build { name, config, shared, budget } = build;
    let name = Arc::clone(name);
    let common = &config.common;
    Ok(match &config.vendor {
        VendorConfig::CommBox(c) => Box::new(crate::commbox::CommBox::new(name, common, c, budget)?),
        VendorConfig::ElevateAi(c) => {
            Box::new(crate::elevateai::ElevateAi::new(name, common, c, shared.clone(), budget)?)
        }
        VendorConfig::Yeastar(c) => Box::new(crate::yeastar::Yeastar::new(name, common, c, shared.clone(), budget)?),
        VendorConfig::Http(c) => Box::new(crate::http::Declared::new(name, common, c, budget)?),
    })
}
