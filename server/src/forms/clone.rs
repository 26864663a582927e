//! A stored run's config as its form, for "Clone": every field as the run had it, the ones a
//! fresh form leaves to follow the steps (warm-up, milestones, evaluation and checkpoint
//! intervals) included, and AlignDet's fine-tuning rule unticked (the stored lr and weight
//! decay already carry it), so that posting the clone unchanged queues the same config.

use super::{
    FinetuneForm, OptimForm, PretrainBoxForm, PretrainImageForm, TrainingForm, TrainingForms,
    comma_list,
};
use aligndet_common::jobs::JobConfig;
use aligndet_common::optim_config::{LrSchedule, OptimConfig, ScheduleDefaults};

/// The optimisation fields exactly as stored (none left to follow the steps).
fn optim_as_stored(c: &OptimConfig, reference: ScheduleDefaults) -> OptimForm {
    let mut form = OptimForm::of_config(c, reference);
    form.warmup_steps = c.warmup_steps.to_string();
    form.checkpoint_every = c.checkpoint_every.to_string();
    if let LrSchedule::Step { milestones, .. } = &c.schedule {
        // An empty list typed back reads as "follow the steps"; `none` cannot be typed, so a
        // schedule without milestones keeps them derived (none for the kinds that have none).
        form.milestones = comma_list(milestones);
    }
    form
}

/// The new-run page's forms with the run's kind filled from `config` and named `name`, and
/// that form's tag; `None` for the kinds without a training form (their clone is the JSON
/// editor alone).
pub fn forms_of(config: &JobConfig, name: &str) -> Option<(TrainingForms, &'static str)> {
    let name = name.to_string();
    Some(match config {
        JobConfig::Finetune(c) => stored(
            FinetuneForm {
                name,
                aligned_rule: false,
                eval_every: c.eval_every.to_string(),
                ..FinetuneForm::of_config(c)
            },
            &c.optim,
        ),
        JobConfig::PretrainBox(c) => stored(
            PretrainBoxForm {
                name,
                ..PretrainBoxForm::of_config(c)
            },
            &c.optim,
        ),
        JobConfig::PretrainImage(c) => stored(
            PretrainImageForm {
                name,
                ..PretrainImageForm::of_config(c)
            },
            &c.optim,
        ),
        _ => return None,
    })
}

/// `form` with its optimisation fields as stored, among the other forms' defaults, and its tag.
fn stored<F: TrainingForm>(mut form: F, optim: &OptimConfig) -> (TrainingForms, &'static str) {
    *form.opt_mut() = optim_as_stored(optim, F::schedule_reference());
    (form.among_defaults(), F::TAG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aligndet_common::pretrain_config::PretrainImageConfig;
    use aligndet_common::train_config::TrainConfig;

    /// A config cloned into its form, and that form read back, gives the config.
    fn round_trip(config: &JobConfig) {
        let (forms, tag) = forms_of(config, "x").unwrap();
        let back = match tag {
            FinetuneForm::TAG => forms.ft.job_config(),
            PretrainBoxForm::TAG => forms.pb.job_config(),
            _ => forms.pi.job_config(),
        };
        assert_eq!(&back.unwrap(), config);
    }

    #[test]
    fn a_clone_posted_unchanged_is_the_same_config() {
        let mut ft = TrainConfig {
            dataset_id: 4,
            eval_every: 7,
            ..TrainConfig::default()
        };
        ft.optim.lr = 0.0123;
        ft.optim.steps = 333;
        ft.optim.warmup_steps = 11;
        let config = JobConfig::Finetune(ft);
        let (forms, tag) = forms_of(&config, "again").unwrap();
        assert_eq!(tag, "ft");
        assert_eq!(forms.ft.name, "again");
        assert!(!forms.ft.aligned_rule);
        assert_eq!(forms.ft.opt.reference, FinetuneForm::schedule_reference());
        round_trip(&config);

        let mut pi = PretrainImageConfig {
            dataset_id: 2,
            ..PretrainImageConfig::default()
        };
        pi.optim.checkpoint_every = 5;
        round_trip(&JobConfig::PretrainImage(pi));

        let mut pb = aligndet_common::pretrain_config::PretrainBoxConfig {
            dataset_id: 2,
            proposals_run_id: 9,
            ..Default::default()
        };
        pb.optim.seed = 77;
        round_trip(&JobConfig::PretrainBox(pb));
    }
}
