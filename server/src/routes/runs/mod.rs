//! Run pages: the runs table ([`list`]), the new-run page and the handlers that create runs
//! ([`new`]), a run's page with live curves, change events, cancel and downloads ([`show`]).
//! The page models live in [`crate::views`], the forms in [`crate::forms`].

mod list;
mod new;
mod show;

pub use list::list;
pub use new::{create, create_evaluate_upload, new_form};
pub use show::{cancel, download_artifact, events, live_fragment, show};
