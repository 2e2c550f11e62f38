"""Choose the backdoor detectors' cuts on a zoo of clean models (issue #21).

Trains (or loads from /tmp/detect-zoo) the clean CALIBRATION zoo of `_detect_zoo`,
scans each model with the defaults of ``mlwarden backdoor detect`` and prints, per
model, Neural Cleanse's and the universal perturbation's size ratio (median / min
trigger size) and their product at one class; then the largest clean value of each and
the cut ``largest x (1 + MARGIN)`` rounded up to two decimals, which is what
`mlwarden.defenses.detection.calibration.CUTS` records. Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=src:benchmarks python benchmarks/backdoor_calibrate.py
"""

from __future__ import annotations

import math

from _detect_zoo import CALIBRATION, scan, scans_of

from mlwarden.defenses.detection.calibration import CUTS, JOINT, MARGIN, size_ratios


def statistics(record: dict) -> dict[str, float]:
    """Each method's size ratio and the largest product of both ratios at one class."""
    scans = scans_of(record)
    ratios = {s.method: size_ratios(s.sizes) for s in scans}
    out = {m: float(r.max()) for m, r in ratios.items()}
    out[JOINT] = float((ratios["neural_cleanse"] * ratios["universal_perturbation"]).max())
    out["converged"] = all(s.converged for s in scans)
    return out


def main() -> None:
    names = ["neural_cleanse", "universal_perturbation", JOINT]
    print(
        "| model | accuracy | NC ratio | UAP ratio | joint | converged | scan s |\n"
        "|---|---|---|---|---|---|---|"
    )
    largest = dict.fromkeys(names, 0.0)
    for spec in CALIBRATION:
        record = scan(spec)
        stats = statistics(record)
        for n in names:
            largest[n] = max(largest[n], stats[n])
        print(
            f"| {spec.name} | {record['accuracy']:.3f} | {stats['neural_cleanse']:.2f} "
            f"| {stats['universal_perturbation']:.2f} | {stats[JOINT]:.2f} "
            f"| {'yes' if stats['converged'] else 'NO'} | {record['seconds']:.1f} |"
        )
    print(f"\n{len(CALIBRATION)} clean models; cut = largest x {1 + MARGIN:g}, rounded up")
    for n in names:
        cut = math.ceil(largest[n] * (1 + MARGIN) * 100) / 100
        print(
            f"{n:24} largest clean {largest[n]:.3f}  cut {cut:.2f}  "
            f"(recorded in calibration.py: {CUTS[n].cut:g})"
        )


if __name__ == "__main__":
    main()
