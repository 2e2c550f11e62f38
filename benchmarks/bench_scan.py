"""Side by side: mlwarden scan vs picklescan, modelscan, fickling and ModelAudit, as CLIs.

Every tool runs as its own command-line process, the way a CI job or a download hook
runs it, so start-up counts. The peers live in a separate virtual environment (they are
benchmark-only, never mlwarden dependencies):

    python3 -m venv /work/venv-peers
    /work/venv-peers/bin/pip install picklescan modelscan fickling modelaudit

Run (from the repository root, with mlwarden importable):

    python benchmarks/bench_scan.py [--peers /work/venv-peers/bin] [--size-mb 400] [--jobs 2]

Prints (1) whole-process wall time and peak memory (max RSS, from GNU time) on a 1 KB
pickle and on a big PyTorch checkpoint, and (2) the self-built corpus
(tests/supplychain/scan_corpus.py: v1 and the v2 advisory techniques) through every
tool: malicious files flagged, benign files passed, and the files each tool got wrong.

A tool "flags" a file when it exits non-zero for it and "passes" it when it exits 0;
"error" is a non-zero exit that the tool documents as its own failure (or a timeout).
ModelAudit phones home (PostHog) unless PROMPTFOO_DISABLE_TELEMETRY=1, which we set.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_ENV = {
    **os.environ,
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
}


@dataclass(frozen=True)
class Tool:
    """A scanner CLI: how to call it on one file, and which exit codes mean 'found issues'."""

    name: str
    argv: Callable[[Path], list[str]]
    flagged_codes: tuple[int, ...] = (1,)


def tools(peers: Path) -> list[Tool]:
    found = [
        Tool(
            "mlwarden",
            lambda p: [sys.executable, "-m", "mlwarden.cli.main", "scan", str(p)],
            (1, 3),
        )
    ]
    for name, argv, codes in (
        ("picklescan", lambda p: [str(peers / "picklescan"), "-p", str(p)], (1,)),
        ("modelscan", lambda p: [str(peers / "modelscan"), "-p", str(p)], (1,)),
        ("fickling", lambda p: [str(peers / "fickling"), "--check-safety", str(p)], (1,)),
        (
            "modelaudit",
            lambda p: [str(peers / "modelaudit"), "scan", "--no-cache", str(p)],
            (1,),
        ),
    ):
        if (peers / name).exists():
            found.append(Tool(name, argv, codes))
        else:
            print(f"[{name} not found in {peers}: pip install {name} into that venv]")
    return found


def run(tool: Tool, path: Path, timeout: float = 120.0) -> str:
    """The outcome of one process on ``path``: clean, flagged, error:<rc> or timeout.

    Runs in the file's folder: fickling writes ``safety_results.json`` into its cwd."""
    try:
        rc = subprocess.run(
            tool.argv(path),
            capture_output=True,
            env=_ENV,
            timeout=timeout,
            check=False,
            cwd=path.parent,
        ).returncode
    except subprocess.TimeoutExpired:
        return "timeout"
    return "clean" if rc == 0 else "flagged" if rc in tool.flagged_codes else f"error:{rc}"


def run_measured(tool: Tool, path: Path) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one process, as GNU time reports them (its child
    is forked from a small process, so the RSS is the tool's own)."""
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", *tool.argv(path)],
        capture_output=True,
        env=_ENV,
        check=False,
        cwd=path.parent,
        text=True,
    )
    secs, rss = proc.stderr.strip().splitlines()[-1].split()
    return float(secs), int(rss)


def _load_corpus() -> tuple[Callable[[Path], dict[str, str]], Callable[[Path], dict[str, str]]]:
    spec = importlib.util.spec_from_file_location(
        "scan_corpus", ROOT / "tests" / "supplychain" / "scan_corpus.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["scan_corpus"] = module
    spec.loader.exec_module(module)
    return module.build_corpus, module.build_corpus_v2


def _big_checkpoint(path: Path, size_mb: int) -> None:
    import torch

    torch.manual_seed(0)
    layers = max(1, size_mb // 16)
    sd = {f"layer{i}.weight": torch.randn(2048, 2048) for i in range(layers)}  # 16 MiB each
    torch.save(sd, path)
    os.sync()


def speed(all_tools: list[Tool], tmp: Path, size_mb: int, repeats: int) -> None:
    """Wall time and peak memory per tool; runs alternate between tools (round robin) so
    that a change in machine load hits every tool alike, and each row gives its ratio to
    mlwarden's default (text output, which computes no digest). ``mlwarden --format json``
    is a second row: JSON reports record each file's SHA-256, which costs a full read."""
    small = tmp / "small.pkl"
    small.write_bytes(pickle.dumps({"w": list(range(200)), "name": "x" * 200}, protocol=4))
    big = tmp / "big.pt"
    _big_checkpoint(big, size_mb)
    json_row = Tool(
        "mlwarden --format json",
        lambda p: [sys.executable, "-m", "mlwarden.cli.main", "scan", "--format", "json", str(p)],
        (1, 3),
    )
    rows = [all_tools[0], json_row, *all_tools[1:]]
    for path, label in ((small, f"{small.stat().st_size} B pickle"), (big, "PyTorch zip")):
        size = path.stat().st_size
        print(f"\n## Whole-process time and peak memory: {label} ({size / 1e6:.1f} MB)\n")
        print(
            f"median of {repeats} runs per tool, alternating between tools, after one warm-up "
            f"each; {os.cpu_count()} CPUs (shared)\n"
        )
        outcomes = {tool.name: run(tool, path, timeout=600) for tool in rows}
        samples: dict[str, list[tuple[float, int]]] = {tool.name: [] for tool in rows}
        for _ in range(repeats):
            for tool in rows:
                samples[tool.name].append(run_measured(tool, path))
        base = statistics.median(s for s, _ in samples[rows[0].name])
        print("| tool | seconds | x mlwarden | peak RSS (MiB) | outcome |")
        print("| --- | ---: | ---: | ---: | --- |")
        for tool in rows:
            secs = statistics.median(s for s, _ in samples[tool.name])
            rss = max(r for _, r in samples[tool.name]) / 1024
            ratio = secs / base if base > 0 else float("nan")
            print(f"| {tool.name} | {secs:.2f} | {ratio:.2f} | {rss:.0f} | {outcomes[tool.name]} |")
    big.unlink()


def detection(all_tools: list[Tool], tmp: Path, jobs: int) -> None:
    build_v1, build_v2 = _load_corpus()
    rows: list[tuple[str, Path, str]] = []
    v1 = tmp / "v1"
    for rel, verdict in build_v1(v1).items():
        if rel.startswith("review/"):
            continue  # TorchScript: needs review, neither benign nor malicious
        rows.append((f"v1/{rel}", v1 / rel, "benign" if verdict == "safe" else "malicious"))
    v2 = tmp / "v2"
    rows += [(f"v2/{rel}", v2 / rel, kind) for rel, kind in build_v2(v2).items()]
    outcomes: dict[tuple[str, str], str] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            (t.name, rel): pool.submit(run, t, path) for t in all_tools for rel, path, _ in rows
        }
        for key, fut in futures.items():
            outcomes[key] = fut.result()
    names = [t.name for t in all_tools]
    print("\n## Detection on the self-built corpus (v1 + v2)\n")
    print("| file | kind | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for rel, _path, kind in rows:
        print(f"| {rel} | {kind} | " + " | ".join(outcomes[(n, rel)] for n in names) + " |")
    mal = [r for r, _, k in rows if k == "malicious"]
    ben = [r for r, _, k in rows if k == "benign"]
    print("\n## Summary\n")
    print("| tool | malicious flagged | malicious stopped (any non-zero exit) | benign passed |")
    print("| --- | ---: | ---: | ---: |")
    for n in names:
        flagged = sum(outcomes[(n, r)] == "flagged" for r in mal)
        stopped = sum(outcomes[(n, r)] != "clean" for r in mal)
        passed = sum(outcomes[(n, r)] == "clean" for r in ben)
        print(f"| {n} | {flagged}/{len(mal)} | {stopped}/{len(mal)} | {passed}/{len(ben)} |")
    for n in names:
        missed = [r for r in mal if outcomes[(n, r)] == "clean"]
        refused = [r for r in ben if outcomes[(n, r)] != "clean"]
        print(f"\n- {n}: malicious passed as clean: {len(missed)}; benign refused: {len(refused)}")
        if n == "mlwarden" or len(missed) + len(refused) <= 12:
            for r in missed + refused:
                print(f"  - {r}")
    canaries = list(tmp.rglob("CANARY"))
    print(f"\ncanary created by any tool: {bool(canaries)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=Path, default=Path("/work/venv-peers/bin"))
    ap.add_argument("--size-mb", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-detection", action="store_true")
    args = ap.parse_args()
    all_tools = tools(args.peers)
    # pip compiles a package's modules when it installs it, so the peers start from
    # bytecode; compile mlwarden's too (an editable checkout, or PYTHONDONTWRITEBYTECODE,
    # would otherwise make every mlwarden run compile its sources first)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            speed(all_tools, Path(tmp), args.size_mb, args.repeats)
        if not args.skip_detection:
            detection(all_tools, Path(tmp), args.jobs)


if __name__ == "__main__":
    main()
