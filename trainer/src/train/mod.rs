//! The training engine: optimizers with savable state, checkpoints, evaluation during training.
//! One loop ([`engine`]) drives the `finetune`, `pretrain_box` and `pretrain_image` jobs.

pub mod bench_cli;
pub mod checkpoint;
pub mod device;
pub mod engine;
pub mod evaluation;
pub mod health;
pub mod init;
pub mod optim;
pub mod precision;
pub mod predict_cli;
pub mod results;
pub mod segm_eval;
