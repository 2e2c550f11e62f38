"""Load test: `mlwarden serve`, started as a user starts it, against bare FastAPI endpoints.

    apt-get install -y wrk                 # the load generator (Debian package)
    pip install 'mlwarden[serve]'          # fastapi, uvicorn, limits, ...
    python benchmarks/bench_gateway.py     # 3 rounds x 10 s, quiet and with a CPU hog
    python benchmarks/bench_gateway.py --quick           # smoke run: 1 round x 3 s
    python benchmarks/bench_gateway.py --rounds 5 --duration 20 --connections 32

What the user brings is made by a script that imports nothing of mlwarden (`EXPORT_SCRIPT`):
a small CNN trained on sklearn's 8x8 digits and saved with plain ``torch.export``, plus its
training data as ``train.npz``. Then, in a fresh directory and with the CLI only, as the README
says: ``mlwarden keys create``, ``mlwarden audit-log keygen``, ``mlwarden gateway fit-validator``
and ``mlwarden serve --config mlwarden.toml``. The config (`tensor_toml`) sets nothing about
torch threads or batching, so serve's own runtime choice (`mlwarden.gateway.tuning`) is what is
measured; it turns every protection on: API keys, rate limits (set high enough not to refuse
wrk), shape/bounds validation, the Mahalanobis OOD validator, rounded outputs, the extraction,
query-attack and failed-auth monitors (their default ``block`` action), and the keyed audit log.

The bare endpoints (`BARE_SCRIPT`, no mlwarden import) are the usual hand-rolled server: the
same ``.pt2`` loaded with ``torch.export.load``, a pydantic body, one forward pass per request,
uvicorn with one worker. ``--bare default,1`` (the default) runs two of them: one with torch's
default intra-op threads (what such a server gets unless its author thinks of it), and one that
calls ``torch.set_num_threads(1)`` (the strongest simple baseline for a small model on a busy
machine). All servers get the same JSON body format, cycled through all 1,797 digits by the wrk
Lua script (one digit per request, every wrk thread from its own offset), the same ``wrk -t -c
-d --latency --timeout``, and alternate runs (gateway, bare, bare, gateway, ...) after one
warm-up each: first with nothing added to the machine ("no hog"), then with a process spinning
one core beside them (``--hog-cores``). Any non-2xx answer, socket error or run without a
completed request makes the benchmark invalid: the script says which server and what it
answered, and exits with status 1.

The servers are started without ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, since the defaults are
what is measured. The output is a markdown table (medians of the rounds, ratios gateway/bare).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

EXPORT_SCRIPT = textwrap.dedent('''
    """The user's model: a small CNN on sklearn's digits, exported with plain torch.export."""
    import sys
    from pathlib import Path

    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    out = Path(sys.argv[1])
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1347], order[1347:]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(15):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x[test])).argmax(1).numpy() == y[test]).mean()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (torch.from_numpy(x[:2]),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(out / "model.pt2"))
    np.savez(out / "train.npz", x=x[train], y=y[train])
    with open(out / "bodies.jsonl", "w") as f:  # every digit, one request body per line
        for i in np.random.default_rng(1).permutation(len(x)):
            f.write('{"inputs": [%s]}\\n' % np.round(x[i], 4).tolist())
    print(f"exported model.pt2: held-out accuracy {acc:.3f}, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
''')

BARE_SCRIPT = textwrap.dedent('''
    """A hand-rolled FastAPI endpoint for the same .pt2: one forward pass per request."""
    import sys

    import torch
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    if sys.argv[3] != "default":  # the one line a user who has read about threads adds
        torch.set_num_threads(int(sys.argv[3]))
    model = torch.export.load(sys.argv[1]).module()
    app = FastAPI()


    class Body(BaseModel):
        inputs: list[list[list[list[float]]]]


    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "torch_threads": torch.get_num_threads()}


    @app.post("/v1/predict")
    async def predict(body: Body) -> dict[str, object]:
        x = torch.tensor(body.inputs, dtype=torch.float32)
        with torch.inference_mode():
            probs = torch.softmax(model(x), dim=1)
        return {"predictions": [{"label": int(p.argmax()), "probabilities": p.tolist()}
                                for p in probs]}


    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
''')

WRK_LUA = textwrap.dedent('''
    -- POST one digit per request, cycling through bodies.jsonl; the key header if given
    local counter = 0
    function setup(thread)
      thread:set("offset", counter * 997)
      counter = counter + 1
    end
    function init(args)
      bodies = {}
      for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
      i = tonumber(wrk.thread:get("offset")) or 0
      wrk.method = "POST"
      wrk.headers["Content-Type"] = "application/json"
      if args[2] ~= nil and args[2] ~= "" then wrk.headers["X-API-Key"] = args[2] end
    end
    function request()
      i = i + 1
      return wrk.format(nil, nil, nil, bodies[i % #bodies + 1])
    end
''')

WRK_TIMEOUT = "10s"
"""wrk drops answers slower than this from its latencies and counts them as socket errors
(its default is 2 s, which a bare server with oversubscribed threads can exceed)."""

RATE_LIMIT = "10000000/minute"
RATE_BURST = "1000000/second"
"""Far above what wrk can send here, so that a 429 means a bug, not the benchmark's load."""


def gateway_toml(
    port: int, *, model: str = "model.pt2", spec: str = "", validation: str = "", extra: str = ""
) -> str:
    """The user's config: every protection on, nothing about threads or batching.

    ``spec``, ``validation`` and ``extra`` are the few lines a benchmark's model needs
    beyond the shared ones (bounds for a plain export, the text section for a text model).
    """
    spec_block = f"\n{spec.strip()}\n" if spec else ""
    extra_block = f"\n{extra.strip()}\n" if extra else ""
    validation_lines = f"{validation.strip()}\n" if validation else ""
    return f'''[model]
path = "{model}"
{spec_block}
[gateway]
host = "127.0.0.1"
port = {port}

[gateway.auth]
key_file = "mlwarden-keys.json"

[gateway.rate_limit]
per_key = "{RATE_LIMIT}"
per_key_burst = "{RATE_BURST}"
per_address = "{RATE_LIMIT}"
per_address_burst = "{RATE_BURST}"

[gateway.validation]
{validation_lines}ood = "flag"
validator = "validator.safetensors"
{extra_block}
[gateway.hardening]
default_output = "rounded"

[gateway.monitoring.extraction]
action = "block"
[gateway.monitoring.query_attack]
action = "block"
[gateway.monitoring.failed_auth]
action = "block"

[gateway.audit_log]
path = "mlwarden-audit.jsonl"
key_file = "audit-keys.json"
require_key = true
'''


def tensor_toml(port: int) -> str:
    """This benchmark's config: a plain torch.export file says shape and classes, not bounds."""
    return gateway_toml(port, spec="[spec]\nbounds = [0.0, 1.0]", validation='bounds = "reject"')


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    """This environment without thread caps: the servers run with their defaults."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_step(cmd: list[str], cwd: Path, what: str) -> str:
    """A preparation step (export, keys, validator): this environment, thread caps included,
    since nothing about it is measured."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({shlex.join(cmd)}):\n{done.stdout}{done.stderr}")
    return done.stdout


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    key: str
    info: dict[str, object]
    log: Path


def start_server(name: str, cmd: list[str], cwd: Path, port: int, ready: str, key: str,
                 timeout: float = 180.0) -> Server:
    """Start a server process and wait until ``ready`` answers 200 (its log on failure)."""
    log = cwd / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=server_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = get_json(url + ready)
            return Server(name, proc, url, key, info, log)
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"{name} did not start ({shlex.join(cmd)}):\n{log.read_text()}")
        time.sleep(0.25)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def cpu_hog(cores: int) -> Iterator[None]:
    """``cores`` processes spinning a core each, for the loaded half of the benchmark."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait(10)


# -- wrk -----------------------------------------------------------------------------------


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """req/s, p50/p99 (ms), requests, non-2xx and socket errors of ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, flags=re.M)
        if m is None:
            raise SystemExit(f"wrk's output has no {p}% latency (was --latency given?):\n{out}")
        return to_ms(m.group(1), m.group(2))

    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(rps.group(1)), "p50": pct("50"), "p99": pct("99"),
            "requests": float(total.group(1)), "non2xx": float(bad.group(1)) if bad else 0.0,
            "socket_errors": float(sum(int(g) for g in sock.groups())) if sock else 0.0}


def run_wrk(server: Server, args: argparse.Namespace, work: Path, duration: float,
            connections: int) -> dict[str, float]:
    cmd = ["wrk", "-t", str(args.threads), "-c", str(connections), "-d", f"{duration:g}s",
           "--latency", "--timeout", WRK_TIMEOUT, "-s", str(work / "post.lua"),
           f"{server.url}/v1/predict", "--", str(work / "bodies.jsonl"), server.key]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr}")
    result = parse_wrk(done.stdout)
    if result["non2xx"] or result["socket_errors"]:
        explain_refusal(server, work, result, done.stdout)
    if result["requests"] == 0:
        raise SystemExit(f"INVALID BENCHMARK: no request to {server.name} completed in "
                         f"{duration:g} s (a stalled server or machine; run longer)\n"
                         f"wrk said:\n{done.stdout}\nserver log: {server.log}")
    return result


def explain_refusal(server: Server, work: Path, result: dict[str, float], out: str) -> None:
    """A server that refuses part of the load invalidates the benchmark: say what it said."""
    body = (work / "bodies.jsonl").read_text().splitlines()[0].encode()
    req = urllib.request.Request(f"{server.url}/v1/predict", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "X-API-Key": server.key})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = f"{r.status} (a request sent now passes)"
    except urllib.error.HTTPError as exc:
        answer = f"{exc.code} {exc.read()[:300].decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        answer = f"no answer: {exc}"
    raise SystemExit(
        f"INVALID BENCHMARK: {server.name} answered {result['non2xx']:.0f} non-2xx responses and "
        f"had {result['socket_errors']:.0f} socket errors in {result['requests']:.0f} requests; "
        f"one request now: {answer}\nwrk said:\n{out}\nserver log: {server.log}")


# -- the benchmark -------------------------------------------------------------------------


def prepare(work: Path, cli: list[str]) -> str:
    """The user's artefacts and the gateway's files, made with the CLI ``cli``; the API key."""
    (work / "export_model.py").write_text(EXPORT_SCRIPT)
    (work / "bare_server.py").write_text(BARE_SCRIPT)
    (work / "post.lua").write_text(WRK_LUA)
    print(run_step([sys.executable, "export_model.py", str(work)], work, "export").strip())
    out = run_step([*cli, "keys", "create", "--file", "mlwarden-keys.json", "--name", "bench",
                    "--scope", "predict", "--output", "rounded"], work, "keys create")
    key = out.strip().splitlines()[0]
    run_step([*cli, "audit-log", "keygen", "--file", "audit-keys.json"], work, "audit-log keygen")
    print(run_step([*cli, "gateway", "fit-validator", "--model", "model.pt2", "--data",
                    "train.npz", "--config", "mlwarden.toml"], work, "fit-validator").strip())
    return key


def median(runs: list[dict[str, float]], field: str) -> float:
    return statistics.median(r[field] for r in runs)


def table(results: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    """Markdown: medians per machine and server, then the gateway's ratio to each bare server
    (of the medians, and the range of the per-round ratios)."""
    lines = ["| machine | server | req/s | p50 ms | p99 ms | requests / per-round ratios "
             "| non-2xx |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for cond, runs in results.items():
        for name, r in runs.items():
            lines.append(f"| {cond} | {name} | {median(r, 'rps'):.0f} | {median(r, 'p50'):.2f} | "
                         f"{median(r, 'p99'):.2f} | {sum(x['requests'] for x in r):.0f} | "
                         f"{sum(x['non2xx'] for x in r):.0f} |")
        g = runs[GATEWAY]
        for name, b in runs.items():
            if name == GATEWAY:
                continue
            per = [x["rps"] / y["rps"] for x, y in zip(g, b, strict=True)]
            p99 = [x["p99"] / y["p99"] for x, y in zip(g, b, strict=True)]
            lines.append(
                f"| {cond} | **gateway / {name}** | **{median(g, 'rps') / median(b, 'rps'):.2f}**"
                f" | {median(g, 'p50') / median(b, 'p50'):.2f} | "
                f"{median(g, 'p99') / median(b, 'p99'):.2f} | per round: req/s "
                f"{min(per):.2f}-{max(per):.2f}, p99 {min(p99):.2f}-{max(p99):.2f} | |")
    return "\n".join(lines)


GATEWAY = "mlwarden serve (all on)"


def bare_name(threads: str) -> str:
    return ("bare FastAPI (torch default threads)" if threads == "default"
            else f"bare FastAPI ({threads} torch thread{'s' if threads != '1' else ''})")


def bench_args(doc: str, add: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    """The options every gateway benchmark takes (``add`` adds its own), checked."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="alternate runs per server and machine")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--bare", default="default,1",
                    help="bare endpoints to run, by torch threads: 'default' (torch's own "
                    "choice, what a hand-rolled server gets) and/or numbers (set_num_threads)")
    ap.add_argument("--hog-cores", type=int, default=1,
                    help="cores the CPU hog spins in the second half (0: the no-hog half only)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 3 s runs (unless --rounds/--duration are given)")
    ap.add_argument("--mlwarden", default=None,
                    help="command that runs the CLI (default: this python -m mlwarden.cli.main)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    if add is not None:
        add(ap)
    args = ap.parse_args()
    given = {a.split("=")[0] for a in sys.argv[1:]}
    if args.quick:
        args.rounds = args.rounds if "--rounds" in given else 1
        args.duration = args.duration if "--duration" in given else 3.0
    args.bares = [b.strip() for b in args.bare.split(",") if b.strip()]
    if not args.bares or any(b != "default" and not (b.isdigit() and int(b) > 0)
                             for b in args.bares):
        raise SystemExit(f"--bare: 'default' and/or positive thread counts, got '{args.bare}'")
    if args.rounds < 1 or args.duration <= 0 or args.connections < args.threads:
        raise SystemExit("--rounds >= 1, --duration > 0 and --connections >= --threads")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    args.cli = (shlex.split(args.mlwarden) if args.mlwarden
                else [sys.executable, "-m", "mlwarden.cli.main"])
    return args


@dataclass
class Measured:
    results: dict[str, dict[str, list[dict[str, float]]]]
    runtime: object
    verified: str


def measure(args: argparse.Namespace, work: Path, key: str, gport: int, bare_model: str,
            servers: list[Server], first: Callable[[Server, Path], None] | None = None
            ) -> Measured:
    """Start the gateway and the bare servers (into ``servers``, which the caller stops),
    alternate wrk runs without and with the CPU hog, then verify the gateway's audit log."""
    cli = args.cli
    servers.append(start_server(GATEWAY, [*cli, "serve", "--config", "mlwarden.toml"], work,
                                gport, "/readyz", key))
    for threads in args.bares:
        port = free_port()
        servers.append(start_server(bare_name(threads), [sys.executable, "bare_server.py",
                                    bare_model, str(port), threads], work, port, "/healthz", ""))
    warm = max(1.0, min(3.0, args.duration))
    for s in servers:
        if first is not None:
            first(s, work)
        run_wrk(s, args, work, warm, args.connections)
    conditions = [("no hog", 0)] + ([(f"{args.hog_cores}-core hog", args.hog_cores)]
                                   if args.hog_cores else [])
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for cond, cores in conditions:
        results[cond] = {s.name: [] for s in servers}
        with cpu_hog(cores):
            for i in range(args.rounds):
                for s in servers:
                    r = run_wrk(s, args, work, args.duration, args.connections)
                    results[cond][s.name].append(r)
                    print(f"  {cond} round {i + 1}, {s.name}: {r['rps']:.0f} req/s, "
                          f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms", flush=True)
    runtime = (servers[0].info.get("details") or {}).get("runtime")  # type: ignore[union-attr]
    for s in servers:
        stop(s.proc)
    verified = run_step([*cli, "audit-log", "verify", "mlwarden-audit.jsonl", "--key-file",
                         "audit-keys.json"], work, "audit-log verify").strip()
    return Measured(results, runtime, verified)


def print_results(script: str, what: str, args: argparse.Namespace, began: float,
                  load_before: tuple[float, float, float], measured: Measured,
                  servers: list[Server], work: Path, *notes: str) -> None:
    """The run line (command, wrk settings, load), the table, and what the servers said."""
    load = os.getloadavg()
    print(f"\n`python benchmarks/{script} {shlex.join(sys.argv[1:])}`: "
          f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {what}, "
          f"{args.rounds} alternated round(s) per server and machine, medians; "
          f"{os.cpu_count()} CPUs, load average (1/5/15 min) "
          f"{'/'.join(f'{v:.1f}' for v in load_before)} before, "
          f"{'/'.join(f'{v:.1f}' for v in load)} at the end (other processes count; the machine "
          f"is quiet only if nothing else runs); {time.monotonic() - began:.0f} s in all\n")
    print(table(measured.results))
    print(f"\ngateway runtime (/readyz details.runtime): {json.dumps(measured.runtime)}")
    for note in notes:
        print(note)
    for s in servers[1:]:
        print(f"{s.name}: torch.get_num_threads() = {s.info.get('torch_threads')}")
    v = measured.verified
    print(f"audit log: {v.splitlines()[-1] if v else '(no output)'}")
    if args.keep:
        print(f"work directory: {work}")


def main() -> int:
    args = bench_args(__doc__)
    began, load_before = time.monotonic(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mlwarden-bench-"))
    servers: list[Server] = []
    try:
        gport = free_port()
        (work / "mlwarden.toml").write_text(tensor_toml(gport))
        key = prepare(work, args.cli)
        print(f"prepared in {time.monotonic() - began:.0f} s", flush=True)
        measured = measure(args, work, key, gport, "model.pt2", servers)
    finally:
        for s in servers:
            stop(s.proc)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_results("bench_gateway.py", "one digit per request", args, began, load_before,
                  measured, servers, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
