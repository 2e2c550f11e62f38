"""Audits on a Ray cluster (``mlwarden audit --ray auto|ADDRESS``, ``[audit] ray``).

`RayExecutor` is one engine behind `mlwarden.evaluation.shards.ShardExecutor`: each shard of
a sample-parallel check (the evasion ensemble) becomes one Ray task, and the results merge
in the driver into the one `Report` (docs/distributed.md). What Ray gives and we use as is:
the object store (the model's bytes and the evaluation data are put once and fetched once
per node), scheduling, and task retries when a worker process or node dies
(``max_retries``). What we add, because Ray cannot know it:

* the scan gate on every worker: a worker writes the shipped bytes to a private folder,
  checks their SHA-256 against the driver's, and loads them through `load_model`, which runs
  `mlwarden.io.gate.ensure_safe` (the scanner, and the signature policy the driver runs
  under) before anything is deserialised; the loaded model is cached per worker process;
* fail-closed merging: a retried shard is one result per task, and `merge_robustness`
  checks by sample index that every sample came back exactly once.

No ``import ray`` at module level: the extra ``distributed`` is optional and ``mlwarden
--help`` must stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mlwarden.core.errors import ConfigError, DependencyError, MlwardenError, first_line
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.evaluation.shards import Shard, ShardError

RAY_EXTRA = "distributed"
DEFAULT_MAX_RETRIES = 3
"""Times Ray re-runs a shard whose worker died (Ray's own default for tasks)."""
CONNECT_TIMEOUT_S = 5.0
CRASH_ONCE_ENV = "MLWARDEN_TEST_SHARD_CRASH_DIR"
"""Test-only fault injection: when set on the workers, the first attempt of the shard that
starts at sample S kills its worker process (``os._exit``) if the file ``crash-S`` exists in
that folder (and removes it, so the retry runs). It lets a test kill a worker mid-audit at a
known point; nothing else reads it."""

_ADDRESS = re.compile(r"^(ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")

R = TypeVar("R")


def check_address(value: str) -> str:
    """``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST:PORT``; anything else is refused."""
    text = str(value).strip()
    if text.lower() in ("auto", "local"):
        return text.lower()
    match = _ADDRESS.match(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(
            f"ray address {value!r} is not auto, local, HOST:PORT or ray://HOST:PORT "
            "(e.g. 10.0.0.5:6379, the address `ray start --head` prints)"
        )
    return text


def import_ray() -> Any:
    """The ``ray`` module, or a `DependencyError` naming the extra."""
    try:
        import ray
    except ImportError:
        raise DependencyError(
            "--ray needs the 'ray' package",
            hint=f"pip install 'mlwarden[{RAY_EXTRA}]'",
        ) from None
    return ray


def _reachable(address: str) -> None:
    """Refuse in seconds an address nobody listens on (Ray itself retries for a minute)."""
    match = _ADDRESS.match(address)
    assert match is not None
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}",
            hint="start one with `ray start --head` or pass --ray auto for a local cluster",
        ) from None


def _current_address(ray: Any) -> str | None:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # Ray client connections have no GCS address to compare
        return None


# -- the model, shipped -------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFiles:
    """A model file as bytes, with everything a worker needs to load it the way the driver did.

    Put into the object store once per audit; a worker fetches it only when it has not
    loaded the model yet.
    """

    name: str
    data: bytes
    sha256: str
    factory: str | None = None
    spec: Any = None
    device: str = "auto"
    allow: tuple[str, ...] = ()
    policy: Any = None
    """The driver's `SupplyChainSection` (signature policy), applied on the worker."""
    signature: bytes | None = None
    public_key: bytes | None = None

    @property
    def cache_key(self) -> str:
        """What a worker's loaded model is cached by: the bytes *and* how they were loaded, so
        the same file under another spec or a stricter signature policy is gated again."""
        how = f"{self.factory}|{self.spec!r}|{self.allow}|{self.policy!r}|{self.device}"
        return f"{self.sha256}:{hashlib.sha256(how.encode()).hexdigest()[:16]}"

    @classmethod
    def from_source(
        cls,
        source: str | Path,
        *,
        factory: str | None = None,
        spec: Any = None,
        device: str = "auto",
        allow: Sequence[str] = (),
    ) -> ModelFiles:
        """Read ``source`` (one model file) and the policy in force, for shipping."""
        from mlwarden.config import SupplyChainSection
        from mlwarden.supplychain.encryption import is_encrypted
        from mlwarden.supplychain.signing import active_policy, signature_path_for

        path = Path(source)
        if path.is_dir():
            raise ConfigError(
                f"'{path.name}' is a model folder; --ray ships one model file (.pt2, .onnx, "
                "weights with a factory): run this audit without --ray"
            )
        if is_encrypted(path):
            raise ConfigError(
                f"'{path.name}' is encrypted; --ray would have to send its key to every "
                "worker, so it is not sharded: run this audit without --ray"
            )
        if device.startswith("cuda"):
            raise ConfigError(
                f"--ray runs each shard on one CPU of a worker; device {device!r} is for "
                "an audit in this process (drop --device, or run without --ray)"
            )
        data = path.read_bytes()
        policy = active_policy() or SupplyChainSection()
        signature = public_key = None
        if policy.require_signature:
            sig = signature_path_for(path)
            if not sig.is_file():
                raise ConfigError(
                    f"require_signature is on and '{path.name}' is covered by no "
                    f"'{sig.name}' next to it; --ray ships a file with its own signature only"
                )
            signature = sig.read_bytes()
            if policy.public_key is not None:
                public_key = Path(policy.public_key).read_bytes()
        return cls(
            name=path.name,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            factory=factory,
            spec=spec,
            device="cpu",  # a task holds one CPU and no GPU
            allow=tuple(allow),
            policy=policy,
            signature=signature,
            public_key=public_key,
        )


def load_shipped(files: ModelFiles) -> Any:
    """Check, gate and load a shipped model on this machine; the gate runs before any load."""
    from mlwarden.io.models import load_model
    from mlwarden.supplychain.signing import using_policy

    if hashlib.sha256(files.data).hexdigest() != files.sha256:
        raise ShardError(
            f"the bytes of '{files.name}' changed on the way to this worker "
            "(SHA-256 differs from the driver's); nothing was loaded"
        )
    with tempfile.TemporaryDirectory(prefix="mlwarden-ray-") as folder:
        path = Path(folder) / Path(files.name).name
        path.write_bytes(files.data)
        policy = files.policy
        if files.signature is not None:
            path.with_name(path.name + ".sig").write_bytes(files.signature)
        if files.public_key is not None:
            key = Path(folder) / "public_key.pem"
            key.write_bytes(files.public_key)
            policy = policy.model_copy(update={"public_key": str(key)})
        with using_policy(policy):
            return load_model(
                path, factory=files.factory, spec=files.spec, device=files.device, allow=files.allow
            )


_WORKER_MODELS: dict[str, Any] = {}
"""Models loaded in this worker process, by `ModelFiles.cache_key`: a worker gates and loads
a model once."""


def _crash_once(shard: Shard) -> None:
    folder = os.environ.get(CRASH_ONCE_ENV)
    if not folder:
        return
    try:
        os.unlink(Path(folder) / f"crash-{shard.start}")
    except FileNotFoundError:
        return
    os._exit(1)  # the worker dies as a killed process would: no exception, no result


def run_shard(
    model_ref: list[Any], fn: Callable[..., R], shard: Shard, inputs: Mapping[str, Any]
) -> R:
    """The body of one Ray task: the model (gated and loaded once per worker), then ``fn``.

    ``model_ref`` is ``[object reference, cache key]``: a reference inside a list is not
    resolved by Ray, so a worker that has the model loaded already never fetches its bytes
    again (a bare reference argument would be fetched for every task).
    """
    import ray

    _crash_once(shard)
    key = model_ref[1]
    model = _WORKER_MODELS.get(key)
    if model is None:
        model = load_shipped(ray.get(model_ref[0]))
        _WORKER_MODELS[key] = model
    return fn(model, shard, **inputs)


def _to_store(value: Any) -> Any:
    """Tensors as NumPy arrays, which the object store shares without a copy."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


# -- the executor -------------------------------------------------------------------------------
@dataclass
class RayExecutor:
    """Shards as Ray tasks on the cluster at ``address`` (see `check_address`).

    ``auto`` joins the cluster of ``RAY_ADDRESS`` or of ``ray start`` on this machine, and
    starts a local one when there is none; ``local`` always starts a local one. A process in
    which ``ray.init`` already ran keeps its connection. The executor shuts down only what
    it started.
    """

    address: str = "auto"
    max_retries: int = DEFAULT_MAX_RETRIES
    cpus_per_task: float = 1.0
    engine: str = "ray"
    _ray: Any = field(default=None, repr=False)
    _started: bool = field(default=False, repr=False)
    _model: list[Any] | None = field(default=None, repr=False)
    _remote: Any = field(default=None, repr=False)

    def connect(self) -> RayExecutor:
        """Join (or start) the cluster; a clear error for an address nobody answers on."""
        address = check_address(self.address)
        ray = import_ray()
        self._ray = ray
        concrete = address.removeprefix("ray://") if address not in ("auto", "local") else None
        if concrete is not None:
            _reachable(concrete)
        if ray.is_initialized():
            current = _current_address(ray)
            if concrete is not None and not address.startswith("ray://") and current != concrete:
                raise ConfigError(
                    f"this process is already connected to the Ray cluster at {current}; "
                    f"it cannot join {address} as well"
                )
        else:
            kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if address == "local" or not address.startswith("ray://"):
                kwargs["include_dashboard"] = False
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    ray.init(address=None if address == "auto" else address, **kwargs)
            except Exception as exc:  # Ray raises bare Exception when its node times out
                with contextlib.suppress(Exception):
                    ray.shutdown()  # what did start of a failed local node
                if concrete is None:
                    raise ShardError(
                        f"could not start or join a Ray cluster on this machine: "
                        f"{first_line(exc)}",
                        hint="on a busy machine start one first with `ray start --head` "
                        "and pass its address",
                    ) from None
                raise ConfigError(
                    f"cannot join the Ray cluster at {address}: {first_line(exc)}",
                    hint="check the address `ray start --head` printed, and that this "
                    "machine runs the cluster's Python and ray versions",
                ) from None
            self._started = True
        self._remote = ray.remote(
            max_retries=self.max_retries, retry_exceptions=False, num_cpus=self.cpus_per_task
        )(run_shard)
        return self

    def bind(self, files: ModelFiles) -> None:
        """Put the model's bytes into the object store once; every shard refers to them."""
        if self._ray is None:
            self.connect()
        self._model = [self._ray.put(files), files.cache_key]

    def map_shards(
        self,
        fn: Callable[..., R],
        shards: Sequence[Shard],
        inputs: Mapping[str, Any],
        *,
        progress: ProgressCallback = null_progress,
        task: str = "shards",
    ) -> list[R]:
        if self._model is None:
            raise ConfigError("no model was bound to the Ray executor (bind a ModelFiles first)")
        ray = self._ray
        shared = ray.put({name: _to_store(value) for name, value in inputs.items()})
        refs = [self._remote.remote(self._model, fn, shard, shared) for shard in shards]
        by_ref = dict(zip(refs, shards, strict=True))
        results: dict[Any, R] = {}
        pending = list(refs)
        progress(task, 0, len(shards))
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[ref] = self._result(ref, by_ref[ref])
                progress(task, len(results), len(shards))
        except BaseException:
            for ref in pending:  # one shard failed: the audit stops, so does the rest
                ray.cancel(ref, force=True)
            raise
        return [results[ref] for ref in refs]

    def _result(self, ref: Any, shard: Shard) -> Any:
        """The shard's result, or the reason it has none as one `MlwardenError`."""
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MlwardenError):
                raise cause from None
            what = f"{type(cause).__name__}: {first_line(cause)}" if cause else first_line(exc)
            raise ShardError(
                f"shard {shard.start}:{shard.stop} failed on the cluster: {what}"
            ) from None
        except ray.exceptions.RayError as exc:
            raise ShardError(
                f"shard {shard.start}:{shard.stop} was lost ({type(exc).__name__}) after "
                f"{self.max_retries} retries: {first_line(exc)}; the audit stops rather than "
                "report on part of the data"
            ) from None

    def close(self) -> None:
        """Disconnect, and stop the local cluster if this executor started it."""
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._started = False
        self._model = None

    def __enter__(self) -> RayExecutor:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
