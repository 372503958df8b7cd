"""The task loop: durable work in the `tasks` table, run inside the server process.

- `registry`: task kinds declared as data (`@task_kind(...)`), `Priority`, `TaskContext`
- `errors`: how a handler says why it failed (`PermanentError`, `RetryableError`, `HostError`)
- `queue`: `enqueue` / `enqueue_many` inside a write transaction, waking the runner
- `runner`: `Runner(instance)`, started and stopped by the app's lifespan
- `claim`: the one transaction per cycle that records results and claims work
- `retry`: backoff, and what becomes of a task after a run
- `circuit`: the per-host circuit breaker
- `maintenance`: the loop's own periodic upkeep
- `status`, `metrics`: the queue for `microfedi tasks` and `/metrics`
"""
