"""mlwarden: secure machine-learning models from design to production.

The top-level package stays light on purpose: commands that need no tensors
(``scan``, ``risk``, ``--help``) must not pay for ``import torch``. The version is a
literal that pyproject.toml reads (``[tool.setuptools.dynamic]``), because asking
``importlib.metadata`` for it costs ~40 ms at every start of the CLI.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
