"""Find a classifier's layers by role: linear and conv layers, the head, the feature layer.

One lookup for plain modules and for unflattened ``torch.export`` programs, whose
submodules are graph interpreters (``InterpreterModule``), not ``nn.Linear`` /
``nn.Conv2d`` / ``nn.Dropout``. A layer is recognised by its own weight's shape
together with its class (plain modules) or the aten ops its graph calls (programs).
An unflattened program also keeps placeholder modules for submodules it never calls
(an ``nn.Identity``, an unused auxiliary head): they are skipped, since a forward
hook on them never fires. Plain modules are read in registration order without
running them, so a registered but unused module still counts there.

The feature layer is the module whose output feeds the head (the last linear layer):
the layer registered just before it, skipping layers that change nothing (dropout,
identity), then climbing to the outermost block that ends with it.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from mlwarden.core.errors import InputError

_LINEAR_OPS = frozenset({"aten.linear.default", "aten.addmm.default", "aten.mm.default"})
_CONV_OPS = frozenset(
    {
        "aten.conv1d.default",
        "aten.conv2d.default",
        "aten.conv3d.default",
        "aten.convolution.default",
        "aten.conv_transpose1d.default",
        "aten.conv_transpose2d.input",
        "aten.conv_transpose3d.input",
    }
)
_IDENTITY_OPS = frozenset({"aten.dropout.default", "aten.clone.default", "aten.alias.default"})


def _program_classes() -> tuple[type, type]:
    """(root, called-submodule) classes of ``torch.export.unflatten`` output."""
    unflatten = importlib.import_module("torch.export.unflatten")  # the name is also a function
    return unflatten.UnflattenedModule, (
        unflatten.InterpreterModule,
        unflatten.InterpreterModuleDispatcher,
    )


def graph_ops(module: nn.Module) -> list[str] | None:
    """The aten ops a graph submodule calls directly; ``None`` for ordinary modules."""
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return None
    return [str(node.target) for node in graph.nodes if node.op == "call_function"]


def own_weight(module: nn.Module) -> torch.Tensor | None:
    """The module's own ``weight`` parameter (not a child's), also under torch pruning."""
    weight = module._parameters.get("weight")
    if weight is None:
        weight = getattr(module, "weight_orig", None)
    return weight if isinstance(weight, torch.Tensor) else None


def called_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Named submodules (root excluded) in registration order, without a program's
    placeholders for submodules it never calls."""
    root_cls, called_cls = _program_classes()
    program = isinstance(module, root_cls)
    return {
        name: mod
        for name, mod in module.named_modules()
        if name and (not program or isinstance(mod, called_cls))
    }


def is_linear(module: nn.Module) -> bool:
    """A layer with its own 2-D weight that is an ``nn.Linear`` or whose graph multiplies by it."""
    weight = own_weight(module)
    if weight is None or weight.dim() != 2:
        return False
    ops = graph_ops(module)
    return isinstance(module, nn.Linear) or (ops is not None and not _LINEAR_OPS.isdisjoint(ops))


def is_conv(module: nn.Module) -> bool:
    """A layer with its own weight of 3+ dimensions that is a convolution (class or graph ops)."""
    weight = own_weight(module)
    if weight is None or weight.dim() < 3:
        return False
    ops = graph_ops(module)
    return isinstance(module, nn.modules.conv._ConvNd) or (
        ops is not None and not _CONV_OPS.isdisjoint(ops)
    )


def is_transparent(module: nn.Module) -> bool:
    """A layer that passes its input through at inference (dropout, identity)."""
    if isinstance(module, nn.Dropout | nn.Identity):
        return True
    ops = graph_ops(module)
    leaf = not any(True for _ in module.children())
    return leaf and ops is not None and all(op in _IDENTITY_OPS for op in ops)


def linear_layers(module: nn.Module) -> list[str]:
    """Names of the linear layers of ``module``, in registration order."""
    return [name for name, mod in called_layers(module).items() if is_linear(mod)]


def conv_layers(module: nn.Module) -> list[str]:
    """Names of the convolutions of ``module``, in registration order."""
    return [name for name, mod in called_layers(module).items() if is_conv(mod)]


def head_layer(module: nn.Module) -> str:
    """Name of the classification head: the last linear layer of ``module``."""
    linear = linear_layers(module)
    if not linear:
        raise InputError("cannot find the head: the model has no linear layer (with a 2-D weight)")
    return linear[-1]


def feature_layer(module: nn.Module) -> str:
    """Name of the module whose output feeds the head (the penultimate, feature layer)."""
    layers = called_layers(module)
    names = list(layers)
    head = head_layer(module)
    for cand in reversed(names[: names.index(head)]):
        if head.startswith(cand + ".") or is_transparent(layers[cand]):
            continue
        while "." in cand:  # climb while cand is its parent's last (non-transparent) child
            parent = cand.rsplit(".", 1)[0]
            kept = [
                f"{parent}.{child}"
                for child, mod in layers[parent].named_children()
                if f"{parent}.{child}" in layers and not is_transparent(mod)
            ]
            if not kept or kept[-1] != cand:
                break
            cand = parent
        return cand
    raise InputError(f"no layer comes before the head '{head}'; name a feature layer explicitly")


__all__ = [
    "called_layers",
    "conv_layers",
    "feature_layer",
    "graph_ops",
    "head_layer",
    "is_conv",
    "is_linear",
    "is_transparent",
    "linear_layers",
    "own_weight",
]
