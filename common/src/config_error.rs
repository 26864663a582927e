//! Why a config was refused: the field, named as the config names it, and the problem.

/// Why a config was rejected; names the field and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid config: {field}: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(field: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}
