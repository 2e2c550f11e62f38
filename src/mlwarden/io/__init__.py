"""Loading models and data; every model file passes the safety gate first.

Public names are re-exported here and imported on first use, so that importing
``mlwarden.io`` (for example from the CLI) does not pay for torch.
"""

from __future__ import annotations

from mlwarden._lazy import lazy_exports

_LAZY = {
    "load_model": "mlwarden.io.models",
    "load_pt2": "mlwarden.io.models",
    "load_weights": "mlwarden.io.models",
    "build_from_factory": "mlwarden.io.models",
    "from_module": "mlwarden.io.models",
    "read_state_dict": "mlwarden.io.models",
    "BatchConstrainedClassifier": "mlwarden.io.models",
    "ExportedClassifier": "mlwarden.io.models",
    "MODEL_SUFFIXES": "mlwarden.io.models",
    "load_data": "mlwarden.io.data",
    "validate_dataset": "mlwarden.io.data",
    "Dataset": "mlwarden.io.dataset",
    "load_builtin": "mlwarden.io.dataset",
    "ensure_safe": "mlwarden.io.gate",
    "ensure_safe_folder": "mlwarden.io.gate",
    "load_hf_folder": "mlwarden.io.hf",
    "load_text_data": "mlwarden.io.text_data",
    "check_token_lengths": "mlwarden.io.text_data",
    "TextDataset": "mlwarden.io.text_data",
    "OnnxOracle": "mlwarden.io.onnx_oracle",
    "save_pt2": "mlwarden.io.export",
    "save_weights": "mlwarden.io.export",
    "export_onnx": "mlwarden.io.export",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = sorted(_LAZY)
