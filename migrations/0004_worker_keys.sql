-- Each worker gets its own secret at registration (sha256 stored, never the key itself), so a
-- call about a run can be checked against the worker that holds the attempt.
ALTER TABLE workers ADD COLUMN key_sha256 TEXT;
