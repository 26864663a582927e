//! Page models that need more than a handler: what the run pages show (the live fragment and
//! its charts, evaluations, fine-tune and pre-training sections) and the new-run page.

pub mod chart_groups;
pub mod chart_view;
pub mod charts;
pub mod eval;
pub mod finetune;
pub mod new_run;
pub mod pretrain;
pub mod run_live;
