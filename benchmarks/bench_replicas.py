"""Gateway replicas behind a round-robin balancer: when is an attacker refused, and what do
monitors in Redis cost per request?

    apt-get install -y redis-server        # the benchmark starts its own on loopback
    python benchmarks/bench_replicas.py                 # default monitor settings
    python benchmarks/bench_replicas.py --requests 2000 --concurrency 8

Started as users start them (`mlwarden serve --config mlwarden.toml`, one process each): one
gateway with ``memory://`` storage (one process, today's state), two more ``memory://``
gateways (replicas that share nothing), two gateways on one Redis (limits, flags and the
attack monitors' per-client logs shared), and one gateway whose limits and flags are in Redis
but whose monitors stay in its process (``[gateway.monitoring] storage = "memory://"``), which
isolates what the shared monitor log costs a request. The model is the digits SmallCNN of
the tests; the validator and the k-NN threshold are fitted on its training split, as
``mlwarden gateway fit-validator`` does. Every other monitor setting is the default.

1. Refusals. A knockoff thief (`KnockoffExtraction`, random queries, 10 a request), a
   HopSkipJump client (labels only, 16 a request) and an honest client (the 450 held-out
   digits, 10 a request), each with its own key, against one gateway, then round-robined over
   the two unshared replicas, then over the two Redis replicas (and against the Redis gateway
   with local monitors). Printed: inputs answered before the first refusal.
2. Overhead. One honest digit per request, ``--requests`` sequential requests (p50, p90,
   req/s) and ``--concurrency`` threads (req/s), against the ``memory://`` gateway, the Redis
   gateway with local monitors and one Redis replica; then the monitors alone, in
   process: `MonitorBank.observe` per batch of one with no store, with the Redis log (one
   bank), and two banks on one log taking turns (each replays the other's batch). Both
   overhead parts alternate their setups over ``--rounds`` rounds and report medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from mlwarden.core.errors import OracleError

LIMITS = ('per_key = "1000000/minute"\nper_key_burst = "100000/second"\n'
          'per_address = "1000000/minute"\nper_address_burst = "100000/second"\n')


def serve_toml(storage: str, monitors: str, port: int, name: str) -> str:
    return (f'[model]\npath = "cnn.safetensors"\nfactory = "mlwarden.models:SmallCNN"\n\n'
            f'[gateway]\nport = {port}\n\n[gateway.auth]\nkey_file = "keys.json"\n\n'
            f'[gateway.rate_limit]\nstorage = "{storage}"\nkey_prefix = "bench"\n{LIMITS}\n'
            '[gateway.validation]\nvalidator = "validator.safetensors"\nood = "flag"\n\n'
            f'[gateway.monitoring]\nstorage = "{monitors}"\n\n'
            f'[gateway.audit_log]\npath = "audit-{name}.jsonl"\n')


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    from mlwarden.gateway.server import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    import redis

    conn = redis.Redis(port=port)
    for _ in range(200):
        try:
            conn.ping()
            return proc, f"redis://127.0.0.1:{port}"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gateway exited: {proc.stdout.read().decode()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"{url} did not become ready")


def knockoff(urls: list[str], key: str, spec) -> str:
    from mlwarden.attacks.extraction import KnockoffExtraction
    from mlwarden.gateway.client import HttpOracle

    attack = KnockoffExtraction(3000, "random", epochs=1, query_batch=10, checkpoints=1, seed=0)
    with HttpOracle(urls, key, spec, batch_size=10) as oracle:
        result = attack.extract(oracle)
        return (f"{oracle.answered}" if result.stopped else
                f"never ({oracle.answered} answered)")


def hopskipjump(urls: list[str], key: str, spec, x, y) -> str:
    from mlwarden.attacks.evasion.hopskipjump import HopSkipJump
    from mlwarden.gateway.client import HttpOracle

    with HttpOracle(urls, key, spec, output="labels", batch_size=16) as oracle:
        try:
            HopSkipJump(norm="l2", queries=3000, max_iter=20, seed=0)(oracle, x, y)
        except OracleError:
            return f"{oracle.answered}"
        return f"never ({oracle.answered} answered)"


def honest(urls: list[str], key: str, spec, x) -> str:
    from mlwarden.gateway.client import HttpOracle

    with HttpOracle(urls, key, spec, output="labels", batch_size=10) as oracle:
        try:
            oracle(x)
        except OracleError:
            return f"{oracle.answered} (refused)"
        return f"never ({oracle.answered} answered)"


def latency(url: str, key: str, x: torch.Tensor, requests: int,
            concurrency: int) -> tuple[float, float, float, float]:
    """(p50 ms, p90 ms, sequential req/s, concurrent req/s) for one digit per request."""
    import httpx

    bodies = [{"inputs": [x[i % len(x)].tolist()]} for i in range(requests)]
    headers = {"Authorization": f"Bearer {key}"}
    times = []
    with httpx.Client(headers=headers, timeout=30) as client:
        for body in bodies[:50]:  # warm-up
            client.post(f"{url}/v1/predict", json=body).raise_for_status()
        start = time.perf_counter()
        for body in bodies:
            t = time.perf_counter()
            client.post(f"{url}/v1/predict", json=body).raise_for_status()
            times.append(time.perf_counter() - t)
        sequential = requests / (time.perf_counter() - start)

    def worker(part: list[dict]) -> None:
        with httpx.Client(headers=headers, timeout=30) as c:
            for body in part:
                c.post(f"{url}/v1/predict", json=body).raise_for_status()

    threads = [threading.Thread(target=worker, args=(bodies[i::concurrency],))
               for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent = requests / (time.perf_counter() - start)
    q = statistics.quantiles(times, n=10)
    return statistics.median(times) * 1e3, q[8] * 1e3, sequential, concurrent


WARM_UP = 200
"""Batches fed before the monitors are timed: past PRADA's ``min_samples`` (100)."""


def monitor_cost(redis_url: str, knn: float, x: torch.Tensor, labels: torch.Tensor,
                 batches: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """Microseconds per `MonitorBank.observe` of one query, default detector settings:
    (setup, median, min, max) over ``rounds``."""
    from mlwarden.gateway.config import ExtractionMonitorConfig
    from mlwarden.gateway.monitor_store import RedisMonitorStore
    from mlwarden.gateway.monitoring import MonitorBank

    ext = ExtractionMonitorConfig().model_dump(exclude={"enabled", "action", "block_seconds"})
    qa = {"threshold": knn}
    setups = (
        ("in process (no store)", 1, None),
        ("Redis log, one bank", 1, RedisMonitorStore(redis_url, "bench-micro")),
        ("Redis log, two banks taking turns", 2, RedisMonitorStore(redis_url, "bench-micro")),
    )
    runs: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    for r in range(rounds):  # the setups alternate, so a busy spell hits all of them
        for name, n_banks, store in setups:
            client = f"{name}-{r}"
            banks = [MonitorBank(extraction=ext, query_attack=qa, store=store)
                     for _ in range(n_banks)]
            for i in range(WARM_UP):  # a history to search, PRADA's test running (scipy loaded)
                banks[i % n_banks].observe(client, x[i % len(x)][None], labels[i % len(x)][None])
            start = time.perf_counter()
            for i in range(WARM_UP, WARM_UP + batches):
                banks[i % n_banks].observe(client, x[i % len(x)][None], labels[i % len(x)][None])
            runs[name].append((time.perf_counter() - start) / batches * 1e6)
    return [(name, statistics.median(v), min(v), max(v)) for name, v in runs.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--monitor-batches", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of the "
                        "overhead measurements (medians reported)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from _digits_model import digits_subject

    from mlwarden.defenses.detection.ood import MahalanobisDetector, save_detector
    from mlwarden.gateway.auth import generate_key, write_key_file
    from mlwarden.gateway.monitoring import calibrate_knn_threshold
    from mlwarden.gateway.server import free_port
    from mlwarden.io.dataset import load_builtin
    from mlwarden.io.export import save_weights

    model, test = digits_subject(450)
    train = load_builtin("digits").split(0.75, seed=0)[0]
    spec = model.spec
    validator = MahalanobisDetector(false_rejection_rate=0.01).fit(model, train.x, train.y)
    knn = calibrate_knn_threshold(train.x, k=10, quantile=0.001)
    redis_proc, redis_url = start_redis()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_weights(model, root / "cnn.safetensors")
        save_detector(validator, root / "validator.safetensors",
                      {"query_attack_threshold": knn})
        mem, red = ("memory://", "auto"), (redis_url, "auto")
        setups = {"one gateway": [mem], "two replicas, nothing shared": [mem, mem],
                  "two replicas, one Redis": [red, red],
                  "one Redis replica, monitors local": [(redis_url, "memory://")]}
        clients = ("knockoff", "hopskipjump", "honest", "load")
        keys = {(s, c): generate_key(f"{c}-{i}", ("predict",),
                                     "probabilities" if c == "knockoff" else "labels")
                for i, s in enumerate(setups) for c in clients}
        write_key_file(root / "keys.json", [k.entry for k in keys.values()])
        urls: dict[str, list[str]] = {}
        import mlwarden

        # the gateways import the same mlwarden as this script, wherever it is run from
        source = str(Path(mlwarden.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
        for s, storages in setups.items():
            urls[s] = []
            for storage, monitors in storages:
                port = free_port()
                cfg = root / f"{len(procs)}.toml"
                cfg.write_text(serve_toml(storage, monitors, port, f"{len(procs)}"))
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "mlwarden.cli.main", "serve", "--config", str(cfg)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env))
                urls[s].append(f"http://127.0.0.1:{port}")
        try:
            at = 0
            for s in setups:
                for url in urls[s]:
                    wait_ready(procs[at], url)
                    at += 1
            x, y = test.x[:2], test.y[:2]
            print("inputs answered before the first refusal (default monitor settings)\n")
            print(f"| {'setup':<34} | {'knockoff (random)':>17} | {'HopSkipJump':>11} | "
                  f"{'honest (450)':>20} |")
            print(f"|{'-' * 36}|{'-' * 19}|{'-' * 13}|{'-' * 22}|")
            for s in setups:
                ko = knockoff(urls[s], keys[s, "knockoff"].api_key, spec)
                hsj = hopskipjump(urls[s], keys[s, "hopskipjump"].api_key, spec, x, y)
                ok = honest(urls[s], keys[s, "honest"].api_key, spec, test.x)
                print(f"| {s:<34} | {ko:>17} | {hsj:>11} | {ok:>20} |")
            print(f"\nper-request cost: one digit a request, {args.requests} requests "
                  f"sequential, then {args.concurrency} threads; medians of {args.rounds} "
                  "alternated rounds\n")
            print(f"| {'gateway':<34} | {'p50 ms':>6} | {'p90 ms':>6} | {'req/s seq':>9} | "
                  f"{'req/s x' + str(args.concurrency):>9} |")
            print(f"|{'-' * 36}|{'-' * 8}|{'-' * 8}|{'-' * 11}|{'-' * 11}|")
            gateways = (("one gateway", "memory:// (all in process)"),
                        ("one Redis replica, monitors local", "redis:// limits, local monitors"),
                        ("two replicas, one Redis", "redis:// (limits, flags, monitors)"))
            measured: dict[str, list[tuple[float, float, float, float]]] = {
                s: [] for s, _ in gateways}
            for _ in range(args.rounds):  # alternated, medians reported
                for s, _ in gateways:
                    measured[s].append(latency(urls[s][0], keys[s, "load"].api_key, test.x,
                                               args.requests, args.concurrency))
            for s, label in gateways:
                p50, p90, seq, conc = (statistics.median(m[i] for m in measured[s])
                                       for i in range(4))
                print(f"| {label:<34} | {p50:>6.2f} | {p90:>6.2f} | {seq:>9.0f} | {conc:>9.0f} |")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"\nthe monitors alone: MonitorBank.observe of one query, default settings, "
          f"{args.monitor_batches} batches after {WARM_UP} of history, {args.rounds} alternated "
          "rounds\n")
    print(f"| {'store':<34} | {'us/batch (median)':>17} | {'min':>5} | {'max':>5} |")
    print(f"|{'-' * 36}|{'-' * 19}|{'-' * 7}|{'-' * 7}|")
    try:
        for name, us, low, high in monitor_cost(redis_url, knn, test.x, model.predict(test.x),
                                                args.monitor_batches, args.rounds):
            print(f"| {name:<34} | {us:>17.0f} | {low:>5.0f} | {high:>5.0f} |")
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


if __name__ == "__main__":
    main()
