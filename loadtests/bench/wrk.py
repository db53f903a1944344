"""wrk, Debian's C load generator, against one route: a closed loop over a fixed number of connections.

One client thread is plenty for these rates and keeps the client's CPU off the stack's two cores.
A Lua `done` hook prints the figures as JSON, so nothing parses wrk's human output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

DONE_HOOK = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
  local seen, inverse = 0, 0
  for _, t in ipairs(threads) do
    seen, inverse = seen + (t:get("seen") or 0), inverse + (t:get("inverse") or 0)
  end
  io.write(string.format(', "field_seen": %d, "field_inverse_sum": %.6f}\\n', seen, inverse))
end
"""
# Per answer, a numeric JSON field (e.g. /embed's batch_size): each thread sums 1/value, so done()
# can give the harmonic mean, which for batch sizes seen per request is the mean size per batch.
FIELD_HOOK = """
threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) seen, inverse = 0, 0 end
response = function(status, headers, body)
  local v = tonumber(string.match(body, '"FIELD"%s*:%s*([%d.]+)'))
  if v and v > 0 then seen, inverse = seen + 1, inverse + 1 / v end
end
"""


@dataclass(frozen=True)
class Run:
    connections: int
    duration_s: float
    requests: int
    failed: int  # non-2xx answers and socket errors
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    field_harmonic_mean: float | None = None  # of the field named in run(), over 2xx answers

    @property
    def ok_per_s(self) -> float:
        return (self.requests - self.failed) / self.duration_s

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "ok_per_s": round(self.ok_per_s, 2)}


def lua_script(body: str, headers: dict[str, str], field: str | None = None) -> str:
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines.append(f"wrk.body = [==[{body}]==]")  # a long bracket: the JSON needs no escaping
    hooks = FIELD_HOOK.replace("FIELD", field) if field else "threads = {}\n"
    return "\n".join(lines) + "\n" + hooks + DONE_HOOK


def parse(output: str, connections: int) -> Run:
    line = next((ln for ln in reversed(output.splitlines()) if ln.startswith('{"requests"')), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    raw = json.loads(line)
    return Run(connections=connections, duration_s=raw["duration_us"] / 1e6, requests=raw["requests"],
               failed=raw["non_2xx"] + raw["socket_errors"], p50_ms=raw["p50_us"] / 1000,
               p90_ms=raw["p90_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
               mean_ms=round(raw["mean_us"] / 1000, 3),
               field_harmonic_mean=round(raw["field_seen"] / raw["field_inverse_sum"], 3)
               if raw["field_inverse_sum"] else None)


def run(url: str, body: str, connections: int, duration_s: float,
        headers: dict[str, str] | None = None, timeout_s: float = 60, field: str | None = None) -> Run:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk not found; `make setup` installs it")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(body, headers or {}, field))
        proc = subprocess.run(
            [binary, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
             f"--timeout={timeout_s:g}s", "-s", str(script), url],
            capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return parse(proc.stdout, connections)
