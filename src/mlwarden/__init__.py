"""mlwarden: secure machine-learning models from design to production.

The top-level package stays light on purpose: commands that need no tensors
(``scan``, ``risk``, ``--help``) must not pay for ``import torch``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlwarden")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
