//! Types both sides of the platform must agree on.
//!
//! - [`api`]: the worker ⇄ server wire protocol under `/api/v1/` (versioned by [`api::PROTOCOL_VERSION`]).
//! - [`artifacts`]: artifact names, the rule for them, and references to another run's.
//! - [`content`]: job inputs named by sha256, and the framing of blob packs.
//! - [`config_error`]: why a config was refused, by field.
//! - [`jobs`]: run kinds, statuses and the typed config of each job kind.
//! - [`dataset`]: COCO / Pascal VOC loading with validation reports.
//! - [`mask`]: COCO masks (RLE, polygons) as pycocotools reads them, and its box IoU.
//! - [`series`]: downsampling of metric series for plots.
//! - [`slurm`]: the Slurm agent ⇄ server protocol and the rule for Slurm job states.
//! - [`images`]: opening image files fully decoded under size limits.
//! - [`names`]: the one rule for names people type.
//! - [`optim_config`]: the optimisation every training kind shares, and its schedule rules.
//! - [`written_config`]: a config as people write it, completed as the new-run form does.

pub mod api;
pub mod artifacts;
pub mod capabilities;
pub mod config_error;
pub mod content;
pub mod dataset;
pub mod images;
pub mod jobs;
pub mod mask;
pub mod names;
pub mod optim_config;
pub mod pretrain_config;
pub mod report;
pub mod series;
pub mod slurm;
pub mod train_config;
pub mod written_config;
