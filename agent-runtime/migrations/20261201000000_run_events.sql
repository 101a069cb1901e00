-- Event logs of streamed and background runs (see agent-runtime/src/store/events.rs), and the
-- columns that number the events and mark background runs.
ALTER TABLE fastagentic_runs ADD COLUMN IF NOT EXISTS last_event bigint NOT NULL DEFAULT 0;
ALTER TABLE fastagentic_runs ADD COLUMN IF NOT EXISTS background boolean NOT NULL DEFAULT false;

-- The sweep for stalled background runs reads only running ones.
CREATE INDEX IF NOT EXISTS fastagentic_runs_background ON fastagentic_runs (updated_at)
    WHERE background AND status = 'running';

CREATE TABLE IF NOT EXISTS fastagentic_run_events (
    run_id     text        NOT NULL,
    seq        bigint      NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('delta', 'reset')),
    data       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- Events are deleted by age.
CREATE INDEX IF NOT EXISTS fastagentic_run_events_created_at ON fastagentic_run_events (created_at);
