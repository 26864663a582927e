-- Slurm placements: one row per Slurm job the agent (`trainer slurm-agent`) submitted for a run.
-- A run has at most one live placement (ended_at IS NULL): the unique index is what makes "never
-- two Slurm jobs for one run" hold across agents and agent restarts. While a run has a live
-- placement, ordinary workers do not claim it; only a claim naming the run (the worker inside
-- the Slurm job) does, and records its attempt here.
CREATE TABLE slurm_jobs (
    id           BIGSERIAL PRIMARY KEY,
    run_id       BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- the registered name of the agent that placed it (a restarted agent finds its jobs by it)
    agent        TEXT NOT NULL,
    -- NULL between the reservation and sbatch's answer
    slurm_job_id BIGINT,
    -- Slurm's job state as last reported (SUBMITTING before sbatch answered; REJECTED when it refused)
    state        TEXT NOT NULL DEFAULT 'SUBMITTING',
    reason       TEXT,
    node         TEXT,
    exit_code    TEXT,
    -- the run attempt its worker claimed; NULL while it has not
    attempt      INTEGER,
    submitted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at   TIMESTAMPTZ,
    ended_at     TIMESTAMPTZ
);
CREATE UNIQUE INDEX slurm_jobs_one_live_per_run ON slurm_jobs (run_id) WHERE ended_at IS NULL;
CREATE INDEX slurm_jobs_live_by_agent ON slurm_jobs (agent) WHERE ended_at IS NULL;
CREATE INDEX slurm_jobs_by_run ON slurm_jobs (run_id, id);
