"""Load test: the protected mlwarden gateway vs a bare FastAPI endpoint, same model, same wrk.

    apt-get install wrk            # the load generator (Debian package)
    pip install 'mlwarden[serve]'  # fastapi, uvicorn, limits, redis, prometheus-client, httpx
    python benchmarks/bench_gateway.py [--connections 16] [--duration 10] [--rounds 3] [--width 16]
    python benchmarks/bench_gateway.py --model minilm   # a pretrained transformer instead

Both servers run as separate processes with one uvicorn worker and the same torch thread
count, one after the other, on loopback. The gateway has every protection on: API-key
auth, rate limits (in memory, set high enough that wrk is not refused), body/shape/bounds
validation, the Mahalanobis OOD validator, rounded outputs, both attack monitors (action
"log", so that every request does the full work instead of being blocked), the
hash-chained audit log, and dynamic batching. The bare endpoint is the usual hand-rolled
server: a pydantic body model and one forward pass per request.

Two subjects: ``--model digits`` (default), the SmallCNN on 8x8 digits, whose forward pass
costs about 0.1 ms, so the run measures the HTTP stack and the protections; and
``--model minilm``, a review classifier on the pretrained all-MiniLM-L6-v2 encoder
(``benchmarks/_minilm.py``, 22M parameters, about 15 ms per sentence on one CPU thread),
which is what a production model costs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

HERE = Path(__file__).resolve()


class Body(BaseModel):
    """The bare endpoint's body: what a hand-rolled FastAPI server declares."""

    inputs: list[list[list[list[float]]]]


class TextBody(BaseModel):
    """The same for the text model: token ids per sentence."""

    inputs: list[list[float]]


# -- servers (run in child processes) ----------------------------------------------------


def _model(workdir: Path):  # type: ignore[no-untyped-def]
    import torch

    from mlwarden.core import Classifier
    from mlwarden.io.dataset import load_builtin
    from mlwarden.models import SmallCNN

    if (workdir / "minilm.json").exists():
        from _minilm import CLASS_NAMES, MiniLMClassifier

        from mlwarden.core import InputSpec

        module = MiniLMClassifier(num_classes=len(CLASS_NAMES))
        head = torch.load(workdir / "head.pt", weights_only=True)
        module.load_state_dict(head, strict=False)  # the encoder comes from the package
        spec = InputSpec.model_validate_json((workdir / "minilm.json").read_text())
        return Classifier(module.eval(), spec, name="minilm-reviews")
    data = load_builtin("digits")
    module = SmallCNN(width=int((workdir / "width.txt").read_text()))
    module.load_state_dict(torch.load(workdir / "cnn.pt", weights_only=True))
    return Classifier(module, data.spec(), name="digits-cnn")


def run_gateway(workdir: Path, port: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.config import GatewayConfig
    from mlwarden.gateway.server import serve

    cfg = GatewayConfig.from_dict({
        "auth": {"key_file": str(workdir / "keys.json")},
        "rate_limit": {"per_key": "1000000/minute", "per_key_burst": "20000/second",
                       "per_address": "1000000/minute", "per_address_burst": "20000/second"},
        "validation": {"validator": str(workdir / "validator.safetensors"), "ood": "flag"},
        "hardening": {"default_output": "rounded"},
        "monitoring": {"extraction": {"action": "log"}, "query_attack": {"action": "log"}},
        "audit_log": {"path": str(workdir / "audit.jsonl")},
        "batching": {"enabled": True, "max_batch_size": 64, "max_wait_ms": 2.0,
                     "worker_thread": os.environ.get("BENCH_WORKER_THREAD", "0") == "1"},
    })
    serve(create_app(_model(workdir), cfg), "127.0.0.1", port, log_level="warning")


def run_bare(workdir: Path, port: int, threads: int) -> None:
    import torch
    import uvicorn
    from fastapi import FastAPI

    torch.set_num_threads(threads)
    model = _model(workdir).module.eval()
    app = FastAPI()

    def answer(inputs: list[object]) -> dict[str, object]:
        x = torch.tensor(inputs, dtype=torch.float32)
        with torch.inference_mode():
            probs = torch.softmax(model(x), dim=1)
        return {"predictions": [{"label": int(p.argmax()), "probabilities": p.tolist()}
                                for p in probs]}

    if (workdir / "minilm.json").exists():
        @app.post("/v1/predict")
        async def predict_text(body: TextBody) -> dict[str, object]:
            return answer(body.inputs)
    else:
        @app.post("/v1/predict")
        async def predict(body: Body) -> dict[str, object]:
            return answer(body.inputs)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the benchmark -----------------------------------------------------------------------


def prepare_minilm(workdir: Path) -> tuple[object, object, object, bytes]:
    """Train the review classifier's head; save it and the spec; return (clf, x, y, body)."""
    import torch
    from _minilm import encode, minilm_subject

    clf, x, y = minilm_subject()
    head = {k: v for k, v in clf.module.state_dict().items() if not k.startswith("encoder.")}
    torch.save(head, workdir / "head.pt")
    (workdir / "minilm.json").write_text(clf.spec.model_dump_json())
    ids = encode(["The blender is great, it works perfectly every morning."], clf.spec.shape[0])
    return clf, x, y, json.dumps({"inputs": ids.tolist()}).encode()


def prepare(workdir: Path, width: int = 16, model: str = "digits") -> tuple[str, bytes]:
    """Train the model briefly, fit the validator, create a key; return (key, body)."""
    import torch

    from mlwarden.core import Classifier
    from mlwarden.core.training import fit
    from mlwarden.defenses.detection.ood import MahalanobisDetector, save_detector
    from mlwarden.gateway.auth import add_key
    from mlwarden.gateway.monitoring import calibrate_knn_threshold
    from mlwarden.io.dataset import load_builtin
    from mlwarden.models import SmallCNN

    if model == "minilm":
        clf, x_train, y_train, body = prepare_minilm(workdir)
    else:
        data = load_builtin("digits")
        train, test = data.split(0.75, seed=0)
        torch.manual_seed(0)
        module = SmallCNN(width=width)
        fit(module, train.x, train.y, epochs=5, lr=2e-3, batch_size=64, seed=0)
        torch.save(module.state_dict(), workdir / "cnn.pt")
        (workdir / "width.txt").write_text(str(width))
        clf = Classifier(module, data.spec(), name="digits-cnn")
        x_train, y_train = train.x, train.y
        body = json.dumps({"inputs": test.x[:1].tolist()}).encode()
    det = MahalanobisDetector().fit(clf, x_train, y_train)
    save_detector(det, workdir / "validator.safetensors",
                  {"query_attack_threshold": calibrate_knn_threshold(x_train)})
    key = add_key(workdir / "keys.json", "bench").api_key
    return key, body


def start(kind: str, workdir: Path, port: int, threads: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(HERE), "--serve", kind, "--workdir",
                             str(workdir), "--port", str(port), "--torch-threads", str(threads)])
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise SystemExit(f"{kind} server exited with {proc.returncode}") from None
            time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


def wrk(
    url: str, body: bytes, key: str | None, args: argparse.Namespace, workdir: Path
) -> dict[str, float]:
    lua = workdir / "post.lua"
    headers = 'wrk.headers["Content-Type"] = "application/json"\n'
    if key:
        headers += f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    lua.write_text(f'wrk.method = "POST"\nwrk.body = [==[{body.decode()}]==]\n{headers}')
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
           "--latency", "-s", str(lua), f"{url}/v1/predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)  # type: ignore[union-attr]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"),
            "non2xx": float(bad.group(1)) if bad else 0.0,
            "requests": float(total.group(1)) if total else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="alternate runs per server")
    ap.add_argument("--width", type=int, default=16,
                    help="SmallCNN width: 16 (~20k parameters) or larger for a heavier model")
    ap.add_argument("--model", choices=["digits", "minilm"], default="digits",
                    help="digits: SmallCNN (~0.1 ms a forward); minilm: pretrained MiniLM")
    ap.add_argument("--serve", choices=["gateway", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        (run_gateway if args.serve == "gateway" else run_bare)(args.workdir, args.port,
                                                               args.torch_threads)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    from mlwarden.gateway.server import free_port

    workdir = Path(tempfile.mkdtemp(prefix="mlwarden-bench-"))
    key, body = prepare(workdir, args.width, args.model)
    results: dict[str, list[dict[str, float]]] = {"bare": [], "gateway": []}
    for _ in range(args.rounds):
        for kind in ("bare", "gateway"):
            port = free_port()
            proc = start(kind, workdir, port, args.torch_threads)
            try:
                url = f"http://127.0.0.1:{port}"
                auth = key if kind == "gateway" else None
                warm = argparse.Namespace(threads=1, connections=4, duration=2)
                wrk(url, body, auth, warm, workdir)  # warm-up
                results[kind].append(wrk(url, body, auth, args, workdir))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    best = {k: max(v, key=lambda r: r["rps"]) for k, v in results.items()}
    subject = ("MiniLM-L6 review classifier (32 tokens)" if args.model == "minilm"
               else f"SmallCNN(width={args.width}) on digits")
    print(f"\n{subject}; wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration}s, torch threads {args.torch_threads}, {os.cpu_count()} CPUs, "
          f"best of {args.rounds}")
    print(f"{'server':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    names = {"bare": "bare FastAPI (1 fwd/request)", "gateway": "mlwarden gateway (all on)"}
    for k in ("bare", "gateway"):
        r = best[k]
        if r["non2xx"]:
            print(f"warning: {k} answered {r['non2xx']:.0f} non-2xx responses")
        print(f"{names[k]:<28}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}{r['non2xx']:>10.0f}")
    g, b = best["gateway"], best["bare"]
    print(f"{'ratio gateway/bare':<28}{g['rps'] / b['rps']:>10.2f}{g['p50'] / b['p50']:>10.2f}"
          f"{g['p99'] / b['p99']:>10.2f}")
    audit = workdir / "audit.jsonl"
    if audit.exists():
        from mlwarden.gateway.audit_log import verify_chain

        print(f"gateway audit log: {verify_chain(audit).entries} entries, chain intact: "
              f"{verify_chain(audit).ok}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
