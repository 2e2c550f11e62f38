"""What the gateway's output hardening and monitoring cost a model thief, in numbers.

    python benchmarks/extraction_gateway.py [--budget 500] [--strategy natural]

One digits SmallCNN is served behind a real mlwarden gateway (uvicorn on loopback). The
same knockoff attack (`mlwarden.attacks.extraction`) runs through `HttpOracle` with one
API key per output level: full probabilities (undefended), rounded, reverse-sigmoid
perturbed, and labels only. Pass 1 logs alerts without acting, to measure what hardening
alone does to the copy; pass 2 uses the default monitoring (block), to show when the
thief is stopped. Agreement is measured on held-out digits the attacker never sent.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from mlwarden.attacks.extraction import KnockoffExtraction
from mlwarden.core import Classifier, OracleError
from mlwarden.core.training import fit
from mlwarden.defenses.detection.ood import MahalanobisDetector
from mlwarden.gateway.app import create_app
from mlwarden.gateway.auth import generate_key
from mlwarden.gateway.client import HttpOracle
from mlwarden.gateway.config import GatewayConfig
from mlwarden.gateway.monitoring import calibrate_knn_threshold
from mlwarden.gateway.server import GatewayServer
from mlwarden.io.dataset import load_builtin
from mlwarden.models import SmallCNN

LEVELS = ("probabilities", "rounded", "perturbed", "labels")
LIMITS = {"per_key": "100000/minute", "per_key_burst": "10000/second",
          "per_address": "100000/minute", "per_address_burst": "10000/second"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--strategy", default="natural", choices=["natural", "synthetic", "random"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    digits = load_builtin("digits")
    train, test = digits.split(0.75, seed=0)
    victim_data, attacker = train.split(0.6, seed=1)  # the thief owns in-domain data
    torch.manual_seed(0)
    module = SmallCNN()
    fit(module, victim_data.x, victim_data.y, epochs=15, lr=2e-3, seed=0)
    victim = Classifier(module, digits.spec(), name="victim")
    reference = victim.predict(test.x)
    print(f"victim test accuracy {victim.accuracy(test.x, test.y):.3f}; budget {args.budget} "
          f"{args.strategy} queries; copy = 2-layer MLP, {args.epochs} epochs; seed {args.seed}")
    # What `mlwarden gateway fit-validator` does: an OOD validator and the query-attack
    # threshold, both calibrated on the victim's own training data.
    validator = MahalanobisDetector(false_rejection_rate=0.01).fit(
        victim, victim_data.x, victim_data.y
    )
    knn = calibrate_knn_threshold(victim_data.x, k=10, quantile=0.001)
    keys = {level: generate_key(level, ("predict",), level) for level in LEVELS}
    for action in ("log", "block"):
        with tempfile.TemporaryDirectory() as tmp:
            config = GatewayConfig.from_dict({
                "auth": {"keys": [k.entry.model_dump() for k in keys.values()]},
                "rate_limit": LIMITS,
                "audit_log": {"path": str(Path(tmp) / "audit.jsonl")},
                "monitoring": {"extraction": {"action": action},
                               "query_attack": {"action": action, "threshold": knn}},
            })
            server = GatewayServer(create_app(victim, config, validator=validator)).start()
            try:
                print(f"\nmonitoring action: {action}")
                print(f"{'output level':<14} {'queries':>7} {'agreement':>9} {'copy acc':>8}  "
                      "stopped")
                for level in LEVELS:
                    output = "labels" if level == "labels" else "probabilities"
                    with HttpOracle(server.url, keys[level].api_key, digits.spec(),
                                    output=output, batch_size=10) as oracle:
                        attack = KnockoffExtraction(args.budget, args.strategy,
                                                    epochs=args.epochs, seed=args.seed)
                        try:
                            r = attack.extract(oracle, natural=attacker.x, eval_x=test.x,
                                               eval_labels=reference, eval_y=test.y)
                        except OracleError as exc:
                            print(f"{level:<14} {oracle.queries:>7} {'-':>9} {'-':>8}  {exc}")
                            continue
                    print(f"{level:<14} {r.queries:>7} {r.agreement:>9.3f} "
                          f"{r.accuracy or 0:>8.3f}  {r.stopped or '-'}")
            finally:
                server.stop()


if __name__ == "__main__":
    main()
