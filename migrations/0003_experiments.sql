-- Run dependencies and experiments.

-- A lineage row may also be a dependency: with `waits`, the run is claimable only once the parent
-- has succeeded, and it fails when the parent fails or is cancelled. Plain lineage rows (a
-- fine-tune naming the checkpoint it started from) keep `waits = false`, as before.
ALTER TABLE run_parents ADD COLUMN waits BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX run_parents_waiting ON run_parents (parent_id) WHERE waits;

-- An experiment: a chain of runs created together from one spec (pre-training, then fine-tuning
-- with baselines at the same seeds and labeled fractions).
CREATE TABLE experiments (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    -- the resolved spec the runs were made from (routes::experiments::ExperimentSpec)
    spec       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE runs ADD COLUMN experiment_id BIGINT REFERENCES experiments (id) ON DELETE SET NULL;
-- the run's place in its experiment: proposals, pretrain_image, pretrain_box, aligndet, baseline
ALTER TABLE runs ADD COLUMN experiment_role TEXT;
CREATE INDEX runs_by_experiment ON runs (experiment_id) WHERE experiment_id IS NOT NULL;
