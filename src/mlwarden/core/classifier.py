"""`Classifier`: a user's `nn.Module` plus its `InputSpec`, with safe, batched helpers.

Why a wrapper: attacks, detectors and the gateway all need the same few things
(logits with gradients, batched inference without them, intermediate features,
normalisation inside the model) and must not trip over models that cannot
switch modes. A `torch.export` program raises ``NotImplementedError`` on
``.eval()``/``.train()``; the wrapper owns mode handling and never lets that
escape. It never changes the device or dtype of inputs silently: inputs are
moved to the model's device explicitly in `_prepare` and outputs come back there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

import torch
from torch import nn

from mlwarden.core.contract import ModelKind
from mlwarden.core.errors import DataError, InputError, ParameterError
from mlwarden.core.spec import InputSpec


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` over the first non-batch axis."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], ndim: int) -> None:
        super().__init__()
        view = (1, -1) + (1,) * (ndim - 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(view))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(view))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ModelModule(nn.Module):
    """Train/eval switching and device lookup shared by the tensor `Classifier` and the
    text models (`mlwarden.core.text`): they wrap graphs whose modules may refuse
    ``nn.Module.train``'s recursion (exported programs), so modes are set module by module."""

    def _set_mode(self, training: bool) -> None:
        """Set train/eval on every submodule that allows it (exported graphs do not)."""
        for mod in self.modules():
            if mod is self:
                continue
            mod.training = training
        self.training = training

    def train(self, mode: bool = True) -> Self:  # noqa: D401 - nn.Module API
        self._set_mode(mode)
        return self

    def eval(self) -> Self:
        self._set_mode(False)
        return self

    @contextmanager
    def evaluating(self) -> Iterator[Self]:
        """Temporarily switch to eval mode and restore the previous mode afterwards."""
        was = self.training
        if was:  # already in eval mode: skip walking every submodule (hot in query loops)
            self._set_mode(False)
        try:
            yield self
        finally:
            if was:
                self._set_mode(True)

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")


class Classifier(ModelModule):
    """Wraps a module that maps a batch to logits, together with its `InputSpec`.

    ``forward`` keeps gradients (attacks use it); `logits`, `predict` and
    `probabilities` run batched under `torch.inference_mode`. ``spec_assumptions`` lists
    what the loader had to assume about the spec (e.g. value bounds of a plain
    ``torch.export`` file); reports state it (`mlwarden.core.contract.note_assumptions`).
    """

    model_kind = ModelKind.CLASSIFIER

    def __init__(
        self,
        module: nn.Module,
        spec: InputSpec,
        *,
        device: torch.device | str | None = None,
        name: str = "model",
        spec_assumptions: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.module = module
        self.spec = spec
        self.name = name
        self.spec_assumptions = tuple(spec_assumptions)
        self.normalize = (
            Normalize(spec.mean, spec.std, len(spec.shape)) if spec.mean is not None else None
        )
        if device is not None:
            from mlwarden.core.device import resolve_device

            self.to(resolve_device(device))
        self._set_mode(False)


    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            x = self.normalize(x)
        return self.module(x)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise DataError(f"input must be a tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.spec.shape:
            raise DataError(
                f"input has shape {tuple(x.shape)}; the model expects (N, "
                + ", ".join(map(str, self.spec.shape))
                + ")"
            )
        return x.to(self.device, dtype=torch.float32)

    def _batches(self, x: torch.Tensor, batch_size: int | None) -> Iterator[torch.Tensor]:
        if batch_size is not None and batch_size <= 0:
            raise ParameterError(f"batch_size must be positive, got {batch_size}")
        step = batch_size or max(len(x), 1)
        for start in range(0, len(x), step):
            yield x[start : start + step]

    def logits(self, x: torch.Tensor, batch_size: int | None = 256) -> torch.Tensor:
        """Logits for ``x`` in eval mode without gradients, ``batch_size`` samples at a time."""
        x = self._prepare(x)
        if len(x) == 0:
            return torch.empty(0, self.num_classes, device=self.device)
        with self.evaluating(), torch.inference_mode():
            if batch_size is None or len(x) <= batch_size:  # one chunk: no copy through cat
                out = self(x)
            else:
                out = torch.cat([self(chunk) for chunk in self._batches(x, batch_size)])
        if out.dim() != 2 or out.shape[1] != self.num_classes:
            raise InputError(
                f"model returned shape {tuple(out.shape)}; expected (N, {self.num_classes}) logits"
            )
        return out

    def probabilities(self, x: torch.Tensor, batch_size: int | None = 256) -> torch.Tensor:
        return torch.softmax(self.logits(x, batch_size), dim=1)

    def predict(self, x: torch.Tensor, batch_size: int | None = 256) -> torch.Tensor:
        return self.logits(x, batch_size).argmax(dim=1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = 256) -> float:
        if len(x) == 0:
            raise DataError("cannot compute accuracy on an empty data set")
        pred = self.predict(x, batch_size)
        return float((pred == y.to(pred.device)).float().mean())

    # -- features ---------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Names accepted by `features` (submodules of the wrapped module)."""
        return [n for n, _ in self.module.named_modules() if n]

    def features(
        self, x: torch.Tensor, layer: str, batch_size: int | None = 256, *, flatten: bool = True
    ) -> torch.Tensor:
        """Output of submodule ``layer`` for ``x``, captured with a forward hook."""
        try:
            target = self.module.get_submodule(layer)
        except AttributeError as exc:
            known = ", ".join(self.layer_names()[:20])
            raise InputError(f"layer '{layer}' does not exist; known layers: {known}") from exc
        captured: list[torch.Tensor] = []

        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            captured.append(out.detach())

        handle = target.register_forward_hook(hook)
        try:
            x = self._prepare(x)
            with self.evaluating(), torch.inference_mode():
                for chunk in self._batches(x, batch_size):
                    before = len(captured)
                    self(chunk)
                    if len(captured) == before:
                        raise InputError(
                            f"layer '{layer}' is not called as a module by this model "
                            "(an exported graph inlines its calls; load it unflattened)"
                        )
                    if len(captured) > before + 1:  # called several times: keep the last
                        del captured[before:-1]
        finally:
            handle.remove()
        out = torch.cat(captured) if captured else torch.empty(0)
        return out.flatten(1) if flatten and out.dim() > 1 else out

    def penultimate_layer(self) -> str:
        """Name of the module whose output feeds the head (the feature layer).

        One lookup for plain modules and exported graphs: `mlwarden.core.layers.feature_layer`.
        """
        from mlwarden.core.layers import feature_layer

        return feature_layer(self.module)
