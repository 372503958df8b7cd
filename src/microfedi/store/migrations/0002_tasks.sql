-- The task loop: durable work items and the per-host circuit breaker.

CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    -- Enqueueing a key that any row still holds is a no-op (rows are purged
    -- after a retention, which frees their keys).
    dedupe_key   TEXT UNIQUE,
    -- Lower runs first (tasks.registry.Priority).
    priority     INTEGER NOT NULL,
    -- The remote host the task talks to: per-host limits and the circuit breaker.
    host         TEXT,
    state        TEXT NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'done', 'dead')),
    -- Attempts started; also the fencing token of a claim (completions of a
    -- run whose lease lapsed and was claimed again change nothing).
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       REAL NOT NULL,
    locked_until REAL,
    last_error   TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    finished_at  REAL,
    -- After this the task is not retried any more (created_at + retry window).
    deadline     REAL NOT NULL
);

-- The claim query walks one priority at a time in run_at order; kind and host
-- are in the index so excluded kinds and hosts are skipped without a row lookup.
CREATE INDEX tasks_claim ON tasks (priority, run_at, kind, host) WHERE state = 'queued';
-- Status and metrics per state (done ones by finish time), purging, and
-- finding running tasks whose lease lapsed.
CREATE INDEX tasks_state ON tasks (state, finished_at, kind);
-- Deferring or expiring the queued tasks of a host that is down.
CREATE INDEX tasks_queued_host ON tasks (host) WHERE state = 'queued' AND host IS NOT NULL;

CREATE TABLE hosts (
    host                 TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    -- Set while the circuit is open; once it has passed, one probe is let through.
    down_until           REAL,
    last_error           TEXT,
    last_success_at      REAL,
    last_failure_at      REAL
) WITHOUT ROWID;
