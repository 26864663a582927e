//! COCO evaluation (owned by issue 4's work; see `cli` for the command and `coco` for the
//! library API the job code calls).

pub mod cli;
pub mod coco;
pub mod mask_ops;
