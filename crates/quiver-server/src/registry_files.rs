//! Validating definition files sent over the network exactly as `quiver apply` validates a
//! repository: they are laid out in a scratch repository whose sources are the served ones.

use std::collections::HashMap;

use quiver_core::Definitions;
use quiver_ops::FeatureStore;
use quiver_registry::{RegistryError, load_definitions};
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
    let scratch = tempfile::tempdir().map_err(|e| Status::internal(e.to_string()))?;
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
        std::fs::write(scratch.path().join(name), text)
            .map_err(|e| Status::internal(e.to_string()))?;
    }
    let mut config = store.config().clone();
    config.registry = "registry".into();
    load_definitions(scratch.path(), &config, store.sources()).map_err(|e| match e {
        RegistryError::Invalid(_) => Status::invalid_argument(
            e.to_string()
                .replace(&format!("{}/", scratch.path().display()), ""),
        ),
        other => status(&other),
    })
}
