"""Encrypted inference on breast_cancer: the same class as the plaintext model, and its cost.

    pip install 'mlwarden[he,serve]'
    python benchmarks/bench_encrypted_inference.py                 # linear and degree-2 heads
    python benchmarks/bench_encrypted_inference.py --heads linear --http 10

For each head (``linear``: logistic regression, ``square``: 8 hidden units with a learned
degree-2 activation), trained with `fit_head` on mlwarden's built-in breast_cancer split
(70 % train, seed 0): every test sample is encrypted by an `EncryptedClient`, evaluated by
`HEHead.evaluate` on a context deserialized from the public bytes (what the gateway holds),
and decrypted; the predicted class must equal the plaintext model's on every sample, else
the script exits 1. Reported per request (medians): client encrypt, server compute
(deserialize the ciphertext, evaluate, serialize the scores), client decrypt; the one-off
context cost (key generation, public context size, server deserialization); and, with
``--http N``, N requests through a real gateway (uvicorn on localhost, API key, rate
limits, audit log) with `EncryptedGatewayClient`.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlwarden.defenses.encrypted_inference import (
    EncryptedClient,
    HEHead,
    fit_head,
    load_context,
    load_vector,
)
from mlwarden.io.dataset import load_builtin

HEADS = {"linear": {"hidden": 0}, "square": {"hidden": 8, "degree": 2}}


def _ms(seconds: list[float]) -> str:
    return f"{1000 * statistics.median(seconds):.0f}"


def bench_head(kind: str, train: Any, test: Any) -> dict[str, Any]:
    model = fit_head(train.x, train.y, class_names=train.class_names, **HEADS[kind])
    head = HEHead.from_module(model)
    with torch.no_grad():
        plain = model(test.x).double().numpy()
    started = time.perf_counter()
    client = EncryptedClient(head.depth)
    keygen = time.perf_counter() - started
    public = client.public_context()
    started = time.perf_counter()
    context = load_context(public)
    load_s = time.perf_counter() - started
    enc, comp, dec, scores = [], [], [], []
    for row in test.x.numpy():
        t0 = time.perf_counter()
        ciphertext = client.encrypt(head.prepare(row))
        t1 = time.perf_counter()
        answer = [s.serialize() for s in head.evaluate(load_vector(context, ciphertext))]
        t2 = time.perf_counter()
        scores.append(client.decrypt(answer))
        t3 = time.perf_counter()
        enc.append(t1 - t0)
        comp.append(t2 - t1)
        dec.append(t3 - t2)
    scores_arr = np.array(scores)
    same = int((scores_arr.argmax(1) == plain.argmax(1)).sum())
    return {
        "head": kind,
        "model": model,
        "hehead": head,
        "n": len(test.x),
        "same": same,
        "accuracy": float((plain.argmax(1) == test.y.numpy()).mean()),
        "max_err": float(np.abs(scores_arr - plain).max()),
        "keygen_s": keygen,
        "context_mb": len(public) / 1e6,
        "context_load_s": load_s,
        "ciphertext_kb": len(ciphertext) / 1e3,
        "answer_kb": sum(map(len, answer)) / 1e3,
        "encrypt_ms": _ms(enc),
        "compute_ms": _ms(comp),
        "decrypt_ms": _ms(dec),
    }


def bench_http(result: dict[str, Any], test: Any, requests: int) -> dict[str, Any]:
    import uvicorn

    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.auth import generate_key
    from mlwarden.gateway.config import GatewayConfig
    from mlwarden.gateway.encrypted import EncryptedGatewayClient

    work = Path(tempfile.mkdtemp(prefix="bench-he-"))
    key = generate_key("bench", ("predict",))
    head_file = result["hehead"].save(work / "head.npz")
    config = GatewayConfig.from_dict(
        {
            "auth": {"keys": [key.entry.model_dump()]},
            "audit_log": {"path": str(work / "audit.jsonl")},
            "monitoring": {"query_attack": {"enabled": False}},
            "encrypted": {"enabled": True, "head": str(head_file)},
        }
    )
    app = create_app(result["model"], config)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        t0 = time.perf_counter()
        client = EncryptedGatewayClient(f"http://127.0.0.1:{port}", key.api_key)
        setup = time.perf_counter() - t0
        times, same = [], 0
        with torch.no_grad():
            plain = result["model"](test.x[:requests]).double().numpy()
        for i, row in enumerate(test.x[:requests].numpy()):
            t = time.perf_counter()
            scores = client.predict(row)
            times.append(time.perf_counter() - t)
            same += int(scores.argmax() == plain[i].argmax())
    finally:
        server.should_exit = True
        thread.join(10)
    return {"setup_s": setup, "request_ms": _ms(times), "same": same, "n": requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heads", default="linear,square")
    parser.add_argument("--http", type=int, default=20, help="requests over HTTP (0: none)")
    args = parser.parse_args()
    train, test = load_builtin("breast_cancer").split(0.7, seed=0)
    ok = True
    print(
        "| head | test samples | same class as plaintext | plaintext accuracy | max abs "
        "score error | encrypt ms | server compute ms | decrypt ms | ciphertext KB | "
        "answer KB | public context MB | keygen s | context load s | HTTP request ms |"
    )
    print("|" + " --- |" * 14)
    for kind in args.heads.split(","):
        r = bench_head(kind, train, test)
        http = bench_http(r, test, args.http) if args.http else None
        ok = ok and r["same"] == r["n"] and (http is None or http["same"] == http["n"])
        http_ms = f"{http['request_ms']} (context upload {http['setup_s']:.1f} s)" if http else "-"
        print(
            f"| {kind} | {r['n']} | {r['same']} | {r['accuracy']:.3f} | {r['max_err']:.1e} | "
            f"{r['encrypt_ms']} | {r['compute_ms']} | {r['decrypt_ms']} | "
            f"{r['ciphertext_kb']:.0f} | {r['answer_kb']:.0f} | {r['context_mb']:.1f} | "
            f"{r['keygen_s']:.1f} | {r['context_load_s']:.1f} | {http_ms} |",
            flush=True,
        )
    if not ok:
        print("FAILED: an encrypted prediction differs from the plaintext model's")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
