-- Pseudo-boxes of a `proposals` run, one row per image (the unit of resumption).
CREATE TABLE proposal_images (
    run_id    BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    image_id  BIGINT NOT NULL,
    -- every box in the order produced, flattened [x, y, w, h, x, y, w, h, ...]
    boxes     REAL[] NOT NULL,
    -- per box: 0 = kept, otherwise the filter rule that removed it (see aligndet_common::api::FilterRule)
    removed_by SMALLINT[] NOT NULL,
    seconds   DOUBLE PRECISION NOT NULL,
    attempt   INTEGER NOT NULL,
    PRIMARY KEY (run_id, image_id)
);
