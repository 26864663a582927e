//! Selective-search pseudo-boxes (owned by issue 3's work; see `cli` for the command).

pub mod cli;
