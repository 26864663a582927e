-- AlignDet Studio schema. Only the server touches these tables.

CREATE TABLE datasets (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    -- coco | voc (how it was read); source says from where (a path or an uploaded file name)
    format           TEXT NOT NULL,
    source           TEXT NOT NULL,
    -- absolute folder that image file names are relative to
    image_root       TEXT NOT NULL,
    -- the validated dataset as COCO JSON, written by the server (what workers read)
    annotations_path TEXT NOT NULL,
    num_images       INTEGER NOT NULL,
    num_annotations  INTEGER NOT NULL,
    -- optional train/val and labeled-subset image ids (aligndet_common::dataset::DatasetSplits)
    splits           JSONB,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE categories (
    dataset_id BIGINT NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    id         BIGINT NOT NULL,
    name       TEXT NOT NULL,
    PRIMARY KEY (dataset_id, id)
);

CREATE TABLE images (
    dataset_id BIGINT NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    id         BIGINT NOT NULL,
    file_name  TEXT NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, id)
);

CREATE TABLE annotations (
    dataset_id   BIGINT NOT NULL,
    id           BIGINT NOT NULL,
    image_id     BIGINT NOT NULL,
    category_id  BIGINT NOT NULL,
    x            DOUBLE PRECISION NOT NULL,
    y            DOUBLE PRECISION NOT NULL,
    w            DOUBLE PRECISION NOT NULL,
    h            DOUBLE PRECISION NOT NULL,
    area         DOUBLE PRECISION NOT NULL,
    iscrowd      BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (dataset_id, id),
    FOREIGN KEY (dataset_id, image_id) REFERENCES images (dataset_id, id) ON DELETE CASCADE,
    FOREIGN KEY (dataset_id, category_id) REFERENCES categories (dataset_id, id) ON DELETE CASCADE
);
CREATE INDEX annotations_by_image ON annotations (dataset_id, image_id);

CREATE TABLE workers (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    device        TEXT NOT NULL,
    info          JSONB NOT NULL DEFAULT '{}',
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id               BIGSERIAL PRIMARY KEY,
    kind             TEXT NOT NULL,
    name             TEXT NOT NULL,
    -- the full resolved config (aligndet_common::jobs::JobConfig)
    config           JSONB NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    dataset_id       BIGINT REFERENCES datasets (id) ON DELETE SET NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    worker_id        BIGINT REFERENCES workers (id) ON DELETE SET NULL,
    lease_expires_at TIMESTAMPTZ,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- the queue: claimable runs in FIFO order
CREATE INDEX runs_queued ON runs (id) WHERE status = 'queued';
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE status = 'running';

-- a fine-tune records the pre-training it started from, etc.
CREATE TABLE run_parents (
    run_id    BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    parent_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    role      TEXT NOT NULL,
    PRIMARY KEY (run_id, parent_id)
);

-- one row per claim of a run: who ran it and how that attempt ended
CREATE TABLE run_attempts (
    run_id     BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    worker_id  BIGINT REFERENCES workers (id) ON DELETE SET NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at   TIMESTAMPTZ,
    outcome    TEXT,
    note       TEXT,
    PRIMARY KEY (run_id, attempt)
);

-- (run, key, step) identifies a point: re-sent batches store it once
CREATE TABLE metrics (
    run_id    BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    step      BIGINT NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    wall_time DOUBLE PRECISION NOT NULL,
    attempt   INTEGER NOT NULL,
    PRIMARY KEY (run_id, key, step)
);

CREATE TABLE run_logs (
    run_id    BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt   INTEGER NOT NULL,
    seq       BIGINT NOT NULL,
    wall_time DOUBLE PRECISION NOT NULL,
    level     TEXT NOT NULL,
    text      TEXT NOT NULL,
    PRIMARY KEY (run_id, attempt, seq)
);

CREATE TABLE artifacts (
    run_id     BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    attempt    INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name)
);
