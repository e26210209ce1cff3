"""`scripts/run.sh`: the embedded run answers on its port, and stopping it stops all it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code in (200, 503)  # the status page answers 503 until the worker reports
    except OSError:
        return False


@pytest.mark.skipif(not Path("/usr/bin/setsid").exists(), reason="needs setsid (util-linux)")
def test_run_sh_answers_on_its_port_and_sigterm_stops_everything_it_started(tmp_path):
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "DJANGO_", "CELERY_", "EMAIL_", "SITE_URL"))
    }
    env.update(
        PORT=str(port),
        DEMO_SMTP_PORT=str(_free_port()),
        PORTAL_VAR_DIR=str(tmp_path),
        RUN_SKIP_INSTALL="1",
    )
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 55
        while not _answers(f"http://127.0.0.1:{port}/status/"):
            assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(1)  # worker and beat are up by now too
        started = _descendants(process.pid)
        assert len(started) >= 4  # web server, worker, beat, the demo's sending server
        output = (tmp_path / "run.log").read_text()
        assert f"http://127.0.0.1:{port}/" in output
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in started if _alive(pid)] == []
    finally:
        for pid in [process.pid, *started]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
