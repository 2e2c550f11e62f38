"""The median-absolute-deviation anomaly index of Neural Cleanse.

Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P 2019, Sec. IV-C: with trigger sizes ``s`` of every class,
``index_k = |s_k - median(s)| / (1.4826 * MAD(s))``; a class whose trigger is
*smaller* than the median with an index above 2 is an outlier (the 1.4826 constant
makes the MAD a consistent estimator of the standard deviation under normality, so
2 is about 95% confidence).
"""

from __future__ import annotations

import torch

CONSISTENCY = 1.4826


def anomaly_index(sizes: torch.Tensor) -> torch.Tensor:
    """Signed anomaly index per class: positive for sizes below the median.

    Only positive values can flag a class (a backdoor makes its target's trigger
    unusually *small*). A zero MAD (all sizes equal) is replaced by a tiny fraction
    of the median so identical sizes give index 0 rather than NaN.
    """
    sizes = sizes.double()
    median = sizes.quantile(0.5)
    mad = (sizes - median).abs().quantile(0.5) * CONSISTENCY
    floor = 1e-6 * max(float(median.abs()), 1e-12)
    return ((median - sizes) / max(float(mad), floor)).float()
