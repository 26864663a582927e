//! Pure planning of an experiment's runs: the configs of the image-domain pre-training, the
//! pseudo-boxes, the box-domain pre-training and both fine-tuning arms of a resolved
//! [`ExperimentSpec`], validated, in creation order. Nothing here reads the database.

use super::Role;
use super::spec::{DEFAULT_IMAGE_SIZE, ExperimentSpec, default_multipliers};
use aligndet_common::artifacts::{self, ArtifactRef};
use aligndet_common::config_error::ConfigError;
use aligndet_common::dataset::DatasetSplits;
use aligndet_common::jobs::{JobConfig, ProposalStrategy, ProposalsConfig};
use aligndet_common::optim_config::OptimConfig;
use aligndet_common::pretrain_config::{
    PretrainBoxConfig, PretrainImageConfig, aligned_finetune_hyperparameters,
};
use aligndet_common::train_config::{InitConfig, TrainConfig};

/// Default shorter sides and longer-side cap (given for a 512 px shorter side) at another
/// shorter side, rounded to whole pixels: 480/512/544 and a 853 cap become 180/192/204 and 320
/// at 192 px. Fine-tuning's augmentation and pre-training's views both scale this way, in place.
fn scale_sizes(min_sizes: &mut [u32], max_size: &mut u32, image_size: u32) {
    for size in min_sizes.iter_mut().chain([max_size]) {
        *size = ((*size as u64 * image_size as u64 + DEFAULT_IMAGE_SIZE as u64 / 2)
            / DEFAULT_IMAGE_SIZE as u64)
            .max(1) as u32;
    }
}

/// A run the experiment makes: its role, kind, name, config and what it waits for.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub role: Role,
    pub name: String,
    pub config: JobConfig,
    pub seed: Option<u64>,
    pub fraction: Option<u32>,
}

impl PlannedRun {
    /// A run of the chain before the fine-tunes (one per experiment: no seed, no fraction).
    fn stage(role: Role, name: String, config: JobConfig) -> PlannedRun {
        PlannedRun {
            role,
            name,
            config,
            seed: None,
            fraction: None,
        }
    }
}

/// A kind's default `optim` with the spec's steps, batch size and learning rate where given;
/// warm-up, milestones and the checkpoint interval follow the steps (the one schedule rule,
/// `ScheduleDefaults`, as on the new-run form and in the API).
fn scaled_optim(
    d: &OptimConfig,
    steps: Option<u32>,
    batch_size: Option<u32>,
    lr: Option<f64>,
) -> OptimConfig {
    let mut optim = OptimConfig {
        batch_size: batch_size.unwrap_or(d.batch_size),
        lr: lr.unwrap_or(d.lr),
        ..d.clone()
    };
    optim.scale_to(steps.unwrap_or(d.steps), 0);
    optim
}

/// A config error as the spec field a person can change (the generated runs' own field names
/// would mean nothing on the form).
fn spec_error(prefix: &str, e: &ConfigError) -> String {
    let field = e.field.strip_prefix("optim.").unwrap_or(&e.field);
    let field = match (prefix, field) {
        (p, f @ ("steps" | "batch_size" | "lr" | "weight_decay")) => format!("{p}_{f}"),
        ("proposals", "max_images") => "proposals_max_images".to_string(),
        (p, f) => format!("{p} config: {f}"),
    };
    format!("{field}: {}", e.problem)
}

impl ExperimentSpec {
    /// The runs of a resolved spec, in creation order (pre-training first); the spec
    /// ([`ExperimentSpec::validate`]) and the configs are validated. Run ids of the chain are not
    /// known yet: `1` stands for "the run of that role" and is replaced at creation.
    pub fn plan(&self) -> Result<Vec<PlannedRun>, String> {
        self.validate()?;
        let name = &self.name;
        let placeholder = |name: &str| ArtifactRef {
            run_id: 1,
            name: name.to_string(),
        };
        let mut runs = Vec::new();
        let reuse = self.pretrained_run_id.is_some();
        let image_init = if self.label_free && !reuse {
            let d = PretrainImageConfig::default();
            let optim = scaled_optim(
                &d.optim,
                self.image_steps,
                self.image_batch_size,
                self.image_lr,
            );
            let c = PretrainImageConfig {
                dataset_id: self.dataset_id,
                backbone: self.backbone,
                init: InitConfig::Scratch,
                // The queue must hold whole batches; keep the default size when it fits.
                queue_size: d.queue_size - d.queue_size % optim.batch_size.max(1),
                optim,
                ..d
            };
            runs.push(PlannedRun::stage(
                Role::PretrainImage,
                format!("{name} · image pre-training"),
                JobConfig::PretrainImage(c),
            ));
            InitConfig::Checkpoint {
                artifact: placeholder(artifacts::PRETRAINED_BACKBONE),
            }
        } else {
            InitConfig::ImagenetBackbone
        };
        if self.proposals_run_id.is_none() && !reuse {
            let c = ProposalsConfig {
                dataset_id: self.dataset_id,
                strategy: ProposalStrategy::Aligndet,
                seed: 0,
                max_images: self.proposals_max_images,
                filter: Default::default(),
                chunk_size: 16,
            };
            runs.push(PlannedRun::stage(
                Role::Proposals,
                format!("{name} · pseudo-boxes"),
                JobConfig::Proposals(c),
            ));
        }
        let image_size = self.image_size.unwrap_or(DEFAULT_IMAGE_SIZE);
        if !reuse {
            let d = PretrainBoxConfig::for_detector(self.detector);
            let mut pb = PretrainBoxConfig {
                dataset_id: self.dataset_id,
                proposals_run_id: self.proposals_run_id.unwrap_or(1),
                backbone: self.backbone,
                backbone_init: image_init.clone(),
                optim: scaled_optim(
                    &d.optim,
                    self.pretrain_steps,
                    self.pretrain_batch_size,
                    self.pretrain_lr,
                ),
                samples: self.pretrain_samples.unwrap_or(d.samples),
                ..d
            };
            scale_sizes(&mut pb.views.min_sizes, &mut pb.views.max_size, image_size);
            runs.push(PlannedRun::stage(
                Role::PretrainBox,
                format!("{name} · box-domain pre-training"),
                JobConfig::PretrainBox(pb),
            ));
        }

        let d = TrainConfig::default();
        let mut optim = scaled_optim(
            &d.optim,
            self.finetune_steps,
            self.finetune_batch_size,
            self.finetune_lr,
        );
        let eval_every = d.schedule_defaults().scaled_to(optim.steps).eval_every;
        optim.weight_decay = self.finetune_weight_decay.unwrap_or(d.optim.weight_decay);
        let (base_lr, base_wd) = (optim.lr, optim.weight_decay);
        let (lr_m, wd_m) = default_multipliers();
        let (aligned_lr, aligned_wd) = match (self.lr_multiplier, self.wd_multiplier) {
            (None, None) => aligned_finetune_hyperparameters(base_lr, base_wd),
            (l, w) => (base_lr * l.unwrap_or(lr_m), base_wd * w.unwrap_or(wd_m)),
        };
        let mut base = TrainConfig {
            dataset_id: self.dataset_id,
            val_split: "val".into(),
            detector: self.detector,
            backbone: self.backbone,
            optim,
            eval_every,
            eval_max_images: self.eval_max_images.unwrap_or(d.eval_max_images),
            final_eval_max_images: self
                .final_eval_max_images
                .unwrap_or(d.final_eval_max_images),
            ..d
        };
        scale_sizes(
            &mut base.augment.min_sizes,
            &mut base.augment.max_size,
            image_size,
        );
        for &fraction in &self.fractions {
            for &seed in &self.seeds {
                let split = DatasetSplits::labeled_key(fraction, seed);
                let mut arm = TrainConfig {
                    train_split: split.clone(),
                    ..base.clone()
                };
                arm.optim.seed = seed;
                runs.push(PlannedRun {
                    role: Role::Aligndet,
                    name: format!("{name} · AlignDet {fraction}% seed {seed}"),
                    config: JobConfig::Finetune(TrainConfig {
                        init: InitConfig::Checkpoint {
                            artifact: placeholder(artifacts::PRETRAINED_DETECTOR),
                        },
                        optim: OptimConfig {
                            lr: aligned_lr,
                            weight_decay: aligned_wd,
                            ..arm.optim.clone()
                        },
                        ..arm.clone()
                    }),
                    seed: Some(seed),
                    fraction: Some(fraction),
                });
                runs.push(PlannedRun {
                    role: Role::Baseline,
                    name: format!("{name} · baseline {fraction}% seed {seed}"),
                    config: JobConfig::Finetune(TrainConfig {
                        init: image_init.clone(),
                        ..arm
                    }),
                    seed: Some(seed),
                    fraction: Some(fraction),
                });
            }
        }
        for r in &runs {
            let prefix = match r.role {
                Role::PretrainImage => "image",
                Role::Proposals => "proposals",
                Role::PretrainBox => "pretrain",
                Role::Aligndet | Role::Baseline => "finetune",
            };
            r.config.validate().map_err(|e| spec_error(prefix, &e))?;
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aligndet_common::pretrain_config::ViewsConfig;

    fn spec() -> ExperimentSpec {
        serde_json::from_value(serde_json::json!({"name": "x", "dataset_id": 1})).unwrap()
    }

    #[test]
    fn default_plan_has_both_arms_at_the_same_seeds_and_splits() {
        let plan = spec().resolved().plan().unwrap();
        let roles: Vec<Role> = plan.iter().map(|p| p.role).collect();
        assert_eq!(roles[..2], [Role::Proposals, Role::PretrainBox]);
        assert_eq!(plan.len(), 2 + 3 * 2 * 2);
        for pair in plan[2..].chunks(2) {
            let (JobConfig::Finetune(a), JobConfig::Finetune(b)) =
                (&pair[0].config, &pair[1].config)
            else {
                panic!("fine-tunes expected")
            };
            assert_eq!(
                (a.optim.seed, &a.train_split, a.optim.steps),
                (b.optim.seed, &b.train_split, b.optim.steps)
            );
            assert!((a.optim.lr - 1.5 * b.optim.lr).abs() < 1e-12);
            assert!((a.optim.weight_decay - b.optim.weight_decay / 2.0).abs() < 1e-15);
        }
    }

    #[test]
    fn short_runs_keep_a_valid_schedule() {
        let mut s = spec();
        s.finetune_steps = Some(20);
        s.pretrain_steps = Some(10);
        s.label_free = true;
        s.image_steps = Some(5);
        s.image_batch_size = Some(3);
        let plan = s.resolved().plan().unwrap();
        // The one schedule rule: what the new-run form and the API derive for 20 steps.
        let JobConfig::Finetune(c) = &plan.last().expect("runs").config else {
            panic!("fine-tune expected")
        };
        assert_eq!(c.schedule_defaults(), TrainConfig::schedule_for_steps(20));
    }

    #[test]
    fn evaluation_sizes_reach_every_fine_tune() {
        let resolved = spec().resolved();
        assert_eq!(
            (resolved.eval_max_images, resolved.final_eval_max_images),
            (Some(0), Some(0)),
            "the whole split unless sized"
        );
        let mut s = spec();
        s.eval_max_images = Some(20);
        s.final_eval_max_images = Some(100);
        for p in s.resolved().plan().unwrap() {
            if let JobConfig::Finetune(c) = &p.config {
                assert_eq!((c.eval_max_images, c.final_eval_max_images), (20, 100));
            }
        }
    }

    #[test]
    fn image_size_sets_both_arms_and_the_views_in_proportion() {
        let mut s = spec();
        s.image_size = Some(192);
        s.pretrain_samples = Some(256);
        let plan = s.resolved().plan().unwrap();
        let JobConfig::PretrainBox(pb) = &plan[1].config else {
            panic!("box-domain pre-training expected")
        };
        assert_eq!(pb.views.min_sizes, [180, 192, 204]);
        assert_eq!(pb.views.max_size, 320);
        assert_eq!(pb.samples, 256);
        for p in &plan[2..] {
            let JobConfig::Finetune(c) = &p.config else {
                panic!("fine-tune expected")
            };
            assert_eq!(
                (c.augment.min_sizes.as_slice(), c.augment.max_size),
                (&[192][..], 320)
            );
        }
        // The default size reproduces the job defaults exactly.
        let plan = spec().resolved().plan().unwrap();
        let JobConfig::PretrainBox(pb) = &plan[1].config else {
            panic!("box-domain pre-training expected")
        };
        assert_eq!(pb.views, ViewsConfig::default());
        s.image_size = Some(8);
        assert!(s.resolved().plan().unwrap_err().starts_with("image_size:"));
    }

    #[test]
    fn a_reused_pretraining_plans_only_the_fine_tunes_and_refuses_its_own_settings() {
        let mut s = spec();
        s.pretrained_run_id = Some(7);
        s.lr_multiplier = Some(1.0);
        let resolved = s.resolved();
        // nothing of the pre-training is filled in: the stored spec must not claim it
        assert_eq!(resolved.pretrain_steps, None);
        let plan = resolved.plan().unwrap();
        assert_eq!(plan.len(), 3 * 2 * 2);
        assert!(
            plan.iter()
                .all(|p| p.role == Role::Aligndet || p.role == Role::Baseline)
        );
        for p in &plan {
            let JobConfig::Finetune(c) = &p.config else {
                panic!("fine-tune expected")
            };
            let from_checkpoint = matches!(c.init, InitConfig::Checkpoint { .. });
            assert_eq!(from_checkpoint, p.role == Role::Aligndet);
        }
        for (field, set) in [
            (
                "pretrain_steps",
                (|s: &mut ExperimentSpec| s.pretrain_steps = Some(10)) as fn(&mut ExperimentSpec),
            ),
            ("proposals_run_id", |s| s.proposals_run_id = Some(3)),
            ("label_free", |s| s.label_free = true),
            ("pretrain_samples", |s| s.pretrain_samples = Some(256)),
        ] {
            let mut bad = s.clone();
            set(&mut bad);
            let err = bad.resolved().plan().unwrap_err();
            assert!(
                err.starts_with(&format!("{field}: the pre-training run 7 is reused")),
                "{err}"
            );
        }
        s.pretrained_run_id = Some(0);
        assert!(
            s.resolved()
                .plan()
                .unwrap_err()
                .starts_with("pretrained_run_id:")
        );
    }
}
