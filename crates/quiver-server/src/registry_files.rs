//! Validating definition files sent over the network exactly as `quiver apply` validates a
//! repository's, against the served sources.

use std::collections::HashMap;

use quiver_core::Definitions;
use quiver_ops::FeatureStore;
use tonic::Status;

use crate::error::status;

/// Validates `files` (name → YAML) as the complete definitions of the served project.
pub(crate) fn validate_files(
    store: &FeatureStore,
    files: &HashMap<String, String>,
) -> Result<Definitions, Status> {
    if files.is_empty() {
        return Err(Status::invalid_argument("no definition files given"));
    }
    let mut named = Vec::with_capacity(files.len());
    for (name, text) in files {
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && (name.ends_with(".yaml") || name.ends_with(".yml"));
        if !valid || name == quiver_registry::CONFIG_FILE {
            return Err(Status::invalid_argument(format!(
                "invalid definition file name '{name}' (expected a plain name ending in .yaml)"
            )));
        }
        named.push((name.into(), text.clone()));
    }
    named.sort();
    quiver_registry::validate_files(&named, &store.config().project, store.sources())
        .map_err(|e| status(&e))
}
