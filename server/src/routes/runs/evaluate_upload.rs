//! `POST /runs/evaluate`: an evaluation run of an uploaded detections file.

use crate::accounts::CurrentUser;
use crate::accounts::gate::UserPage;
use crate::db;
use crate::error::PageError;
use crate::error::PageResult;
use crate::state::AppState;
use aligndet_common::capabilities::Requirements;
use aligndet_common::jobs::{JobConfig, RunKind};
use axum::response::{IntoResponse, Redirect};
use std::collections::HashMap;

/// Multipart form: `name`, `dataset_id`, `split`, and the COCO results file `detections`.
/// The run and its input artifact are stored in one transaction, so no worker can claim the run
/// before its detections are in place.
pub async fn create_evaluate_upload(
    UserPage { s, user, .. }: UserPage,
    multipart: axum::extract::Multipart,
) -> PageResult {
    let limit = (s.cfg.upload_limit_mib * 1024 * 1024) as usize;
    let (fields, detections) = read_upload(multipart, limit).await?;
    let detections =
        detections.ok_or_else(|| PageError::bad_request("choose a COCO results file to upload"))?;
    // Refuse what is not JSON now, with the parser's position; the worker checks the rest.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&detections) {
        return Err(PageError::bad_request(format!(
            "the detections file is not valid JSON: {e}"
        )));
    }
    let dataset_id: i64 = fields
        .get("dataset_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PageError::bad_request("choose a dataset"))?;
    let split = fields
        .get("split")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let name = aligndet_common::names::check_display_name(
        fields.get("name").map_or("evaluation", |n| n.as_str()),
        "the run name",
        200,
    )
    .map_err(PageError::bad_request)?;
    if db::datasets::get(&s.pool, dataset_id).await?.is_none() {
        return Err(PageError::bad_request(format!(
            "dataset_id: dataset {dataset_id} not found"
        )));
    }
    let config = aligndet_common::jobs::EvaluateConfig {
        dataset_id,
        split,
        detections: aligndet_common::artifacts::ArtifactRef {
            run_id: 0,
            name: "detections.json".into(),
        },
    };
    let id = store(&s, &user, &name, config, &detections).await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// The form's text fields and the `detections` file (refused over `limit` bytes).
async fn read_upload(
    mut multipart: axum::extract::Multipart,
    limit: usize,
) -> Result<(HashMap<String, String>, Option<Vec<u8>>), PageError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut detections: Option<Vec<u8>> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| PageError::bad_request(format!("the upload could not be read: {e}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        if name == "detections" {
            let bytes = field.bytes().await.map_err(|e| {
                PageError::bad_request(format!("the detections upload failed or is too large: {e}"))
            })?;
            if bytes.len() > limit {
                return Err(PageError::bad_request(
                    "the detections file is larger than the upload limit",
                ));
            }
            detections = Some(bytes.to_vec());
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| PageError::bad_request(e.to_string()))?;
            fields.insert(name, text);
        }
    }
    Ok((fields, detections))
}

/// The run of `config` with `detections` as its input artifact, in one transaction (the
/// config names the run's own id, set once the run exists); the run's id.
async fn store(
    s: &AppState,
    user: &CurrentUser,
    name: &str,
    mut config: aligndet_common::jobs::EvaluateConfig,
    detections: &[u8],
) -> Result<i64, PageError> {
    let artifact = config.detections.name.clone();
    let mut tx = s.pool.begin().await?;
    let job = JobConfig::Evaluate(config.clone());
    let config_json = serde_json::to_value(&job)?;
    let id = db::runs::create_in(
        &mut tx,
        &db::runs::NewRun {
            kind: RunKind::Evaluate.as_str(),
            name,
            config: config_json,
            dataset_id: Some(config.dataset_id),
            max_attempts: s.cfg.max_attempts,
            parents: vec![],
            experiment: None,
            requirements: &Requirements::for_config(&job),
            priority: 0,
            created_by: Some(user.id),
        },
    )
    .await?;
    config.detections.run_id = id;
    config
        .validate()
        .map_err(|e| PageError::bad_request(e.to_string()))?;
    db::runs::set_config(
        &mut tx,
        id,
        &serde_json::to_value(aligndet_common::jobs::JobConfig::Evaluate(config))?,
    )
    .await?;
    let dir = s.artifacts_dir(id);
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::write(dir.join(&artifact), detections).await?;
    db::runs::insert_artifact_in(&mut tx, id, &artifact, detections.len() as i64).await?;
    if let Err(e) = tx.commit().await {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e.into());
    }
    Ok(id)
}
