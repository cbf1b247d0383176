"""Triton's HTTP endpoint driven by wrk, a load generator we did not write (Debian's package): KServe v2 JSON
requests built here, sent round robin by a generated Lua script, latencies read from wrk's own report."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import orjson

from reaseq.contracts import RankRequest

MODEL = "ranker"
# wrk --latency: "     99%   12.34ms"
PERCENTILE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no report."""


def kserve_body(request: RankRequest) -> bytes:
    """The KServe v2 JSON inference request of one rank request (the inputs of triton_repo/ranker)."""
    inputs: list[dict[str, object]] = [
        {"name": "USER_ID", "shape": [1, 1], "datatype": "BYTES", "data": [request.user_id]},
        {"name": "K", "shape": [1, 1], "datatype": "INT32", "data": [request.k]},
    ]
    if request.candidates is not None:
        shape = [1, len(request.candidates)]
        inputs.append({"name": "CANDIDATES", "shape": shape, "datatype": "BYTES", "data": request.candidates})
    return orjson.dumps({"inputs": inputs, "outputs": [{"name": "ITEM_IDS"}, {"name": "SCORES"}]})


def lua_script(bodies: list[bytes]) -> str:
    """A wrk script that POSTs ``bodies`` in turn, each connection from its own place in the list."""
    entries = ",\n".join(f"[==[{body.decode()}]==]" for body in bodies)
    return f"""bodies = {{
{entries}
}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
function setup(thread)
  thread:set("counter", counter)
  counter = counter + 17
end
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, bodies[counter % #bodies + 1])
end
"""


def parse_report(report: str, seconds: float) -> dict[str, float]:
    """p50/p99 (ms), requests per second and non-2xx answers from wrk's ``--latency`` report."""
    found = {percent: float(value) * MS[unit] for percent, value, unit in PERCENTILE.findall(report)}
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", report, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", report, re.MULTILINE)
    if "50" not in found or "99" not in found or rate is None or total is None:
        raise WrkError(f"no latency report from wrk:\n{report[-2000:]}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", report)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    failed = int(errors.group(1)) if errors else 0
    failed += sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return {
        "requests": int(total.group(1)),
        "errors": failed,
        "p50_ms": round(found["50"], 2),
        "p99_ms": round(found["99"], 2),
        "throughput_rps": round(float(rate.group(1)), 1),
        "seconds": seconds,
    }


def run_wrk(http_url: str, requests: list[RankRequest], concurrency: int, seconds: float) -> dict[str, float]:
    """wrk against Triton's ``/v2/models/ranker/infer`` with ``concurrency`` connections for ``seconds``."""
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkError("wrk is not installed: `make bench-serving` installs Debian's package")
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "rank.lua"
        script.write_text(lua_script([kserve_body(request) for request in requests]))
        command = [
            binary,
            f"--threads={min(concurrency, 2)}",
            f"--connections={concurrency}",
            f"--duration={seconds:g}s",
            "--timeout=30s",
            "--latency",
            f"--script={script}",
            f"{http_url.rstrip('/')}/v2/models/{MODEL}/infer",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr[-2000:]}")
    return parse_report(done.stdout, seconds)
