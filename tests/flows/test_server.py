"""A real `prefect server start` on 127.0.0.1 and a real `videoseq serve`: a scheduled run completes.

Both processes run in their own process group and are killed as groups in `finally`, whatever happens.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait(what: str, check, *, timeout: float, procs: list[subprocess.Popen], logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{p.args[:3]} exited with {p.returncode} while waiting for {what}:\n"
                            + "\n".join(log.read_text()[-3000:] for log in logs))
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n"
                + "\n".join(log.read_text()[-3000:] for log in logs))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_scheduled_run_completes_on_a_real_server(tmp_path):
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ,
           "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": api_url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
           "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PREFECT_LOGGING_LEVEL": "INFO"}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        "deployments:\n"
        "  - name: test-inbox\n"
        "    flow: classify_inbox\n"
        "    interval: 5\n"
        "    parameters: {inbox: inbox, bundle: no-model-needed-for-an-empty-inbox, min_age: 0}\n")
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    procs: list[subprocess.Popen] = []
    try:
        with server_log.open("wb") as out:
            procs.append(subprocess.Popen(
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        _wait("the server's health check", lambda: _api(api_url, "/health"), timeout=120,
              procs=procs, logs=[server_log])
        with serve_log.open("wb") as out:
            procs.append(subprocess.Popen(
                [str(BIN / "videoseq"), "serve", "--config", str(schedules)],
                env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

        def completed_scheduled_run():
            runs = _api(api_url, "/flow_runs/filter",
                        {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "limit": 5})
            return [r for r in runs if r["deployment_id"] and r["auto_scheduled"]]

        runs = _wait("a scheduled run to complete", completed_scheduled_run, timeout=180,
                     procs=procs, logs=[server_log, serve_log])
        deployment = _api(api_url, f"/deployments/{runs[0]['deployment_id']}")
        assert deployment["name"] == "test-inbox"
        assert runs[0]["parameters"]["inbox"] == str(inbox)   # relative path resolved at serve time
    finally:
        for proc in reversed(procs):
            _stop(proc)
    assert all(p.poll() is not None for p in procs)


def test_serve_without_a_server_says_how_to_start_one(tmp_path, capsys, monkeypatch):
    from videoseq.cli import main

    monkeypatch.setenv("PREFECT_API_URL", "")
    schedules = tmp_path / "s.yaml"
    schedules.write_text("deployments:\n  - {name: x, flow: classify_inbox, interval: 60,"
                         " parameters: {inbox: i, bundle: b}}\n")
    assert main(["serve", "--config", str(schedules)]) == 2
    err = capsys.readouterr().err
    assert "prefect server start --host 127.0.0.1" in err and "PREFECT_API_URL" in err
    assert len(err.strip().splitlines()) == 1


def test_serve_with_an_unreachable_server_names_it(tmp_path, capsys, monkeypatch):
    from videoseq.cli import main

    url = f"http://127.0.0.1:{_free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    schedules = tmp_path / "s.yaml"
    schedules.write_text("deployments:\n  - {name: x, flow: classify_inbox, cron: '*/15 * * * *',"
                         " parameters: {inbox: i, bundle: b}}\n")
    assert main(["serve", "--config", str(schedules)]) == 2
    assert url in capsys.readouterr().err
