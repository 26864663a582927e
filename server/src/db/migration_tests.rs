//! Migrations against a real Postgres: configs stored before a config-shape change decode after
//! the migration that moves them.

use crate::test_db::fresh_db;
use aligndet_common::jobs::JobConfig;
use aligndet_common::optim_config::OPTIM_KEY;
use aligndet_common::pretrain_config::{PretrainBoxConfig, PretrainImageConfig};
use aligndet_common::train_config::TrainConfig;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use std::borrow::Cow;

/// The migration that nested the optimisation fields under `optim`.
const NESTED_OPTIM: i64 = 6;

/// Fields added after the nesting, absent from configs stored before it (their defaults fill
/// them when such a config is read).
const ADDED_LATER: &[&str] = &["precision", "world_size", "group_size"];

/// A config as it was stored before `optim` was nested: its fields at the top.
fn flat(config: &JobConfig) -> Value {
    let mut v = serde_json::to_value(config).expect("serialise");
    let fields = v.as_object_mut().expect("object");
    let Some(Value::Object(optim)) = fields.remove(OPTIM_KEY) else {
        panic!("no optim in {config:?}")
    };
    fields.extend(optim);
    fields.retain(|k, _| !ADDED_LATER.contains(&k.as_str()));
    v
}

#[tokio::test]
async fn stored_flat_training_configs_decode_after_nesting_optim() {
    let Some(db) = fresh_db().await else { return };
    let pool = PgPool::connect(&db.url).await.expect("connect");
    let all = sqlx::migrate!("../migrations");
    let before = Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < NESTED_OPTIM)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate!("../migrations")
    };
    before
        .run(&pool)
        .await
        .expect("migrations before the change");

    let mut finetune = TrainConfig {
        dataset_id: 3,
        ..TrainConfig::default()
    };
    finetune.scale_schedule_to(20);
    finetune.optim.grad_clip_norm = None;
    let pretrain_box = PretrainBoxConfig {
        dataset_id: 3,
        proposals_run_id: 4,
        ..PretrainBoxConfig::default()
    };
    let pretrain_image = PretrainImageConfig {
        dataset_id: 3,
        ..PretrainImageConfig::default()
    };
    let configs = [
        JobConfig::Finetune(finetune),
        JobConfig::PretrainBox(pretrain_box),
        JobConfig::PretrainImage(pretrain_image),
    ];
    let mut ids = Vec::new();
    for c in &configs {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (kind, name, config, status) VALUES ($1, 'old', $2, 'succeeded')
             RETURNING id",
        )
        .bind(c.kind().as_str())
        .bind(flat(c))
        .fetch_one(&pool)
        .await
        .expect("insert an old-shape run");
        ids.push(id);
    }
    let benchmark = serde_json::json!({"kind": "benchmark", "steps": 2});
    let bench_id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (kind, name, config, status) VALUES ('benchmark', 'b', $1, 'queued')
         RETURNING id",
    )
    .bind(&benchmark)
    .fetch_one(&pool)
    .await
    .expect("insert a benchmark");

    crate::db::migrate(&pool)
        .await
        .expect("the remaining migrations");
    for (id, expected) in ids.iter().zip(&configs) {
        let stored: Value = sqlx::query_scalar("SELECT config FROM runs WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("read back");
        let decoded: JobConfig = serde_json::from_value(stored.clone())
            .unwrap_or_else(|e| panic!("{stored} does not decode: {e}"));
        assert_eq!(&decoded, expected);
    }
    let untouched: Value = sqlx::query_scalar("SELECT config FROM runs WHERE id = $1")
        .bind(bench_id)
        .fetch_one(&pool)
        .await
        .expect("read back");
    assert_eq!(untouched, benchmark, "other kinds are left alone");
    pool.close().await;
    db.drop_db().await;
}
