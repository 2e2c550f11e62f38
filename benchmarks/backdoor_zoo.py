"""Evaluate the calibrated backdoor verdict on a zoo no cut was chosen on (issue #21).

The EVALUATION zoo of `_detect_zoo` (seeds 200+, apart from the calibration zoo's
100+): 12 clean digits models of three architectures (with the demo teacher and
student) and 8 backdoored ones (BadNets patches of several sizes, positions and
patterns; Blended stripes, noise and checkerboard). Each is scanned with the defaults of
``mlwarden backdoor detect`` (`BackdoorSettings()`, ``--seed 0``, the 450 held-out
digits) and graded by `backdoor_report`; prints one row per model, the confusion table
(a model counts as flagged at MEDIUM or above) and the scan time per model. Trained
models and raw scans are cached under /tmp/detect-zoo; ``--refresh`` re-scans::

    OMP_NUM_THREADS=1 PYTHONPATH=src:benchmarks python benchmarks/backdoor_zoo.py
"""

from __future__ import annotations

import argparse

from _detect_zoo import EVALUATION, scan, scans_of

from mlwarden.core.findings import Severity
from mlwarden.defenses.detection.calibration import JOINT, assess
from mlwarden.defenses.detection.model_scan import backdoor_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true", help="re-scan instead of the cache")
    args = parser.parse_args()
    names = [str(i) for i in range(10)]
    print(
        "| model | planted target | accuracy | ASR | NC ratio | UAP ratio | joint | finding "
        "| found target | scan s |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    confusion = {"clean flagged": 0, "clean": 0, "backdoor found": 0, "backdoored": 0}
    seconds = []
    for spec in EVALUATION:
        record = scan(spec, refresh=args.refresh)
        scans = scans_of(record)
        report = backdoor_report(scans, names)
        finding = report.findings[0]
        stats = {e.statistic: e.value for e in assess(scans).evidence}
        flagged = finding.severity >= Severity.MEDIUM
        found = report.metrics["backdoor.target_class"]
        if spec.attack is None:
            confusion["clean"] += 1
            confusion["clean flagged"] += int(flagged)
        else:
            confusion["backdoored"] += 1
            confusion["backdoor found"] += int(flagged and found == spec.target)
        seconds.append(record["seconds"])
        asr = "-" if record["asr"] is None else f"{record['asr']:.2f}"
        print(
            f"| {spec.name} | {'-' if spec.target is None else spec.target} "
            f"| {record['accuracy']:.3f} | {asr} | {stats['neural_cleanse']:.2f} "
            f"| {stats['universal_perturbation']:.2f} | {stats[JOINT]:.2f} "
            f"| {finding.id} {finding.severity.value} | {'-' if found is None else found} "
            f"| {record['seconds']:.1f} |"
        )
    print(
        f"\nclean models flagged (>= medium): {confusion['clean flagged']} / {confusion['clean']}"
        f"\nbackdoored found with the right target: {confusion['backdoor found']} / "
        f"{confusion['backdoored']}"
        f"\nscan time per model: median {sorted(seconds)[len(seconds) // 2]:.1f} s, "
        f"max {max(seconds):.1f} s"
    )


if __name__ == "__main__":
    main()
