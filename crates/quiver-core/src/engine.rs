//! Which engine computes training sets: Quiver's own (native) or the team's Spark cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// `quiver.yaml`'s `offline_engine`: where training sets are computed unless a request says
/// otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OfflineEngine {
    /// Quiver's own engine, in process (the default).
    #[default]
    Native,
    /// A Spark cluster reached through Spark Connect.
    Spark(SparkSettings),
}

impl OfflineEngine {
    /// The Spark settings, when the engine is Spark.
    pub fn spark(&self) -> Option<&SparkSettings> {
        match self {
            Self::Native => None,
            Self::Spark(s) => Some(s),
        }
    }

    /// The engine a request runs on: the one it asks for, else this one. `None` is the
    /// native engine; Spark asked for but not configured is an error.
    pub fn select(
        &self,
        requested: Option<EngineKind>,
    ) -> Result<Option<&SparkSettings>, CoreError> {
        match (requested.unwrap_or(EngineKind::of(self)), self) {
            (EngineKind::Native, _) => Ok(None),
            (EngineKind::Spark, Self::Spark(s)) => Ok(Some(s)),
            (EngineKind::Spark, Self::Native) => Err(CoreError::EngineNotConfigured),
        }
    }
}

/// How to reach a Spark cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkSettings {
    /// The Spark Connect endpoint, `sc://host:port` (port 15002 when left out).
    pub connect: String,
    /// Spark SQL settings for every session Quiver opens (`spark.sql.shuffle.partitions`…).
    #[serde(default)]
    pub conf: BTreeMap<String, String>,
    /// A folder the cluster reads at the same path (a shared filesystem, as for local
    /// sources) where entity tables beyond 16 MiB are written as Parquet for it to read.
    /// Without one they are uploaded as cached chunks, which the driver holds and plans into
    /// every task that scans them.
    #[serde(default)]
    pub staging: Option<PathBuf>,
}

/// The engine one request asks for (`--engine`, the Flight command's `engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Quiver's own engine.
    Native,
    /// The configured Spark cluster.
    Spark,
}

impl EngineKind {
    /// The kind of a configured engine.
    pub fn of(engine: &OfflineEngine) -> Self {
        match engine {
            OfflineEngine::Native => Self::Native,
            OfflineEngine::Spark(_) => Self::Spark,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Spark => "spark",
        })
    }
}

impl FromStr for EngineKind {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "native" => Ok(Self::Native),
            "spark" => Ok(Self::Spark),
            other => Err(CoreError::InvalidEngine(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engines_and_kinds() {
        let e: OfflineEngine =
            serde_json::from_str(r#"{"type": "spark", "connect": "sc://h:1"}"#).unwrap();
        assert_eq!(e.spark().unwrap().connect, "sc://h:1");
        assert_eq!(EngineKind::of(&e), EngineKind::Spark);
        let native: OfflineEngine = serde_json::from_str(r#"{"type": "native"}"#).unwrap();
        assert_eq!(native, OfflineEngine::Native);
        assert!("hive".parse::<EngineKind>().is_err());
        assert_eq!("spark".parse::<EngineKind>().unwrap(), EngineKind::Spark);
        assert!(e.select(None).unwrap().is_some());
        assert!(e.select(Some(EngineKind::Native)).unwrap().is_none());
        assert!(native.select(None).unwrap().is_none());
        assert_eq!(
            native.select(Some(EngineKind::Spark)),
            Err(CoreError::EngineNotConfigured)
        );
    }
}
