//! The new-run page's three training forms as one kind of thing: [`TrainingForm`] is what the
//! page's create handler needs of each posted form (its job config, the input an error goes
//! beside, the page to show again), so one code path queues all three.

use super::{
    FieldError, FinetuneForm, OptimForm, PlacementForm, PretrainBoxForm, PretrainImageForm,
};
use crate::error::PageError;
use aligndet_common::jobs::JobConfig;
use aligndet_common::optim_config::ScheduleDefaults;
use aligndet_common::pretrain_config::{PretrainBoxConfig, PretrainImageConfig};
use aligndet_common::train_config::TrainConfig;

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
pub trait TrainingForm: Sized + Send + Sync + serde::de::DeserializeOwned {
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
    /// This form's place among the page's forms.
    fn slot(forms: &mut TrainingForms) -> &mut Self;
    /// The form's optimisation fields.
    fn opt_mut(&mut self) -> &mut OptimForm;
    /// The form's worker requirements and priority.
    fn placement(&self) -> &PlacementForm;
    /// The kind's schedule at its default steps, which blank schedule fields follow.
    fn schedule_reference() -> ScheduleDefaults;

    /// What was posted ([`super::read_posted`]), measured against the kind's schedule.
    fn posted(fields: &[(String, String)]) -> Result<Self, PageError> {
        let mut form: Self = super::read_posted(fields)?;
        form.opt_mut().reference = Self::schedule_reference();
        Ok(form)
    }

    /// The page's forms with this one as posted and the others at their defaults.
    fn among_defaults(self) -> TrainingForms {
        let mut forms = TrainingForms::defaults();
        *Self::slot(&mut forms) = self;
        forms
    }
}

/// The accessors every training form has alike: its `name`, `opt` and `place` fields, its slot
/// among the page's forms, its job kind and its config's default schedule; then its own items.
macro_rules! training_form {
    ($form:ty, tag $tag:literal, slot $slot:ident, job $job:ident($config:ty); $($own:tt)*) => {
        impl TrainingForm for $form {
            const TAG: &'static str = $tag;
            fn run_name(&self) -> &str {
                &self.name
            }
            fn job_config(&self) -> Result<JobConfig, FieldError> {
                self.to_config().map(JobConfig::$job)
            }
            fn slot(forms: &mut TrainingForms) -> &mut Self {
                &mut forms.$slot
            }
            fn opt_mut(&mut self) -> &mut OptimForm {
                &mut self.opt
            }
            fn placement(&self) -> &PlacementForm {
                &self.place
            }
            fn schedule_reference() -> ScheduleDefaults {
                <$config>::default().schedule_defaults()
            }
            $($own)*
        }
    };
}

training_form!(FinetuneForm, tag "ft", slot ft, job Finetune(TrainConfig);
    fn input_of(&self, field: &str) -> Option<String> {
        self.input_for(field)
    }
    fn aligned_rule(&self) -> bool {
        self.aligned_rule
    }
);

training_form!(PretrainBoxForm, tag "pb", slot pb, job PretrainBox(PretrainBoxConfig);
    fn input_of(&self, field: &str) -> Option<String> {
        PretrainBoxForm::input_for(field)
    }
);

training_form!(PretrainImageForm, tag "pi", slot pi, job PretrainImage(PretrainImageConfig);
    fn input_of(&self, field: &str) -> Option<String> {
        PretrainImageForm::input_for(field)
    }
);
