-- Run management: tags and a note per run, archiving (hidden from lists, kept), and the
-- reproducibility stamp recorded when a worker claims the run.

ALTER TABLE runs
    ADD COLUMN tags        TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN note        TEXT NOT NULL DEFAULT '',
    ADD COLUMN archived_at TIMESTAMPTZ,
    -- {"trainer": {version, git_commit, git_dirty, libtorch_version, device} | null,
    --  "dataset_annotations_sha256": …, "inputs": [{run_id, name, sha256}], "attempt": n}
    ADD COLUMN stamp       JSONB;

-- `tag:x` searches
CREATE INDEX runs_tags ON runs USING GIN (tags);
-- the default runs table lists the runs not archived, newest first
CREATE INDEX runs_unarchived ON runs (id) WHERE archived_at IS NULL;
