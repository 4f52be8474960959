"""Prefect flows around the videoseq library (which never imports prefect); see docs/orchestration.md.

    pipeline.py        scan -> per-video cached extraction -> compare heads -> report artifacts
    classify_inbox.py  classify what is new in an inbox folder; inbox.py keeps the JSONL ledger
    schedules.py       deployments with cron/interval schedules from YAML (`videoseq serve`)
    runners.py         the task runner from `runtime.task_runner`: bounded threads or Dask
"""
