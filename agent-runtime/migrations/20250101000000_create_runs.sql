-- Durable agent runs (see agent-runtime/src/store/mod.rs). One row per run id; a failed run may
-- be begun again under the same id, which increments `attempts`.
CREATE TABLE IF NOT EXISTS fastagentic_runs (
    run_id      text        PRIMARY KEY CHECK (char_length(run_id) BETWEEN 1 AND 128),
    status      text        NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    input       jsonb       NOT NULL,
    output      jsonb,
    error       text,
    instance_id text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Operators clean up old runs by age; keep that query cheap.
CREATE INDEX IF NOT EXISTS fastagentic_runs_updated_at ON fastagentic_runs (updated_at);
