//! Run pages: the runs table ([`list`]), the new-run page and clones ([`new`]), the handlers
//! that create runs from its forms and JSON editor ([`create`]) and from an uploaded detections
//! file ([`evaluate_upload`]), a run's page with live curves, change events, cancel
//! and downloads ([`show`]), tags, notes, archiving and deletion ([`manage`]), and the CSV /
//! JSON exports ([`export`]). The page models live in [`crate::views`], the forms in
//! [`crate::forms`].

mod create;
mod evaluate_upload;
mod export;
mod list;
mod manage;
mod new;
mod show;

pub use create::{create, create_from_json};
pub use evaluate_upload::create_evaluate_upload;
pub use export::{metrics_csv, metrics_json, runs_csv};
pub use list::list;
pub use manage::{archive, delete, delete_form, set_tags};
pub use new::{clone_form, new_form};
pub use show::{cancel, download_artifact, events, live_fragment, show};
