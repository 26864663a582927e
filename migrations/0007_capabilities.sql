-- Capability-matched claims: what a worker has, what a run needs and how urgent it is.
-- Workers registered before this have no capabilities ({}): the claim treats them as one CPU
-- core, so they still take the runs that need nothing more.
ALTER TABLE workers
    ADD COLUMN capabilities jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN draining boolean NOT NULL DEFAULT false;
ALTER TABLE runs
    ADD COLUMN requirements jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN priority integer NOT NULL DEFAULT 0;
CREATE INDEX runs_queued_by_priority ON runs (priority DESC, id) WHERE status = 'queued';
