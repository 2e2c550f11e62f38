"""Rebuild a trainable copy of a classifier's module (also for teachers loaded from ``.pt2``)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import ModelLoadError


def trainable_copy(classifier: Any, name: str | None = None) -> Classifier:
    """A deep copy of ``classifier`` whose parameters all require gradients.

    A ``.pt2`` teacher loaded through `mlwarden.io.models.load_model` is an unflattened
    ``torch.export`` module: its parameters are ordinary `nn.Parameter`s and gradients
    flow, but its ``.train()``/``.eval()`` raise. The copy is wrapped in a `Classifier`,
    which owns mode handling, so training it never toggles modes on the graph itself.
    """
    if not isinstance(classifier, Classifier):
        raise ModelLoadError(
            "fine-tuning needs a white-box model (a Classifier); a black-box oracle such as "
            "an ONNX model cannot be trained (export the teacher as .pt2 or weights)"
        )
    try:
        module: nn.Module = copy.deepcopy(classifier.module)
    except Exception as exc:  # noqa: BLE001 - any failure means the graph cannot be copied
        raise ModelLoadError(f"cannot copy the teacher model for training: {exc}") from exc
    params = list(module.parameters())
    if not params:
        raise ModelLoadError("the teacher model has no parameters to fine-tune")
    for p in params:
        p.requires_grad_(True)
    return Classifier(module, classifier.spec, name=name or f"{classifier.name}-student").to(
        classifier.device
    )


def _own_weight(module: nn.Module) -> torch.Tensor | None:
    """The module's own ``weight`` parameter (not a child's), if any."""
    weight = module._parameters.get("weight")
    if weight is None:
        weight = getattr(module, "weight_orig", None)  # already under torch pruning
    return weight


# Layers are recognised by the shape of their own weight, not by class: the submodules of
# an unflattened torch.export program are InterpreterModules, not nn.Linear / nn.Conv2d.
def head_layer(module: nn.Module) -> str:
    """Name of the last linear layer of ``module`` (own 2-D weight): the classification head."""
    names = [n for n, m in module.named_modules() if n and _dim(m) == 2]
    if not names:
        raise ModelLoadError("the model has no linear head (a layer with a 2-D weight) to train")
    return names[-1]


def conv_layers(module: nn.Module) -> list[str]:
    """Names of the convolutions of ``module`` (own weight with 3 or more dimensions)."""
    return [n for n, m in module.named_modules() if n and _dim(m) >= 3]


def _dim(module: nn.Module) -> int:
    weight = _own_weight(module)
    return -1 if weight is None else weight.dim()


def feature_layer(classifier: Any) -> str:
    """The penultimate (feature) layer: `Classifier.penultimate_layer`, or for graphs without
    nn.Linear (exported programs) the top-level block registered before the head's block."""
    from mlwarden.core.errors import InputError

    try:
        return str(classifier.penultimate_layer())
    except InputError:
        pass
    head_top = head_layer(classifier.module).split(".")[0]
    children = [n for n, _ in classifier.module.named_children()]
    pos = children.index(head_top) if head_top in children else -1
    if pos <= 0:
        raise ModelLoadError(
            "cannot find the feature layer before the head; name a layer explicitly"
        )
    return children[pos - 1]
