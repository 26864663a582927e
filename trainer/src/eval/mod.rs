//! COCO evaluation (owned by issue 4's work; see `cli` for the command).

pub mod cli;
