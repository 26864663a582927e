//! Experiments: one form (or one JSON spec) makes the whole AlignDet chain in one transaction.
//!
//! - optional `pretrain_image` (label-free backbone), else the shipped ImageNet backbone;
//! - pseudo-boxes: a reused succeeded `proposals` run of the dataset, or a new one (`aligndet`);
//! - one `pretrain_box` run waiting for its inputs;
//! - per seed × labeled fraction: an `aligndet` fine-tune from the pre-trained detector (lr and
//!   weight decay scaled as in the method, 8.3) and a `baseline` fine-tune with the same seed,
//!   split, schedule, steps, batch and augmentation, from the image-domain backbone alone.
//!
//! Every run waits for the runs it reads (`db::runs::add_dependencies_in`), so the chain runs in
//! order on any number of workers and fails as a whole when a stage fails.
//!
//! - [`spec`]: [`ExperimentSpec`], its defaults and checks;
//! - [`plan`]: the runs of a spec, planned without the database;
//! - [`create`]: the database checks and the transaction that creates everything;
//! - [`summary`]: reading an experiment back (run views, summary rows, the API's JSON).

pub mod create;
pub mod plan;
pub mod spec;
pub mod summary;

pub use create::{CreatedExperiment, CreatedRun, create};
pub use spec::ExperimentSpec;
pub use summary::{RunView, SummaryRow, compare_url, run_views, summary_json};

use serde::{Deserialize, Serialize};

/// The role of a run in an experiment, stored in `runs.experiment_role` under its serde name
/// (`pretrain_image`, `proposals`, `pretrain_box`, `aligndet`, `baseline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PretrainImage,
    Proposals,
    PretrainBox,
    Aligndet,
    Baseline,
}

impl Role {
    /// Every role, in the order an experiment's page lists its runs.
    pub const ALL: [Role; 5] = [
        Role::PretrainImage,
        Role::Proposals,
        Role::PretrainBox,
        Role::Aligndet,
        Role::Baseline,
    ];

    /// The stored name (the same as the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PretrainImage => "pretrain_image",
            Role::Proposals => "proposals",
            Role::PretrainBox => "pretrain_box",
            Role::Aligndet => "aligndet",
            Role::Baseline => "baseline",
        }
    }

    /// The role of a stored name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn role_names_are_the_stored_strings() {
        for role in Role::ALL {
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::Value::from(role.as_str())
            );
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "pretrain_image",
                "proposals",
                "pretrain_box",
                "aligndet",
                "baseline"
            ]
        );
    }
}
