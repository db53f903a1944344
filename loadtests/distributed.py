"""WORKERS=N: a locust master and N workers on this machine, merged into one samples.json.

The master runs the shape and writes locust's CSV and HTML; the workers send the requests, and each
writes its own samples-worker-<i>.json (the locustfile's record). The run fails, naming the worker and
its log, when a worker dies or leaves early: a report from part of the load would look like a pass.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import bisect
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
WORKER_INDEX_ENV = "LOADTEST_WORKER_INDEX"
# Locust exits 1 when the test saw failures or errors; those are the gate's to judge, as with one process.
OK_EXIT_CODES = (0, 1)
CONNECT_WAIT_S = 120  # the master gives up on workers that never connect, rather than waiting forever
WORKER_EXIT_WAIT_S = 30  # after the master, for the workers to write their samples and exit


class WorkerError(RuntimeError):
    """A worker (or the master) that failed the run; the message names it and its log."""


def worker_samples(out: Path, index: int | str) -> Path:
    return out / f"samples-worker-{index}.json"


def worker_log(out: Path, index: int) -> Path:
    return out / f"locust-worker-{index}.log"


def free_port() -> int:
    """A port the OS just handed out on loopback, so two runs on one machine do not share 5557."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def commands(cmd: list[str], workers: int, port: int) -> tuple[list[str], list[list[str]]]:
    """The master's and the workers' argv from the single-process one (`... -f <locustfile> <flags>`):
    the master keeps the report flags; a worker gets only the locustfile, or its CSV and HTML would
    overwrite the master's."""
    locust = cmd[:cmd.index("-f") + 2]
    master = [*cmd, "--master", "--master-bind-host", HOST, "--master-bind-port", str(port),
              "--expect-workers", str(workers), "--expect-workers-max-wait", str(CONNECT_WAIT_S)]
    worker = [*locust, "--worker", "--master-host", HOST, "--master-port", str(port)]
    return master, [list(worker) for _ in range(workers)]


# --- merging the workers' records ---

def _at(rows: list[list[float]], keys: list[int], second: int) -> list[float] | None:
    """A worker's latest CPU row at this second, within its own span (a row may skip a second)."""
    if not rows or second > keys[-1]:
        return None
    i = bisect.bisect_right(keys, second) - 1
    return rows[i] if i >= 0 else None


def combined_cpu(series: list[list[list[float]]]) -> list[list[float]]:
    """One row a second over the workers: the busiest worker's CPU, the first to saturate, and the
    users of all of them, as one process would have recorded them."""
    keyed = [(rows, [int(r[0]) for r in rows]) for rows in series]
    out = []
    for second in sorted({k for _, keys in keyed for k in keys}):
        now = [r for rows, keys in keyed if (r := _at(rows, keys, second)) is not None]
        out.append([float(second), max(r[1] for r in now), sum(int(r[2]) for r in now)])
    return out


def check(index: int, record: dict[str, Any]) -> None:
    """A worker whose test was not stopped before it quit (by the master) left the run early."""
    if not record.get("stopped", False):
        raise WorkerError(f"locust worker {index} quit before the master ended the run (a signal?); "
                          "its samples cover part of the run only")


def merge(records: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """The workers' records (index -> record) as the one record a single locust writes, plus each
    worker's sample count and CPU."""
    if not records:
        raise WorkerError("no worker records to merge")
    for index, record in sorted(records.items()):
        check(index, record)
    ordered = [records[i] for i in sorted(records)]
    started = [r["started"] for r in ordered if r.get("started") is not None]
    return {
        "settings": ordered[0]["settings"], "model": ordered[0]["model"],
        "samples": sorted((row for r in ordered for row in r["samples"]), key=lambda row: row[0]),
        "locust_cpu": combined_cpu([r["locust_cpu"] for r in ordered]),
        "started": min(started, default=None), "ended": max(r["ended"] for r in ordered),
        "workers": [{"index": i, "samples": len(r["samples"]), "locust_cpu": r["locust_cpu"]}
                    for i, r in sorted(records.items())],
    }


def read_records(out: Path, workers: int) -> dict[int, dict[str, Any]]:
    records = {}
    for i in range(workers):
        path = worker_samples(out, i)
        if not path.exists():
            raise WorkerError(f"locust worker {i} wrote no {path.name}; see {worker_log(out, i)}")
        records[i] = json.loads(path.read_text())
    return records


# --- the processes ---

def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _worker_failure(out: Path, index: int, code: int) -> str | None:
    """Why an exited worker failed the run; None when it ended well."""
    samples = worker_samples(out, index)
    if code not in OK_EXIT_CODES:
        return f"locust worker {index} exited {code}; see {worker_log(out, index)}"
    if not samples.exists():
        return f"locust worker {index} exited {code} without its samples; see {worker_log(out, index)}"
    try:
        check(index, json.loads(samples.read_text()))
    except (WorkerError, ValueError) as err:
        return f"{err}; see {worker_log(out, index)}"
    return None


def _stream(proc: subprocess.Popen, log: Path, show: Callable[[str], bool]) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        with open(log, "w") as f:
            for line in proc.stdout:
                f.write(line)
                if show(line):
                    print(line.rstrip(), flush=True)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def run(cmd: list[str], env: Mapping[str, str], workers: int, out: Path, timeout_s: float,
        show: Callable[[str], bool]) -> int:
    """Master and workers to the end; writes out/samples.json and returns the master's exit code.
    Raises WorkerError, having stopped every process, when any of them failed or time ran out."""
    for stale in out.glob("samples-worker-*.json"):  # a file from an earlier run would hide a dead worker
        stale.unlink()
    master_cmd, worker_cmds = commands(cmd, workers, free_port())
    logs = [open(worker_log(out, i), "w") for i in range(workers)]  # closed below
    procs: list[subprocess.Popen] = []
    try:
        master = subprocess.Popen(master_cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        procs.append(master)
        pump = _stream(master, out / "locust.log", show)
        for i, (argv, log) in enumerate(zip(worker_cmds, logs, strict=True)):
            procs.append(subprocess.Popen(argv, env={**env, WORKER_INDEX_ENV: str(i)}, stdout=log,
                                          stderr=subprocess.STDOUT))
        _supervise(out, master, procs[1:], time.monotonic() + timeout_s, timeout_s)
        pump.join(timeout=10)
    finally:
        _stop(procs)
        for log in logs:
            log.close()
    record = merge(read_records(out, workers))
    (out / "samples.json").write_text(json.dumps(record))
    return master.returncode


def _supervise(out: Path, master: subprocess.Popen, workers: list[subprocess.Popen], deadline: float,
               timeout_s: float) -> None:
    """Until the master and then every worker has exited; the first failure raises."""
    checked: set[int] = set()
    while master.poll() is None:
        for i, proc in enumerate(workers):
            if i not in checked and (code := proc.poll()) is not None:
                checked.add(i)
                if why := _worker_failure(out, i, code):  # fail now, not after the rest of the run
                    raise WorkerError(why)
        if time.monotonic() > deadline:
            raise WorkerError(f"locust did not finish within {timeout_s:g} s; stopped the master and "
                              f"{len(workers)} workers")
        time.sleep(0.5)
    if master.returncode not in OK_EXIT_CODES:
        raise WorkerError(f"the locust master exited {master.returncode}; see {out / 'locust.log'}")
    # The master has told the workers to quit; each writes its samples on the way out.
    until = min(deadline, time.monotonic() + WORKER_EXIT_WAIT_S)
    for i, proc in enumerate(workers):
        try:
            proc.wait(timeout=max(0.1, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise WorkerError(f"locust worker {i} still ran {WORKER_EXIT_WAIT_S} s after the master ended; "
                              f"see {worker_log(out, i)}") from None
        if i not in checked and (why := _worker_failure(out, i, proc.returncode)):
            raise WorkerError(why)
