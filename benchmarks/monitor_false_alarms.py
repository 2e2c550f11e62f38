"""How often each attack monitor raises an alert on honest traffic, through the real gateway.

    python benchmarks/monitor_false_alarms.py [--clients 8] [--retry 0.1] [--seed 0]
                                              [--repeat-window 0]

The digits SmallCNN (`_digits_model.digits_subject`) is served behind a real mlwarden
gateway (uvicorn on loopback) with the validator and the k-NN threshold calibrated as
`mlwarden gateway fit-validator` does, on the training split. Every monitor is set to
``action = "log"``, so a false alarm is counted and the client keeps sending. Each of
``--clients`` honest clients (its own API key, its own thread) sends the 450 held-out
digits in its own random order, in requests of 1-10 samples; a share ``--retry`` of the
requests is sent twice (a client retrying after a timeout). Printed per monitor: the
share of clients it alerted on, alerts per 1,000 queries, and the per-query statistic
behind it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _digits_model import digits_subject  # noqa: E402

from mlwarden.defenses.detection.ood import MahalanobisDetector  # noqa: E402
from mlwarden.gateway.app import create_app  # noqa: E402
from mlwarden.gateway.auth import generate_key  # noqa: E402
from mlwarden.gateway.config import GatewayConfig  # noqa: E402
from mlwarden.gateway.monitoring import calibrate_knn_threshold  # noqa: E402
from mlwarden.gateway.server import GatewayServer  # noqa: E402
from mlwarden.io.dataset import load_builtin  # noqa: E402

LIMITS = {"per_key": "100000/minute", "per_key_burst": "10000/second",
          "per_address": "100000/minute", "per_address_burst": "10000/second"}
MONITORS = ("extraction", "query_attack", "failed_auth")


def honest_client(url: str, api_key: str, x: torch.Tensor, seed: int, retry: float,
                  out: dict[str, int]) -> None:
    """Send all of ``x`` once, in a random order and random request sizes; retry some."""
    import httpx

    rng = random.Random(seed)
    order = list(range(len(x)))
    rng.shuffle(order)
    headers = {"Authorization": f"Bearer {api_key}"}
    sent = requests = refused = 0
    with httpx.Client(timeout=60) as http:
        i = 0
        while i < len(order):
            n = rng.randint(1, 10)
            body = {"inputs": x[order[i:i + n]].tolist()}
            for _ in range(2 if rng.random() < retry else 1):
                r = http.post(f"{url}/v1/predict", json=body, headers=headers)
                requests += 1
                refused += r.status_code != 200
            sent += len(order[i:i + n])
            i += n
    out.update(queries=sent, requests=requests, refused=refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--retry", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat-window", type=int, default=None,
                        help="monitoring.repeat_window (0: feed exact repeats to the monitors, "
                        "as before they were filtered)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, test = digits_subject(450)
    train, _ = load_builtin("digits").split(0.75, seed=0)
    # what `mlwarden gateway fit-validator --frr 0.01` fits, on the training split
    validator = MahalanobisDetector(false_rejection_rate=0.01).fit(model, train.x, train.y)
    threshold = calibrate_knn_threshold(train.x, k=10, quantile=0.001)
    keys = [generate_key(f"honest-{i}", ("predict",), "rounded") for i in range(args.clients)]
    with tempfile.TemporaryDirectory() as tmp:
        audit = Path(tmp) / "audit.jsonl"
        config = GatewayConfig.from_dict({
            "auth": {"keys": [k.entry.model_dump() for k in keys]},
            "rate_limit": LIMITS,
            "audit_log": {"path": str(audit)},
            "monitoring": {"extraction": {"action": "log"},
                           "query_attack": {"action": "log", "threshold": threshold},
                           "failed_auth": {"action": "log"},
                           **({"repeat_window": args.repeat_window}
                              if args.repeat_window is not None else {})},
        })
        server = GatewayServer(create_app(model, config, validator=validator)).start()
        results: list[dict[str, int]] = [{} for _ in keys]
        try:
            threads = [threading.Thread(target=honest_client, args=(
                server.url, k.api_key, test.x, args.seed * 1000 + i, args.retry, results[i]))
                for i, k in enumerate(keys)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            state = server.server.config.app.state.gateway
            bank = state.monitors
            stats = {k.entry.prefix: bank._clients.get(k.entry.prefix) for k in keys}
        finally:
            server.stop()
        entries = [json.loads(line) for line in audit.read_text().splitlines()]
    alerts = [e for e in entries if e["event"] == "alert"]
    flagged = sum(len(f["samples"]) for e in entries if e["event"] == "predict"
                  for f in e["flags"] if f["check"] == "ood")
    queries = sum(r["queries"] for r in results)
    requests = sum(r["requests"] for r in results)
    refused = sum(r["refused"] for r in results)
    hits = sum(s.query_attack.hits_ for s in stats.values() if s is not None and s.query_attack)
    seen = sum(s.query_attack.queries_ for s in stats.values()
               if s is not None and s.query_attack)
    ws = [s.extraction.last_w_ for s in stats.values()
          if s is not None and s.extraction and s.extraction.last_w_ is not None]
    print(f"{args.clients} honest clients x {len(test)} held-out digits = {queries} queries in "
          f"{requests} requests (retry share {args.retry:g}; {refused} refused); "
          f"validator FRR 0.01, k-NN threshold {threshold:.3g}; repeat window "
          f"{config.monitoring.repeat_window}; seed {args.seed}")
    print(f"{'monitor':<14} {'clients alerted':>16} {'alerts/1k queries':>18}  per-query signal")
    for name in MONITORS:
        mine = [a for a in alerts if a["detector"] == name]
        clients = len({a["key"] or a["address"] for a in mine})
        if name == "extraction":
            signal = (f"OOD-flagged share {flagged / queries:.2%}; final PRADA W "
                      f"min {min(ws):.3f} (delta 0.90)" if ws else "no W yet")
        elif name == "query_attack":
            signal = f"k-NN probe hits {hits}/{seen} = {hits / max(seen, 1):.2%} (alert at 25)"
        else:
            signal = "no failed authentication in honest traffic"
        print(f"{name:<14} {clients:>9}/{args.clients:<6} {1000 * len(mine) / queries:>18.2f}"
              f"  {signal}")
        for a in mine:
            print(f"    {a['key']}: {a['detail']} after {a['queries']} queries")


if __name__ == "__main__":
    main()
