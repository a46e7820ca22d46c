"""``order-sync demo``: the whole pipeline on one machine, with nothing to install or configure.

Starts the Sellercloud simulator and a worker on the embedded broker (in a fresh folder), publishes
events that succeed, are retried after 500s, meet a rejected token, are refused with a 400 and
are invalid, then prints what became of each and exits 0 if every outcome is the expected one.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import requests

from worker.cli.local_run import make_event, wait_for, worker_env
from worker.deadletter.ingest import dead_entries
from worker.publisher import EventPublisher
from worker.settings import broker_settings, database_settings
from worker.simulator import SimulatorServer, SimulatorState

USERNAME = "demo"
PASSWORD = "demo-password"  # noqa: S105 (the simulator's demo login, not a secret)
WAIT_SECONDS = 90.0

ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "address_line_1": "12 Analytical Row",
    "city": "Buffalo",
    "zip_code": "14201",
    "country": "US",
    "state": "NY",
}


@dataclass(frozen=True)
class Sample:
    label: str
    order_id: int
    body: str
    expect: str  # "applied" or a dead-letter reason
    script: list[Any]  # the simulator's scripted answers for this order


SAMPLES = (
    Sample(
        "applied at once",
        5001,
        json.dumps(make_event(5001, "demo-1", customer_id=7)),
        "applied",
        [],
    ),
    Sample(
        "retried after two 500s",
        5002,
        json.dumps(make_event(5002, "demo-2", order_source="Amazon", currency_code="USD")),
        "applied",
        [500, 500],
    ),
    Sample(
        "token rejected, refreshed",
        5003,
        json.dumps(make_event(5003, "demo-3", shipping_address=ADDRESS)),
        "applied",
        [401],
    ),
    Sample(
        "refused by the API (400)",
        5004,
        json.dumps(make_event(5004, "demo-4", sales_rep_1=12)),
        "api_rejected",
        [400],
    ),
    Sample(
        "invalid: US address without state",
        5005,
        json.dumps(make_event(5005, "demo-5", billing_address={**ADDRESS, "state": None})),
        "invalid_event",
        [],
    ),
    Sample("not JSON at all", 0, "order 5006 changed!", "invalid_json", []),
)


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--concurrency", "4"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _outcomes(state: SimulatorState, dead: list[dict[str, Any]]) -> list[tuple[Sample, str, str]]:
    by_event = {entry.get("event_id"): entry for entry in dead}
    unnamed = [entry for entry in dead if entry.get("event_id") is None]
    rows = []
    for sample in SAMPLES:
        event_id = json.loads(sample.body)["event_id"] if sample.order_id else None
        entry = by_event.get(event_id) if event_id else (unnamed[0] if unnamed else None)
        statuses = [r["status"] for r in state.requests() if r.get("order_id") == sample.order_id]
        if entry is not None:
            outcome, detail = entry["reason"], entry["error"]
        elif statuses and statuses[-1] == 200:
            outcome = "applied"
            detail = "PUT answers: " + ", ".join(str(s) for s in statuses)
        else:
            outcome, detail = "pending", "no outcome yet"
        rows.append((sample, outcome, detail))
    return rows


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the demo's broker folder and worker log.")
@click.option(
    "--console",
    "with_console",
    is_flag=True,
    help="Then keep the simulator, the worker and the operator console up until Ctrl-C.",
)
def demo_command(keep: bool, with_console: bool) -> None:
    """Run the pipeline end to end against the simulator on the embedded broker."""
    workdir = Path(tempfile.mkdtemp(prefix="order-sync-demo-"))
    state = SimulatorState(USERNAME, PASSWORD)
    server = SimulatorServer(state=state).start()
    # The embedded broker, in the demo's folder; the operator's other settings are kept.
    env = worker_env(
        simulator_url=server.url,
        username=USERNAME,
        password=PASSWORD,
        data_dir=workdir,
        inherit_settings=True,
        ORDER_SYNC_RETRY_BACKOFF="0.2",
        ORDER_SYNC_RETRY_BACKOFF_MAX="1",
    )
    click.echo(f"simulator   {server.url}")
    click.echo(f"broker      embedded, in {workdir / 'broker'}")
    worker_log = workdir / "worker.log"
    worker = _start_worker(env, worker_log)
    click.echo(f"worker log  {worker_log}")
    broker = broker_settings(env)
    try:
        control = requests.Session()
        script = {str(s.order_id): s.script for s in SAMPLES if s.script}
        control.post(f"{server.base_url}/_sim/script", json={"orders": script}, timeout=5)
        with EventPublisher(broker) as publisher:
            for sample in SAMPLES:
                publisher.publish_raw(sample.body)
        click.echo(f"published   {len(SAMPLES)} events\n")

        dead: list[dict[str, Any]] = []

        def settled() -> bool:
            nonlocal dead
            dead = dead_entries(broker, database_settings(env))
            return all(outcome != "pending" for _, outcome, _ in _outcomes(state, dead))

        try:
            finished = wait_for(settled, WAIT_SECONDS, "every outcome", interval=0.2)
        except TimeoutError:
            finished = False
        if with_console:
            _report(state, dead, finished)
            _serve_console(env, workdir)
    finally:
        _stop(worker)
        server.stop()
    if with_console:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    ok = _report(state, dead, finished)
    if not keep and ok:
        shutil.rmtree(workdir, ignore_errors=True)
        click.echo("(demo folder removed; run with --keep to keep the broker files and worker log)")
    if not ok:
        click.echo(f"demo: unexpected outcome; worker log kept at {worker_log}", err=True)
        sys.exit(1)


def _report(state: SimulatorState, dead: list[dict[str, Any]], finished: bool) -> bool:
    """Print what became of each sample; whether every outcome is the expected one."""
    rows = _outcomes(state, dead)
    click.echo(f"   {'event':<33} {'order':>5}  {'outcome':<14} detail")
    for sample, outcome, detail in rows:
        order = str(sample.order_id) if sample.order_id else "-"
        mark = "ok " if outcome == sample.expect else "!! "
        click.echo(f"{mark}{sample.label:<33} {order:>5}  {outcome:<14} {detail}")
    stats = state.stats()
    click.echo(
        f"\nSellercloud simulator saw {stats['put_requests']} PUTs and "
        f"{stats['token_requests']} token requests; {len(dead)} event(s) dead-lettered."
    )
    return finished and all(outcome == sample.expect for sample, outcome, _ in rows)


CONSOLE_PORT = 8080


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _serve_console(env: dict[str, str], workdir: Path) -> None:
    """``order-sync console`` on the demo's data (its broker and database), until Ctrl-C."""
    port = CONSOLE_PORT if _free(CONSOLE_PORT) else 0
    log_path = workdir / "console.log"
    with log_path.open("wb") as log_file:
        console = subprocess.Popen(  # noqa: S603 (our own command, no shell)
            [sys.executable, "-m", "worker.cli", "console", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
    assert console.stdout is not None  # noqa: S101 (stdout=PIPE)
    line = console.stdout.readline().decode(errors="replace").strip()
    if not line.startswith("console"):
        _stop(console)
        raise click.ClickException(f"the console did not start; its log: {log_path}")
    click.echo(f"\n{line}   <- open this in a browser; Ctrl-C stops the demo")
    try:
        console.wait()
    except KeyboardInterrupt:
        click.echo("\nstopping")
    finally:
        _stop(console)
