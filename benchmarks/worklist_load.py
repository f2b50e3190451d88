"""Worklist under load: 16 concurrent users for 30 s against a local gunicorn, 10,000 cases.

Command (PostgreSQL answering on 127.0.0.1; about a minute, plus the seeding on the first run):

    .venv/bin/python -m benchmarks.worklist_load [--cases 10000] [--users 16] [--seconds 30] [--port 8820]

What runs: its own database (DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/xnet_bench_worklist) is migrated and filled to --cases cases
by benchmarks.worklist.fill (2,500 patients, one or two images per case, 80 % succeeded jobs, the
stored reading order, cases older than three days mostly signed); gunicorn starts with XNET's
gunicorn settings and 2 workers (as scripts/run.sh), DEBUG off, on 127.0.0.1:--port, and gets 8
warm-up requests per worker; then locust runs headless with --users users that each send the
next request as soon as the last returns (closed loop, no think time; benchmarks/locust_worklist.py
says what each user requests). Users and duration are fixed, so every run is bounded. Prints
requests/s, p50 and p95 for the page and the API (all their requests together, then each URL),
failures, and the machine load before and after. Locust runs on the same machine and takes CPU
from the server: the figures include that.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, setup_django
from benchmarks.worklist import seeded

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/xnet_bench_worklist"


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer on port {port} within {timeout:.0f} s")


def warm_up(port: int, session: str, token: str, workers: int) -> None:
    """A few requests per worker first, so the timed run does not measure process start-up
    (imports, template compilation, first connections)."""
    import urllib.request

    for _ in range(4 * workers):
        for path, header in (
            ("/", ("Cookie", f"sessionid={session}")),
            ("/api/v1/cases/", ("Authorization", f"Token {token}")),
        ):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict([header]))
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - our own http URL
                if response.status != 200:
                    raise SystemExit(f"GET {path} answered {response.status} during warm-up")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = fraction * (len(ordered) - 1)
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def report(times: list, seconds: float) -> None:
    groups: dict[str, list[tuple[str, float, int]]] = {}
    for name, elapsed, status in times:
        groups.setdefault(name.split()[0], []).append((name, elapsed, status))
        groups.setdefault(name, []).append((name, elapsed, status))
    print(f"  {'':24}{'requests':>9}{'req/s':>8}{'p50':>10}{'p95':>10}{'max':>10}{'failed':>8}")
    for name in sorted(groups, key=lambda n: (n.split()[0], " " in n, n)):
        rows = groups[name]
        elapsed = [row[1] for row in rows]
        failed = sum(1 for row in rows if row[2] != 200)
        print(
            f"  {name:24}{len(rows):>9}{len(rows) / seconds:>8.1f}{percentile(elapsed, 0.5):>7.0f} ms"
            f"{percentile(elapsed, 0.95):>7.0f} ms{max(elapsed):>7.0f} ms{failed:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--port", type=int, default=8820)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    args = parser.parse_args()

    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    scratch = Path(tempfile.mkdtemp(prefix="xnet-bench-worklist-load-"))
    setup_django(scratch)

    from django.test import Client

    from accounts.services import api_token_create
    from diagnosis.models import Case

    department, user, total = seeded(args.cases)
    signed = Case.objects.filter(patient__department=department, report__isnull=False).count()

    login = Client()
    login.force_login(user)
    session = login.cookies["sessionid"].value
    _, token = api_token_create(user=user, name="worklist load benchmark", days=1, created_by=None)

    env = {
        **os.environ,
        "XNET_SESSION_IDLE_MINUTES": "60",
        "XNET_LOCUST_SESSION": session,
        "XNET_LOCUST_TOKEN": token,
        "XNET_LOCUST_TIMES": str(scratch / "times.json"),
    }
    bin_dir = Path(sys.executable).parent
    log = open(scratch / "gunicorn.log", "w")  # noqa: SIM115 - open for the server's lifetime
    server = subprocess.Popen(
        [
            str(bin_dir / "gunicorn"),
            "-c",
            "python:xnet_site.gunicorn_conf",
            "--workers",
            str(args.workers),
            "--bind",
            f"127.0.0.1:{args.port}",
            "xnet_site.wsgi",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(args.port, server)
        warm_up(args.port, session, token, args.workers)
        print(f"XNET worklist under load: {total} cases ({signed} signed) in the user's department")
        print(f"  before  : {machine()}")
        print(
            f"  load    : locust {args.users} users, closed loop, {args.seconds} s, against gunicorn "
            f"{args.workers} workers on 127.0.0.1:{args.port} (DEBUG off, PostgreSQL)"
        )
        cpu_before = os.times()
        locust = subprocess.run(
            [
                str(bin_dir / "locust"),
                "-f",
                str(ROOT / "benchmarks" / "locust_worklist.py"),
                "--headless",
                "--users",
                str(args.users),
                "--spawn-rate",
                str(args.users),
                "--run-time",
                f"{args.seconds}s",
                "--host",
                f"http://127.0.0.1:{args.port}",
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=args.seconds + 120,
        )
        cpu_after = os.times()
        if not (scratch / "times.json").exists():
            raise SystemExit(f"locust wrote no times (exit {locust.returncode}):\n{locust.stderr[-3000:]}")
        times = json.loads((scratch / "times.json").read_text())
        print(f"  after   : {machine()}")
        locust_cpu = (cpu_after.children_user + cpu_after.children_system) - (
            cpu_before.children_user + cpu_before.children_system
        )
        print(f"  locust  : {locust_cpu:.1f} CPU-seconds over {args.seconds} s (taken from the server's 2 cores)")
        report(times, args.seconds)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
