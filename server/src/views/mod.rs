//! Page models that need more than a handler: what the run pages show (the live fragment and
//! its charts, evaluations, fine-tune and pre-training sections), the new-run page and the
//! predictions browser (matching, counts and label placement).

pub mod chart_groups;
pub mod chart_view;
pub mod charts;
pub mod eval;
pub mod finetune;
pub mod labels;
pub mod mask_paths;
pub mod new_run;
pub mod predictions;
pub mod pretrain;
pub mod run_live;
