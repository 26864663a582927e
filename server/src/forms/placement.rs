//! Where a run may go: the worker requirements and priority every training form has, as text,
//! and their typed values (`aligndet_common::capabilities::Requirements`, the run's priority).
//! Left blank, the run needs what its config needs (its ranks; CUDA for fp16) at priority 0.

use super::{FieldError, number};
use aligndet_common::capabilities::{DeviceRequirement, Requirements};

#[derive(Default, serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default)]
pub struct PlacementForm {
    /// `any`, `cpu` or `cuda` (blank: any).
    pub device: String,
    /// Memory of each GPU, in GB (blank: any).
    pub min_gpu_memory_gb: String,
    /// Labels the worker must have, separated by spaces or commas.
    pub labels: String,
    /// −100..=100, higher first (blank: 0).
    pub priority: String,
}

/// The inputs of [`PlacementForm`] (their `name`s).
pub const INPUTS: &[&str] = &["device", "min_gpu_memory_gb", "labels", "priority"];

/// The requirement fields as the inputs that hold them (`requirements.<field>` → input).
pub fn input_of_requirement(field: &str) -> Option<&'static str> {
    match field.strip_prefix("requirements.")? {
        "device" => Some("device"),
        "min_gpu_memory_mb" => Some("min_gpu_memory_gb"),
        "labels" => Some("labels"),
        // the ranks come from the config's world size
        "devices" => Some("world_size"),
        _ => None,
    }
}

impl PlacementForm {
    /// The requirements typed (`None` when every input is blank: the config's needs) and the
    /// priority.
    pub fn parse(&self) -> Result<(Option<Requirements>, i32), FieldError> {
        let priority = number("priority", &self.priority)?.unwrap_or(0);
        if self.device.is_empty() && self.min_gpu_memory_gb.is_empty() && self.labels.is_empty() {
            return Ok((None, priority));
        }
        let device = match self.device.as_str() {
            "" | "any" => DeviceRequirement::Any,
            "cpu" => DeviceRequirement::Cpu,
            "cuda" => DeviceRequirement::Cuda,
            other => {
                return Err(FieldError::new(
                    "requirements.device",
                    format!("{other:?} is not one of any, cpu, cuda"),
                ));
            }
        };
        let gb = super::real("requirements.min_gpu_memory_mb", &self.min_gpu_memory_gb)?;
        if gb.is_some_and(|g| !(0.0..=4096.0).contains(&g)) {
            return Err(FieldError::new(
                "requirements.min_gpu_memory_mb",
                "give the GPU memory in GB, 0 to 4096",
            ));
        }
        let labels = self
            .labels
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        Ok((
            Some(Requirements {
                device,
                min_gpu_memory_mb: gb.map_or(0, |g| (g * 1024.0).round() as u64),
                devices: 0,
                labels,
            }),
            priority,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_means_the_config_s_needs_and_typed_values_become_requirements() {
        assert_eq!(PlacementForm::default().parse().unwrap(), (None, 0));
        let typed = PlacementForm {
            device: "cuda".into(),
            min_gpu_memory_gb: "40".into(),
            labels: "a100, site=lab2".into(),
            priority: "5".into(),
        };
        let (r, p) = typed.parse().unwrap();
        let r = r.unwrap();
        assert_eq!(
            (r.device, r.min_gpu_memory_mb, p),
            (DeviceRequirement::Cuda, 40960, 5)
        );
        assert_eq!(r.labels, vec!["a100", "site=lab2"]);
        let bad = PlacementForm {
            device: "tpu".into(),
            ..PlacementForm::default()
        };
        assert_eq!(bad.parse().unwrap_err().field, "requirements.device");
        assert_eq!(
            input_of_requirement("requirements.min_gpu_memory_mb"),
            Some("min_gpu_memory_gb")
        );
    }
}
