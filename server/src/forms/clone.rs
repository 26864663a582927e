//! A stored run's config as its form, for "Clone": every field as the run had it, the ones a
//! fresh form leaves to follow the steps (warm-up, milestones, evaluation and checkpoint
//! intervals) included, and AlignDet's fine-tuning rule unticked (the stored lr and weight
//! decay already carry it), so that posting the clone unchanged queues the same config.

use super::{
    FinetuneForm, OptimForm, PlacementForm, PretrainBoxForm, PretrainImageForm, TrainingForms,
    comma_list, init_text, wire_name,
};
use aligndet_common::jobs::JobConfig;
use aligndet_common::optim_config::{LrSchedule, OptimConfig, ScheduleDefaults};
use aligndet_common::pretrain_config::PretrainImageConfig;
use aligndet_common::train_config::{InitConfig, TrainConfig};

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

impl FinetuneForm {
    pub fn of_config(c: &TrainConfig) -> FinetuneForm {
        let (init_run, init_artifact) = match &c.init {
            InitConfig::Checkpoint { artifact } => {
                (artifact.run_id.to_string(), artifact.name.clone())
            }
            _ => (String::new(), aligndet_common::artifacts::MODEL.to_string()),
        };
        FinetuneForm {
            dataset_id: c.dataset_id.to_string(),
            train_split: c.train_split.clone(),
            val_split: c.val_split.clone(),
            detector: wire_name(&c.detector),
            backbone: wire_name(&c.backbone),
            init: init_text(&c.init),
            init_run,
            init_artifact,
            aligned_rule: false,
            trainable_backbone_stages: c.trainable_backbone_stages.to_string(),
            min_sizes: comma_list(&c.augment.min_sizes),
            max_size: c.augment.max_size.to_string(),
            hflip: c.augment.hflip,
            color_jitter: c.augment.color_jitter.to_string(),
            no_decay_norm_and_bias: c.no_decay_norm_and_bias,
            eval_every: c.eval_every.to_string(),
            eval_max_images: c.eval_max_images.to_string(),
            final_eval_max_images: c.final_eval_max_images.to_string(),
            opt: optim_as_stored(&c.optim, TrainConfig::default().schedule_defaults()),
            place: PlacementForm::default(),
            ..FinetuneForm::defaults()
        }
    }
}

impl PretrainImageForm {
    pub fn of_config(c: &PretrainImageConfig) -> PretrainImageForm {
        PretrainImageForm {
            dataset_id: c.dataset_id.to_string(),
            split: c.split.clone(),
            backbone: wire_name(&c.backbone),
            init: init_text(&c.init),
            crop_size: c.crop_size.to_string(),
            queue_size: c.queue_size.to_string(),
            embedding_dim: c.embedding_dim.to_string(),
            hidden_dim: c.hidden_dim.to_string(),
            temperature: c.temperature.to_string(),
            key_momentum: c.key_momentum.to_string(),
            opt: optim_as_stored(&c.optim, PretrainImageConfig::default().schedule_defaults()),
            ..PretrainImageForm::defaults()
        }
    }
}

/// The new-run page's forms with the run's kind filled from `config` and named `name`, and
/// that form's tag; `None` for the kinds without a training form (their clone is the JSON
/// editor alone).
pub fn forms_of(config: &JobConfig, name: &str) -> Option<(TrainingForms, &'static str)> {
    let mut forms = TrainingForms::defaults();
    let tag = match config {
        JobConfig::Finetune(c) => {
            forms.ft = FinetuneForm::of_config(c);
            forms.ft.name = name.to_string();
            "ft"
        }
        JobConfig::PretrainBox(c) => {
            let mut pb = PretrainBoxForm::of_config(c);
            pb.opt = optim_as_stored(
                &c.optim,
                aligndet_common::pretrain_config::PretrainBoxConfig::default().schedule_defaults(),
            );
            pb.name = name.to_string();
            forms.pb = pb;
            "pb"
        }
        JobConfig::PretrainImage(c) => {
            forms.pi = PretrainImageForm::of_config(c);
            forms.pi.name = name.to_string();
            "pi"
        }
        _ => return None,
    };
    Some((forms, tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forms::TrainingForm;

    /// A form filled from a config and read back gives the config.
    fn round_trip<F: TrainingForm>(form: F, config: &JobConfig) {
        assert_eq!(&form.job_config().unwrap(), config);
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
        let mut posted = forms.ft;
        posted.opt.reference = FinetuneForm::schedule_reference();
        round_trip(posted, &config);

        let mut pi = PretrainImageConfig {
            dataset_id: 2,
            ..PretrainImageConfig::default()
        };
        pi.optim.checkpoint_every = 5;
        let config = JobConfig::PretrainImage(pi);
        let (forms, _) = forms_of(&config, "x").unwrap();
        round_trip(forms.pi, &config);

        let mut pb = aligndet_common::pretrain_config::PretrainBoxConfig {
            dataset_id: 2,
            proposals_run_id: 9,
            ..Default::default()
        };
        pb.optim.seed = 77;
        let config = JobConfig::PretrainBox(pb);
        let (forms, _) = forms_of(&config, "x").unwrap();
        round_trip(forms.pb, &config);
    }
}
