//! The HTTP surface: pages (one module per area), the worker API and the user API. Routes are
//! grouped by who may call them, and each group has one gate: the worker token
//! (`security::require_worker_token`), a personal token with a role
//! (`accounts::gate::require_api_role`), or a session with a role
//! (`accounts::gate::require_page_role`).
//!
//! [`router`] is the site's one map of addresses: every route, with its handler and its gate,
//! is listed there and nowhere else; the modules hold only handlers. Page handlers take the
//! signed-in context as [`UserPage`](crate::accounts::gate::UserPage), posted forms as
//! [`PageForm`](crate::error::PageForm), and answer a [`PageResult`](crate::error::PageResult).

pub mod accounts;
pub mod admin;
pub mod api;
pub mod api_slurm;
pub mod api_user;
pub mod compare;
pub mod content;
pub mod datasets;
pub mod experiments;
pub mod pages;
pub mod predictions;
pub mod proposals;
pub mod runs;
pub mod uploads;

use crate::accounts::Role;
use crate::accounts::gate;
use crate::security;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// Render an askama template into an HTML response (a render failure becomes a 500 page).
pub fn render(t: &impl askama::Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => crate::error::PageError::from(anyhow::anyhow!("template: {e}")).into_response(),
    }
}

/// A refused form's page again (422 Unprocessable Content): `page` holds what was typed and
/// the error beside its input.
pub fn refused(page: &impl askama::Template) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, render(page)).into_response()
}

pub fn router(state: AppState) -> Router {
    let upload_limit = (state.cfg.upload_limit_mib * 1024 * 1024) as usize;
    let worker_gate =
        || middleware::from_fn_with_state(state.clone(), security::require_worker_token);
    let api_gate =
        |role: Role| middleware::from_fn_with_state((state.clone(), role), gate::require_api_role);
    let page_gate = |role: Role| middleware::from_fn_with_state(role, gate::require_page_role);

    // Worker calls: the worker token and only it.
    let worker_api = Router::new()
        .route("/workers/register", post(api::register))
        .route("/jobs/claim", post(api::claim))
        .route("/runs/{id}/heartbeat", post(api::heartbeat))
        .route("/runs/{id}/metrics", post(api::metrics))
        .route("/runs/{id}/logs", post(api::logs))
        .route("/runs/{id}/status", post(api::status))
        .route("/runs/{id}/artifacts/{name}", get(api::download_artifact))
        .route("/runs/{id}/proposals", post(api::proposals))
        .route("/runs/{id}/proposals/done", get(api::proposals_done))
        .route("/blobs/{sha256}", get(content::blob))
        .route("/blobs/pack", post(content::pack))
        .route("/slurm/placeable", post(api_slurm::placeable))
        .route(
            "/slurm/placements",
            get(api_slurm::live).post(api_slurm::reserve),
        )
        .route(
            "/slurm/placements/{id}/submitted",
            post(api_slurm::submitted),
        )
        .route("/slurm/placements/{id}/rejected", post(api_slurm::rejected))
        .route("/slurm/placements/{id}/state", post(api_slurm::state))
        .route_layer(worker_gate())
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .merge(
            Router::new()
                .route(
                    "/runs/{id}/artifacts/{name}",
                    axum::routing::put(uploads::upload),
                )
                .route("/runs/{id}/uploads/{name}", get(uploads::received))
                .route_layer(worker_gate())
                .layer(DefaultBodyLimit::disable()),
        );
    // People's scripts: a personal API token with the route's role.
    let user_api = Router::new()
        .route("/runs/{id}", get(api_user::run_summary))
        .route("/experiments/{id}", get(api_user::experiment_summary))
        .route("/compare", get(compare::api))
        .route_layer(api_gate(Role::Viewer))
        .merge(
            Router::new()
                .route("/runs", post(api_user::create_run))
                .route("/runs/{id}/cancel", post(api_user::cancel))
                .route("/experiments", post(api_user::create_experiment))
                .route_layer(api_gate(Role::Editor)),
        )
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024));

    let read_pages = Router::new()
        .route("/", get(pages::home))
        .route("/workers", get(pages::workers))
        .route("/datasets", get(datasets::list))
        .route("/datasets/{id}", get(datasets::show))
        .route("/datasets/{id}/histogram.svg", get(datasets::histogram))
        .route(
            "/datasets/{id}/images/{image_id}",
            get(datasets::image_file),
        )
        .route("/experiments", get(experiments::list_page))
        .route("/experiments/{id}", get(experiments::show))
        .route("/compare", get(compare::show))
        .route("/runs", get(runs::list))
        .route("/runs.csv", get(runs::runs_csv))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/metrics.csv", get(runs::metrics_csv))
        .route("/runs/{id}/metrics.json", get(runs::metrics_json))
        .route("/runs/{id}/live", get(runs::live_fragment))
        .route("/runs/{id}/events", get(runs::events))
        .route("/runs/{id}/artifacts/{name}", get(runs::download_artifact))
        .route("/runs/{id}/proposals", get(proposals::browser))
        .route("/runs/{id}/proposals.json", get(proposals::export_coco))
        .route(
            "/runs/{id}/proposals/{image_id}/boxes.bin",
            get(proposals::boxes_data),
        )
        .route("/runs/{id}/predictions", get(predictions::browser))
        // Any signed-in user, on their own account.
        .route("/account", get(accounts::account_page))
        .route("/account/tokens", post(accounts::create_token))
        .route("/account/tokens/{id}/revoke", post(accounts::revoke_token))
        .route("/account/password", post(accounts::change_password))
        .route_layer(page_gate(Role::Viewer));
    let edit_pages = Router::new()
        .route("/datasets/import", post(datasets::import_from_server))
        .route(
            "/datasets/upload",
            post(datasets::upload).layer(DefaultBodyLimit::max(upload_limit + 1024 * 1024)),
        )
        .route("/experiments", post(experiments::create_from_form))
        .route("/experiments/new", get(experiments::new_form))
        .route("/runs", post(runs::create))
        .route("/runs/new", get(runs::new_form))
        .route(
            "/runs/evaluate",
            post(runs::create_evaluate_upload)
                .layer(DefaultBodyLimit::max(upload_limit + 1024 * 1024)),
        )
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/json", post(runs::create_from_json))
        .route("/runs/{id}/clone", get(runs::clone_form))
        .route("/runs/{id}/tags", post(runs::set_tags))
        .route("/runs/{id}/archive", post(runs::archive))
        // Editors pass the gate; the handlers let only admins and the run's creator through.
        .route(
            "/runs/{id}/delete",
            get(runs::delete_form).post(runs::delete),
        )
        .route_layer(page_gate(Role::Editor));
    let admin_pages = Router::new()
        .route("/workers/{id}/drain", post(pages::drain))
        .route(
            "/admin/users",
            get(admin::users_page).post(admin::create_user),
        )
        .route("/admin/users/{id}/role", post(admin::set_role))
        .route("/admin/users/{id}/disabled", post(admin::set_disabled))
        .route("/admin/users/{id}/revoke", post(admin::revoke_all))
        .route("/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .route_layer(page_gate(Role::Admin));

    let pages = Router::new()
        .route("/login", get(accounts::login_page).post(accounts::login))
        .route("/logout", post(accounts::logout))
        .merge(read_pages)
        .merge(edit_pages)
        .merge(admin_pages)
        .fallback(crate::error::no_such_page)
        .method_not_allowed_fallback(crate::error::wrong_method)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gate::identify,
        ))
        .layer(middleware::from_fn(security::csrf_protect))
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::limits::refuse_declared_oversize,
        ))
        .nest_service("/static", ServeDir::new(static_dir()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::require_allowed_host,
        ));
    let api = worker_api.merge(user_api);

    Router::new()
        .merge(pages)
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok" }))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .with_state(state)
}

/// `static/` at the workspace root (beside `templates/`), wherever the binary is started from.
fn static_dir() -> std::path::PathBuf {
    std::env::var_os("ALIGNDET_STATIC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../static"))
}
