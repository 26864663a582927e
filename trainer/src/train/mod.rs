//! The training engine: optimizers with savable state, checkpoints, evaluation during training.
//! The `finetune` job (jobs/finetune.rs) drives them.

pub mod bench_cli;
pub mod checkpoint;
pub mod evaluation;
pub mod init;
pub mod optim;
pub mod predict_cli;
