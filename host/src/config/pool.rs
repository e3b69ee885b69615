//! `docker.execution.pool` and `kubernetes.pod.pool`: workloads started ahead of logins.
use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

/// Most workloads one pool keeps started.
pub const MAX_POOL_SIZE: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawPoolSettings")]
pub struct PoolSettings {
    /// How many started workloads to keep ready; 0 (the default) turns the pool off.
    #[serde(default)]
    pub size: usize,
    /// How many are started at once while refilling.
    #[serde(default = "default_refill_concurrency")]
    pub refill_concurrency: NonZeroUsize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            size: 0,
            refill_concurrency: default_refill_concurrency(),
        }
    }
}

impl PoolSettings {
    pub fn is_off(&self) -> bool {
        self.size == 0
    }
}

/// As written in the file, before the limits are checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPoolSettings {
    #[serde(default)]
    size: usize,
    #[serde(default = "default_refill_concurrency")]
    refill_concurrency: NonZeroUsize,
}

impl TryFrom<RawPoolSettings> for PoolSettings {
    type Error = String;

    fn try_from(raw: RawPoolSettings) -> Result<Self, String> {
        if raw.size > MAX_POOL_SIZE {
            return Err(format!(
                "pool size {} is more than {MAX_POOL_SIZE}",
                raw.size
            ));
        }
        Ok(Self {
            size: raw.size,
            refill_concurrency: raw.refill_concurrency,
        })
    }
}

fn default_refill_concurrency() -> NonZeroUsize {
    NonZeroUsize::MIN.saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_unknown_keys_are_errors() {
        let ok: PoolSettings = serde_json::from_str(r#"{"size": 3}"#).unwrap();
        assert_eq!(ok.size, 3);
        assert_eq!(ok.refill_concurrency.get(), 2);
        let too_big = serde_json::from_str::<PoolSettings>(r#"{"size": 5000}"#).unwrap_err();
        assert!(too_big.to_string().contains("more than 1000"), "{too_big}");
        let zero = serde_json::from_str::<PoolSettings>(r#"{"size": 1, "refillConcurrency": 0}"#);
        assert!(zero.is_err());
        let unknown = serde_json::from_str::<PoolSettings>(r#"{"sise": 1}"#).unwrap_err();
        assert!(unknown.to_string().contains("sise"), "{unknown}");
    }
}
