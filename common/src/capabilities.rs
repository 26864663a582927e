//! What a worker has ([`Capabilities`], sent when it registers) and what a run needs
//! ([`Requirements`], stored with the run). A worker claims only runs it satisfies; the server
//! does the matching in its claim statement, and [`Requirements::unmet_by`] says in words why a
//! worker does not qualify (the run page's "waits for …").

use crate::config_error::ConfigError;
use crate::jobs::JobConfig;
use crate::optim_config::Precision;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

/// A worker's hardware and software, as it measured them at start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub device: DeviceKind,
    /// e.g. "NVIDIA H100 80GB HBM3"; the first GPU's.
    pub gpu_model: Option<String>,
    /// Memory of the smallest of its GPUs, in MiB (0 without CUDA).
    pub gpu_memory_mb: u64,
    /// GPUs it may use for one job (0 without CUDA).
    pub gpu_count: u32,
    pub cuda_version: Option<String>,
    pub libtorch_version: String,
    pub cpu_threads: u32,
    /// Free space where it keeps its downloads, in MiB.
    pub cache_free_mb: Option<u64>,
    /// Free-form labels (`--label a100`, `--label site=lab2`).
    pub labels: Vec<String>,
}

impl Capabilities {
    /// The data-parallel ranks it can run: one per GPU, or one per CPU core.
    pub fn devices(&self) -> u32 {
        match self.device {
            DeviceKind::Cuda => self.gpu_count,
            DeviceKind::Cpu => self.cpu_threads,
        }
    }

    /// What a worker that sent none is taken to have, from its device name: one CPU core, or
    /// one GPU of unknown memory.
    pub fn assumed_for_device(device: &str) -> Capabilities {
        let cuda = device.starts_with("cuda");
        Capabilities {
            device: if cuda {
                DeviceKind::Cuda
            } else {
                DeviceKind::Cpu
            },
            gpu_count: cuda as u32,
            cpu_threads: 1,
            ..Capabilities::default()
        }
    }

    /// Refuses labels that are not names, and more than 16 of them.
    pub fn validate(&self) -> Result<(), String> {
        if self.labels.len() > MAX_LABELS {
            return Err(format!("at most {MAX_LABELS} labels"));
        }
        for l in &self.labels {
            check_label(l)?;
        }
        let text = [&self.gpu_model, &self.cuda_version]
            .into_iter()
            .flatten()
            .chain(std::iter::once(&self.libtorch_version));
        for t in text {
            if t.len() > 200 || t.chars().any(char::is_control) {
                return Err(format!("{t:?} is not a short line of text"));
            }
        }
        Ok(())
    }

    /// One line for the pages: "cuda, 2 × NVIDIA H100 (80 GB), labels a100".
    pub fn summary(&self) -> String {
        let mut s = match self.device {
            DeviceKind::Cpu => format!("cpu, {} threads", self.cpu_threads),
            DeviceKind::Cuda => format!(
                "cuda, {} × {} ({} GB)",
                self.gpu_count,
                self.gpu_model.as_deref().unwrap_or("GPU"),
                self.gpu_memory_mb / 1024
            ),
        };
        if !self.labels.is_empty() {
            s.push_str(&format!(", labels {}", self.labels.join(" ")));
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRequirement {
    /// Whatever the worker has.
    #[default]
    Any,
    Cpu,
    Cuda,
}

/// What a run needs of the worker that claims it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Requirements {
    pub device: DeviceRequirement,
    /// Memory of each GPU, in MiB (0: any).
    pub min_gpu_memory_mb: u64,
    /// Devices for its ranks (GPUs on CUDA, cores on CPU); 1 at least.
    pub devices: u32,
    /// Labels the worker must all have.
    pub labels: Vec<String>,
}

/// Most labels a run or worker may carry, and their length.
const MAX_LABELS: usize = 16;
const MAX_LABEL_LEN: usize = 64;

/// A label: letters, digits and `_ - . = :`, 1..=64 characters.
pub fn check_label(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.=:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label {label:?} must be 1 to {MAX_LABEL_LEN} letters, digits or _ - . = :"
        ))
    }
}

impl Requirements {
    /// What `config` needs at the least: as many devices as its ranks, CUDA for fp16.
    pub fn for_config(config: &JobConfig) -> Requirements {
        let optim = config.optim();
        Requirements {
            device: match optim.map(|o| o.precision) {
                Some(Precision::Fp16) => DeviceRequirement::Cuda,
                _ => DeviceRequirement::Any,
            },
            min_gpu_memory_mb: 0,
            devices: optim.map_or(1, |o| o.world_size),
            labels: Vec::new(),
        }
    }

    /// These requirements with what they leave open taken from `config`: no `devices` (0) means
    /// the config's ranks, `any` device the CUDA that fp16 needs.
    pub fn completed_for(mut self, config: &JobConfig) -> Requirements {
        let needed = Requirements::for_config(config);
        if self.devices == 0 {
            self.devices = needed.devices;
        }
        if self.device == DeviceRequirement::Any {
            self.device = needed.device;
        }
        self
    }

    /// Refuses what no worker could satisfy or what contradicts `config`, naming the field
    /// (`requirements.<field>`).
    pub fn validate(&self, config: &JobConfig) -> Result<(), ConfigError> {
        let err = |field: &str, problem: String| {
            ConfigError::new(&format!("requirements.{field}"), problem)
        };
        let needed = Requirements::for_config(config);
        if self.devices < needed.devices {
            return Err(err(
                "devices",
                format!(
                    "the config runs {} ranks (optim.world_size): ask for at least {} devices",
                    needed.devices, needed.devices
                ),
            ));
        }
        if needed.device == DeviceRequirement::Cuda && self.device != DeviceRequirement::Cuda {
            return Err(err(
                "device",
                "optim.precision fp16 needs a CUDA worker: ask for cuda".into(),
            ));
        }
        if self.device == DeviceRequirement::Cpu && self.min_gpu_memory_mb > 0 {
            return Err(err(
                "min_gpu_memory_mb",
                "a CPU run needs no GPU memory: leave it 0 or ask for cuda".into(),
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(err("labels", format!("at most {MAX_LABELS} labels")));
        }
        for l in &self.labels {
            check_label(l).map_err(|e| err("labels", e))?;
        }
        Ok(())
    }

    /// Why `worker` cannot run this (`None`: it can). The server's claim statement applies the
    /// same rules in SQL.
    pub fn unmet_by(&self, worker: &Capabilities) -> Option<String> {
        let mut missing = Vec::new();
        match (self.device, worker.device) {
            (DeviceRequirement::Cuda, DeviceKind::Cpu) => missing.push("cuda".to_string()),
            (DeviceRequirement::Cpu, DeviceKind::Cuda) => missing.push("a cpu device".to_string()),
            _ => {}
        }
        if self.min_gpu_memory_mb > 0 && worker.gpu_memory_mb < self.min_gpu_memory_mb {
            missing.push(format!("≥ {} GB GPU memory", self.min_gpu_memory_mb / 1024));
        }
        if worker.devices() < self.devices.max(1) {
            missing.push(format!("{} devices", self.devices));
        }
        let absent: Vec<&str> = self
            .labels
            .iter()
            .filter(|l| !worker.labels.contains(l))
            .map(String::as_str)
            .collect();
        if !absent.is_empty() {
            missing.push(format!("labels {}", absent.join(" ")));
        }
        (!missing.is_empty()).then(|| missing.join(", "))
    }

    /// One line for the pages: "cuda, ≥ 40 GB, 2 devices, labels a100".
    pub fn summary(&self) -> String {
        let mut parts = vec![match self.device {
            DeviceRequirement::Any => "any device".to_string(),
            DeviceRequirement::Cpu => "cpu".to_string(),
            DeviceRequirement::Cuda => "cuda".to_string(),
        }];
        if self.min_gpu_memory_mb > 0 {
            parts.push(format!("≥ {} GB", self.min_gpu_memory_mb / 1024));
        }
        if self.devices > 1 {
            parts.push(format!("{} devices", self.devices));
        }
        if !self.labels.is_empty() {
            parts.push(format!("labels {}", self.labels.join(" ")));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_config::TrainConfig;

    fn gpu(count: u32, memory_gb: u64, labels: &[&str]) -> Capabilities {
        Capabilities {
            device: DeviceKind::Cuda,
            gpu_model: Some("H100".into()),
            gpu_memory_mb: memory_gb * 1024,
            gpu_count: count,
            cpu_threads: 16,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Capabilities::default()
        }
    }

    #[test]
    fn a_cuda_run_is_not_for_a_cpu_worker_and_says_why() {
        let r = Requirements {
            device: DeviceRequirement::Cuda,
            min_gpu_memory_mb: 40 * 1024,
            devices: 2,
            labels: vec!["a100".into()],
        };
        let cpu = Capabilities {
            cpu_threads: 8,
            ..Capabilities::default()
        };
        assert_eq!(
            r.unmet_by(&cpu).unwrap(),
            "cuda, ≥ 40 GB GPU memory, labels a100"
        );
        assert_eq!(r.unmet_by(&gpu(1, 80, &["a100"])).unwrap(), "2 devices");
        assert!(r.unmet_by(&gpu(2, 80, &["a100", "site=lab2"])).is_none());
        assert_eq!(r.summary(), "cuda, ≥ 40 GB, 2 devices, labels a100");
    }

    #[test]
    fn a_config_s_ranks_and_fp16_set_the_least_it_needs() {
        let mut cfg = TrainConfig::default();
        cfg.optim.world_size = 2;
        cfg.optim.precision = Precision::Fp16;
        let config = JobConfig::Finetune(cfg);
        let least = Requirements::for_config(&config);
        assert_eq!((least.device, least.devices), (DeviceRequirement::Cuda, 2));
        least.validate(&config).unwrap();
        let too_few = Requirements {
            devices: 1,
            ..least.clone()
        };
        let e = too_few.validate(&config).unwrap_err();
        assert_eq!(e.field, "requirements.devices");
        let bad_label = Requirements {
            labels: vec!["a b".into()],
            ..least
        };
        assert_eq!(
            bad_label.validate(&config).unwrap_err().field,
            "requirements.labels"
        );
    }
}
