//! AlignDet Studio trainer library. One folder per concern:
//! - [`data`]: dataset generation and preparation (synthetic scenes, tiling).
//! - [`proposals`]: Felzenszwalb segmentation, selective search, the AlignDet/SoCo filter, recall.
//! - [`eval`]: COCO bbox evaluation.
//! - [`jobs`]: one entry point per job kind, and the event sink they report through.
//! - [`dist`]: data-parallel ranks over c10d process groups (Gloo), and their launch.
//! - [`worker`]: the HTTP client that claims jobs, heartbeats and buffers events.
//! - [`slurm`]: the Slurm agent that places queued runs as sbatch jobs and follows them.

pub mod data;
pub mod dist;
pub mod doctor;
pub mod eval;
pub mod jobs;
pub mod models;
pub mod pretrain;
pub mod proposals;
pub mod slurm;
pub mod torch_shim;
pub mod train;
pub mod worker;
