//! A run's config as the `runs.config` JSONB column holds it, decoded once when the row is read:
//! the JSON as stored (shown on the run page, compared on /compare) and the typed config, or why
//! it cannot be read (a config written by an older version, or a row inserted by hand).

use aligndet_common::jobs::JobConfig;
use serde_json::Value;
use sqlx::Postgres;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::types::Json;

#[derive(Debug, Clone)]
pub struct StoredConfig {
    pub json: Value,
    /// The typed config, or serde's reason it is not one.
    pub typed: Result<JobConfig, String>,
}

impl StoredConfig {
    pub fn new(json: Value) -> StoredConfig {
        let typed = serde_json::from_value(json.clone()).map_err(|e| e.to_string());
        StoredConfig { json, typed }
    }

    /// The typed config, when the stored one is readable.
    pub fn job(&self) -> Option<&JobConfig> {
        self.typed.as_ref().ok()
    }
}

impl sqlx::Type<Postgres> for StoredConfig {
    fn type_info() -> PgTypeInfo {
        <Json<Value> as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Json<Value> as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for StoredConfig {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let Json(json) = <Json<Value> as sqlx::Decode<'r, Postgres>>::decode(value)?;
        Ok(StoredConfig::new(json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_and_unreadable_configs() {
        let ok = StoredConfig::new(serde_json::json!({"kind": "benchmark"}));
        assert!(matches!(ok.job(), Some(JobConfig::Benchmark(_))));
        let bad = StoredConfig::new(serde_json::json!({"kind": "nope"}));
        assert!(bad.job().is_none());
        assert!(bad.typed.unwrap_err().contains("nope"));
    }
}
