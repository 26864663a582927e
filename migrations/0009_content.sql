-- Job inputs by content, for workers that share no folder with the server: the sha256 and size
-- of a dataset's annotation file and of each of its images, and of each artifact. Datasets and
-- artifacts from before this are hashed the first time a job needs them.
ALTER TABLE datasets
    ADD COLUMN annotations_sha256 text,
    ADD COLUMN annotations_bytes bigint;
CREATE TABLE dataset_files (
    dataset_id bigint NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    file_name  text NOT NULL,
    sha256     text NOT NULL,
    bytes      bigint NOT NULL,
    PRIMARY KEY (dataset_id, file_name)
);
CREATE INDEX dataset_files_by_sha256 ON dataset_files (sha256);
ALTER TABLE artifacts ADD COLUMN sha256 text;
CREATE INDEX artifacts_by_sha256 ON artifacts (sha256);
