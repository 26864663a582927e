//! The new-run page's three training forms as one kind of thing: [`TrainingForm`] is what the
//! page's create handler needs of each posted form (its job config, the input an error goes
//! beside, the page to show again), so one code path queues all three.

use super::{FieldError, FinetuneForm, PretrainBoxForm, PretrainImageForm};
use aligndet_common::jobs::JobConfig;

/// The values of the new-run page's three training forms, each a default or what was posted.
pub struct TrainingForms {
    pub ft: FinetuneForm,
    pub pb: PretrainBoxForm,
    pub pi: PretrainImageForm,
}

impl TrainingForms {
    pub fn defaults() -> TrainingForms {
        TrainingForms {
            ft: FinetuneForm::defaults(),
            pb: PretrainBoxForm::defaults(),
            pi: PretrainImageForm::defaults(),
        }
    }
}

/// A training form of the new-run page.
pub trait TrainingForm: Sized + Send + Sync {
    /// The form's tag on the page (`ft`, `pb`, `pi`), by which an error is placed.
    const TAG: &'static str;
    /// The run name typed.
    fn run_name(&self) -> &str;
    /// The typed job config (parsing only; the config's `validate` checks ranges).
    fn job_config(&self) -> Result<JobConfig, FieldError>;
    /// The input a config field is shown beside.
    fn input_of(&self, field: &str) -> Option<String>;
    /// Whether AlignDet's fine-tuning rule (lr ×1.5, weight decay ÷2) was asked for.
    fn aligned_rule(&self) -> bool {
        false
    }
    /// The page's forms with this one as posted and the others at their defaults.
    fn among_defaults(self) -> TrainingForms;
}

impl TrainingForm for FinetuneForm {
    const TAG: &'static str = "ft";
    fn run_name(&self) -> &str {
        &self.name
    }
    fn job_config(&self) -> Result<JobConfig, FieldError> {
        self.to_config().map(JobConfig::Finetune)
    }
    fn input_of(&self, field: &str) -> Option<String> {
        self.input_for(field)
    }
    fn aligned_rule(&self) -> bool {
        self.aligned_rule
    }
    fn among_defaults(self) -> TrainingForms {
        TrainingForms {
            ft: self,
            ..TrainingForms::defaults()
        }
    }
}

impl TrainingForm for PretrainBoxForm {
    const TAG: &'static str = "pb";
    fn run_name(&self) -> &str {
        &self.name
    }
    fn job_config(&self) -> Result<JobConfig, FieldError> {
        self.to_config().map(JobConfig::PretrainBox)
    }
    fn input_of(&self, field: &str) -> Option<String> {
        PretrainBoxForm::input_for(field)
    }
    fn among_defaults(self) -> TrainingForms {
        TrainingForms {
            pb: self,
            ..TrainingForms::defaults()
        }
    }
}

impl TrainingForm for PretrainImageForm {
    const TAG: &'static str = "pi";
    fn run_name(&self) -> &str {
        &self.name
    }
    fn job_config(&self) -> Result<JobConfig, FieldError> {
        self.to_config().map(JobConfig::PretrainImage)
    }
    fn input_of(&self, field: &str) -> Option<String> {
        PretrainImageForm::input_for(field)
    }
    fn among_defaults(self) -> TrainingForms {
        TrainingForms {
            pi: self,
            ..TrainingForms::defaults()
        }
    }
}
