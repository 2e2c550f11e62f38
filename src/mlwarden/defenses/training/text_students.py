"""Text students from a pretrained teacher: the strategies of `finetune` for transformers.

The teacher is a `TextEncoder` (a sentence-transformers folder such as all-MiniLM-L6-v2)
or a `TextClassifier`. The student is always a Hugging Face sequence classifier built by
``AutoModelForSequenceClassification`` from the teacher's config and weights (for BERT
encoders: ``BertForSequenceClassification``), so a saved student means the same thing in
transformers as in mlwarden. Its pooling is therefore the architecture's own (BERT: the
``[CLS]`` state through the pretrained ``pooler`` dense + tanh), not the teacher's
declared mean pooling: transformers has no mean-pooling sequence classifier, and a student
whose pooling only mlwarden knew would give other logits in every other tool.

Strategies (the names of the tensor path):

- ``linear_probe``: everything frozen; the head (the last linear layer) is fitted as
  L2-regularised logistic regression (L-BFGS) on the frozen pooled embeddings, computed
  once. ``epochs``/``lr`` do not apply: a probe is a convex fit, run to convergence.
- ``last_k``: the last ``k`` transformer layers, the pooler and the head train; the
  embeddings and earlier layers stay frozen.
- ``full``: every parameter trains.
- ``full_reinit``: every parameter, from a re-initialised head, plus the tensor path's
  divergence term: ``divergence_weight * mean cos(student pooled, teacher pooled)`` on each
  batch (the teacher's pooled embedding being that of the same architecture with the
  teacher's weights), which rewards features unlike the teacher's.
- ``fineprune``: the up-projection neurons of the last layer's feed-forward block that clean
  data leaves most dormant (mean ReLU'd pre-activation over real tokens) are zeroed, a
  ``prune_ratio`` share of them, and stay zero (`torch.nn.utils.prune`) while the model is
  fine-tuned as ``full`` (Liu, Dolan-Gavitt and Garg, RAID 2018, whose last convolution
  this block stands for). GELU(0) = 0, so a pruned neuron contributes nothing.
- ``trigger_prune`` (text only, needs a known trigger): the feed-forward neurons of every
  layer that the trigger activates most on the training texts are pruned and stay pruned,
  and the trigger's token embeddings are reset to the mean word embedding, while the model
  is fine-tuned as ``full`` (`mlwarden.defenses.training.trigger_neurons`).
- ``dp``: DP-SGD through Opacus on the ``last_k`` parameters (head re-initialised); the
  embeddings and earlier layers stay frozen, as in Opacus's own BERT tutorial, since
  per-sample gradients of every layer cost a multiple of the model's memory per example.
- ``freelb``: every parameter, adversarially in embedding space (`freelb`, Zhu et al. 2020).

Every strategy trains a copy; the teacher is never modified. The fresh head trains at
`HEAD_LR_SCALE` times ``lr``: at an encoder's learning rate a random head barely moves in
the few hundred steps a small data set gives.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mlwarden.core.errors import DataError, DependencyError, ParameterError, require
from mlwarden.core.layers import head_layer
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.text import TextClassifier, TextEncoder, TextSpec, as_text_model
from mlwarden.defenses.training.finetune import STRATEGIES

TEXT_BATCH = 16
"""Texts per training step (the usual BERT fine-tuning batch)."""
HEAD_LR_SCALE = 10.0
"""The fresh head's learning rate as a multiple of ``lr``."""
PROBE_L2 = 1e-3
"""L2 weight of the linear probe's logistic regression (on the mean cross-entropy)."""
PROBE_ITERATIONS = 200
"""L-BFGS iterations of the linear probe (it converges well before on 384 features)."""
FFN_PRUNE_RATIO = 0.5
"""Share of the last layer's feed-forward neurons that ``fineprune`` zeroes."""
ACTIVITY_TEXTS = 256
"""Training texts whose activations rank the neurons for ``fineprune``."""
DIVERGENCE_WEIGHT = 0.1
"""Weight of ``full_reinit``'s cosine term (the tensor path's default)."""
DP_MAX_GRAD_NORM = 1.0
"""Per-sample gradient clipping norm of ``dp``."""
TEXT_ONLY_STRATEGIES: tuple[str, ...] = ("freelb", "trigger_prune")
"""Strategies of text students only: FreeLB (`mlwarden.defenses.training.freelb`) perturbs
token embeddings, ``trigger_prune`` (`...trigger_neurons`) needs a text trigger."""
TEXT_STRATEGIES: tuple[str, ...] = (*STRATEGIES, *TEXT_ONLY_STRATEGIES)
"""Every strategy of a text student: the shared ones and the text-only ones."""


@dataclass
class TextStudentResult:
    """The trained student, what trained, its losses and its training time in seconds."""

    classifier: TextClassifier
    strategy: str
    trainable_parameters: int
    trained: list[str]
    seconds: float
    history: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def transformer_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The name and list of the transformer layers: the longest `nn.ModuleList` of the base
    model (BERT ``encoder.layer``, DistilBERT ``transformer.layer``)."""
    base = getattr(model, "base_model", model)
    lists = [(n, m) for n, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ParameterError(f"cannot find the transformer layers of {type(model).__name__}")
    return max(lists, key=lambda item: len(item[1]))


def _prefix(model: nn.Module) -> str:
    """The base model's attribute name in the sequence classifier (``bert`` for BERT)."""
    return str(getattr(model, "base_model_prefix", ""))


def build_student(
    teacher: TextEncoder | TextClassifier, class_names: Sequence[str], seed: int
) -> TextClassifier:
    """A sequence classifier with the teacher's weights: an encoder's weights under a fresh
    (seeded) head, or a copy of a classifier teacher."""
    names = tuple(class_names)
    if isinstance(teacher, TextClassifier):
        if teacher.spec.class_names != names:
            raise DataError(
                f"the data's classes ({', '.join(names)}) are not the teacher's "
                f"({', '.join(teacher.spec.class_names or ())})"
            )
        model = copy.deepcopy(teacher.model)
    else:
        transformers: Any = require("transformers", "text")
        config = copy.deepcopy(teacher.model.config)
        config.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        config.architectures = None
        torch.manual_seed(seed)
        model = transformers.AutoModelForSequenceClassification.from_config(config)
        model.base_model.load_state_dict(teacher.model.state_dict())
    spec = TextSpec(
        max_tokens=teacher.spec.max_tokens,
        class_names=names,
        tokenizer=teacher.spec.tokenizer,
        tokenizer_sha256=teacher.spec.tokenizer_sha256,
        vocab_size=teacher.spec.vocab_size,
        embedding_dim=teacher.spec.embedding_dim,
    )
    return TextClassifier(
        model, teacher.tokenizer, spec, name=f"{teacher.name}-student", device=teacher.device
    )


def _reinit_head(model: nn.Module, seed: int) -> str:
    name = head_layer(model)
    gen = torch.Generator().manual_seed(seed)
    head = model.get_submodule(name)
    std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * std)
        if head.bias is not None:
            head.bias.zero_()
    return name


def _train_only(model: nn.Module, prefixes: Sequence[str]) -> int:
    """Freeze every parameter except those under ``prefixes``; the count left trainable."""
    count = 0
    for name, p in model.named_parameters():
        keep = any(name == pre or name.startswith(pre + ".") for pre in prefixes)
        p.requires_grad_(keep)
        count += p.numel() if keep else 0
    return count


def _top_prefixes(model: nn.Module, k: int) -> list[str]:
    """Parameter prefixes of the last ``k`` layers and everything after them (pooler, head)."""
    layers_name, layers = transformer_layers(model)
    if not 1 <= k <= len(layers):
        raise ParameterError(f"k must be in [1, {len(layers)}] (transformer layers), got {k}")
    base = _prefix(model)
    full = f"{base}.{layers_name}" if base else layers_name
    frozen_roots = {f"{full}.{i}" for i in range(len(layers) - k)}
    names = [n for n, _ in model.named_parameters()]
    embeddings = {n for n in names if ".embeddings." in f".{n}"}
    keep = []
    for n in names:
        if n in embeddings or any(n.startswith(r + ".") for r in frozen_roots):
            continue
        keep.append(n)
    return keep


def _module_roots(model: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` (parameters) summarised as the transformer layers and top-level modules that
    hold them, for the report: ``bert.encoder.layer.5``, ``bert.pooler``, ``classifier``."""
    layers_name, _ = transformer_layers(model)
    base = _prefix(model)
    full = f"{base}.{layers_name}" if base else layers_name
    roots: list[str] = []
    for n in names:
        if n.startswith(full + "."):
            root = f"{full}.{n[len(full) + 1 :].split('.', 1)[0]}"
        elif base and n.startswith(base + "."):
            root = ".".join(n.split(".", 2)[:2])
        else:
            root = n.split(".", 1)[0]
        if root not in roots:
            roots.append(root)
    return roots


def student_optimiser(student: TextClassifier, lr: float) -> torch.optim.Optimizer:
    """AdamW (weight decay 0.01) on the student's trainable parameters: the trunk at ``lr``,
    the fresh head at `HEAD_LR_SCALE` x ``lr``; every fine-tuning loop of a text student."""
    head = head_layer(student.model)
    params = [(n, p) for n, p in student.model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not n.startswith(head + ".")], "lr": lr},
        {"params": [p for n, p in params if n.startswith(head + ".")], "lr": lr * HEAD_LR_SCALE},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.01)


def batches(n: int, batch: int, gen: torch.Generator) -> list[list[int]]:
    """Indices ``0..n-1`` in one seeded random order, cut into batches of ``batch``."""
    order = torch.randperm(n, generator=gen).tolist()
    return [order[i : i + batch] for i in range(0, n, batch)]


ExtraLoss = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def _fit(
    student: TextClassifier,
    texts: Sequence[str],
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    seed: int,
    progress: ProgressCallback,
    task: str,
    extra: ExtraLoss | None = None,
) -> list[float]:
    """AdamW on the trainable parameters, the head at `HEAD_LR_SCALE` x ``lr``."""
    optimiser = student_optimiser(student, lr)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    history: list[float] = []
    steps = epochs * -(-len(texts) // TEXT_BATCH)
    done = 0
    student.train()
    try:
        for _ in range(epochs):
            total = 0.0
            for idx in batches(len(texts), TEXT_BATCH, gen):
                batch = student.encode([texts[i] for i in idx])
                logits = student(**batch)
                loss = nn.functional.cross_entropy(logits, labels[idx].to(logits.device))
                if extra is not None:
                    loss = loss + extra(batch)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
                done += 1
                progress(task, done, steps)
            history.append(total / len(texts))
    finally:
        student.eval()
    return history


def pooled_inputs(student: TextClassifier, texts: Sequence[str]) -> torch.Tensor:
    """What the head sees for ``texts`` (the input of its last linear layer), in eval mode."""
    layer = student.model.get_submodule(head_layer(student.model))
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, i, _o: seen.append(i[0].detach()))
    try:
        student.logits(list(texts))
    finally:
        handle.remove()
    # `logits` batches by length; put the rows back in the order of ``texts``
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    stacked = torch.cat(seen)
    out = torch.empty_like(stacked)
    out[torch.tensor(order, device=stacked.device)] = stacked
    return out


def _linear_probe(
    student: TextClassifier, texts: Sequence[str], labels: torch.Tensor, progress: ProgressCallback
) -> list[float]:
    """The head as logistic regression on frozen pooled inputs, by L-BFGS."""
    feats = pooled_inputs(student, texts)
    head = student.model.get_submodule(head_layer(student.model))
    y = labels.to(feats.device)
    optimiser = torch.optim.LBFGS(
        list(head.parameters()), max_iter=PROBE_ITERATIONS, line_search_fn="strong_wolfe"
    )
    history: list[float] = []

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(head(feats), y) + PROBE_L2 * head.weight.pow(2).sum()
        loss.backward()
        history.append(float(loss.detach()))
        progress("student (linear_probe)", min(len(history), PROBE_ITERATIONS), PROBE_ITERATIONS)
        return loss

    optimiser.step(closure)
    return history[-1:]


def ffn_up_projection(layer: nn.Module) -> str:
    """The feed-forward up-projection of a transformer layer: its first linear layer that
    widens (BERT ``intermediate.dense``, DistilBERT ``ffn.lin1``)."""
    for name, mod in layer.named_modules():
        if isinstance(mod, nn.Linear) and mod.out_features > mod.in_features:
            return name
    raise ParameterError("the last transformer layer has no widening feed-forward layer to prune")


def _ffn_activity(student: TextClassifier, up: nn.Linear, texts: Sequence[str]) -> torch.Tensor:
    """Mean ReLU'd pre-activation of each neuron of ``up`` over the real tokens of ``texts``."""
    total = torch.zeros(up.out_features)
    tokens = 0
    state: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        mask = state["mask"].unsqueeze(-1).to(out.dtype)
        total.add_((out.clamp_min(0) * mask).sum(dim=(0, 1)).cpu())

    handle = up.register_forward_hook(hook)
    try:
        with student.evaluating(), torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = student.encode(list(texts[start : start + 32]))
                state["mask"] = batch["attention_mask"]
                tokens += int(batch["attention_mask"].sum())
                student(**batch)
    finally:
        handle.remove()
    return total / max(tokens, 1)


def _divergence_term(student: TextClassifier, weight: float) -> tuple[ExtraLoss, Any]:
    """``weight * mean cos`` of the student's pooled inputs to the head and those of a frozen
    copy with the teacher's weights (taken before training)."""
    twin = copy.deepcopy(student.model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    name = head_layer(student.model)
    store: dict[str, torch.Tensor] = {}
    handle = student.model.get_submodule(name).register_forward_hook(
        lambda _m, i, _o: store.__setitem__("s", i[0])
    )
    twin_head = twin.get_submodule(name)

    def extra(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seen: dict[str, torch.Tensor] = {}
        h = twin_head.register_forward_hook(lambda _m, i, _o: seen.__setitem__("t", i[0]))
        try:
            with torch.no_grad():
                twin(**batch)
        finally:
            h.remove()
        return weight * nn.functional.cosine_similarity(store["s"], seen["t"], dim=1).mean()

    return extra, handle


def _prune_ffn(student: TextClassifier, texts: Sequence[str], ratio: float) -> dict[str, Any]:
    from torch.nn.utils import prune

    if not 0.0 < ratio < 1.0:
        raise ParameterError(f"prune_ratio must be in (0, 1), got {ratio}")
    layers_name, layers = transformer_layers(student.model)
    up_name = ffn_up_projection(layers[-1])
    up = layers[-1].get_submodule(up_name)
    assert isinstance(up, nn.Linear)
    activity = _ffn_activity(student, up, texts[:ACTIVITY_TEXTS])
    pruned = torch.argsort(activity)[: int(ratio * up.out_features)]
    keep = torch.ones(up.out_features)
    keep[pruned] = 0.0
    prune.custom_from_mask(up, "weight", keep.view(-1, 1).expand_as(up.weight).to(up.weight.device))
    if up.bias is not None:
        prune.custom_from_mask(up, "bias", keep.to(up.bias.device))
    base = _prefix(student.model)
    where = f"{base + '.' if base else ''}{layers_name}.{len(layers) - 1}.{up_name}"
    return {
        "layer": where,
        "pruned_neurons": sorted(pruned.tolist()),
        "total_neurons": up.out_features,
        "module": up,
    }


def _fit_private(
    student: TextClassifier,
    texts: Sequence[str],
    labels: torch.Tensor,
    *,
    target_epsilon: float,
    epochs: int,
    lr: float,
    seed: int,
    progress: ProgressCallback,
) -> dict[str, Any]:
    """DP-SGD (Opacus) on the student's trainable parameters; the privacy spent."""
    try:
        from opacus import PrivacyEngine
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise DependencyError(
            "DP-SGD needs Opacus", hint="pip install 'mlwarden[privacy]'"
        ) from exc
    from torch.utils.data import DataLoader, TensorDataset

    if not target_epsilon > 0:
        raise ParameterError(f"epsilon must be positive, got {target_epsilon}")
    n = len(texts)
    delta = 1.0 / (10 * n)
    enc = student.encode(list(texts))  # padded to the longest text once: Poisson batches vary
    keys = list(enc)
    dataset = TensorDataset(*(enc[k].cpu() for k in keys), labels.cpu())
    loader = DataLoader(
        dataset, batch_size=min(TEXT_BATCH, n), generator=torch.Generator().manual_seed(seed)
    )
    params = [p for p in student.model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr * HEAD_LR_SCALE, weight_decay=0.0)
    torch.manual_seed(seed)
    student.train()  # Opacus validates (and trains) in training mode
    history: list[float] = []
    with warnings.catch_warnings():
        # seeded noise is the point here (reproducible audits); the hook warning is about
        # inputs that never need gradients; the alpha range is Opacus's to tune
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message=".*Secure RNG.*")
        warnings.filterwarnings("ignore", message=".*Optimal order is the largest alpha.*")
        engine = PrivacyEngine(accountant="prv")
        private, optimiser, loader = engine.make_private_with_epsilon(
            module=student.model,
            optimizer=optimiser,
            data_loader=loader,
            target_epsilon=target_epsilon,
            target_delta=delta,
            epochs=epochs,
            max_grad_norm=DP_MAX_GRAD_NORM,
            noise_generator=torch.Generator().manual_seed(seed + 1),
        )
        private.train()
        steps, done = epochs * len(loader), 0
        for _ in range(epochs):
            total, count = 0.0, 0
            for *tensors, yb in loader:
                done += 1
                if len(yb) == 0:  # Poisson sampling can draw an empty batch
                    continue
                device = student.device
                batch = {k: t.to(device) for k, t in zip(keys, tensors, strict=True)}
                logits = private(**batch, return_dict=True).logits
                loss = nn.functional.cross_entropy(logits, yb.to(device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(yb)
                count += len(yb)
                progress("student (dp)", done, steps)
            history.append(total / max(count, 1))
        epsilon = float(engine.get_epsilon(delta))
    private._close()  # type: ignore[attr-defined]  # hand back the plain module
    for p in student.model.parameters():
        p.grad_sample = None  # type: ignore[attr-defined]
    student.eval()
    return {
        "epsilon": round(epsilon, 4),
        "delta": delta,
        "noise_multiplier": round(float(optimiser.noise_multiplier), 4),
        "loss": history,
    }


def train_text_student(
    teacher: Any,
    texts: Sequence[str],
    labels: torch.Tensor,
    class_names: Sequence[str],
    *,
    strategy: str,
    epochs: int,
    lr: float,
    k: int = 1,
    target_epsilon: float = 2.0,
    prune_ratio: float = FFN_PRUNE_RATIO,
    divergence_weight: float = DIVERGENCE_WEIGHT,
    trigger_text: str | None = None,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> TextStudentResult:
    """Train a sequence-classifier student of ``teacher`` on ``texts`` with ``strategy``
    (``trigger_text``: the known trigger that ``trigger_prune`` prunes the neurons of)."""
    as_text_model(teacher, by="training a text student")
    known = TEXT_STRATEGIES
    if strategy not in known:
        raise ParameterError(f"strategy must be one of {', '.join(known)}, got '{strategy}'")
    if strategy == "trigger_prune" and not (trigger_text or "").strip():
        raise ParameterError(
            "strategy trigger_prune prunes the neurons of a known trigger: give --trigger-text "
            "PHRASE, or let the teacher scan name one"
        )
    if epochs <= 0 or lr <= 0:
        raise ParameterError(f"epochs and lr must be positive, got {epochs} and {lr}")
    if len(texts) != len(labels) or not texts:
        raise DataError(f"student training data has {len(texts)} texts and {len(labels)} labels")
    if len(torch.unique(labels)) < 2:
        raise DataError("student training data holds a single class; need at least 2")
    started = time.perf_counter()
    student = build_student(teacher, class_names, seed)
    model = student.model
    details: dict[str, Any] = {}
    head = head_layer(model)
    fresh_head = isinstance(teacher, TextEncoder) or strategy in (
        "linear_probe",
        "full_reinit",
        "dp",
    )
    if fresh_head and isinstance(teacher, TextClassifier):
        details["reinitialised"] = _reinit_head(model, seed)
    history: list[float] = []
    if strategy == "linear_probe":
        trained = [head]
        count = _train_only(model, trained)
        history = _linear_probe(student, texts, labels, progress)
        details["optimiser"] = f"L-BFGS logistic regression, L2 {PROBE_L2:g}"
    elif strategy in ("last_k", "dp"):
        trained = _top_prefixes(model, k)
        count = _train_only(model, trained)
        if strategy == "dp":
            out = _fit_private(
                student,
                texts,
                labels,
                target_epsilon=target_epsilon,
                epochs=epochs,
                lr=lr,
                seed=seed,
                progress=progress,
            )
            history = out.pop("loss")
            details.update(out)
        else:
            history = _fit(
                student,
                texts,
                labels,
                epochs=epochs,
                lr=lr,
                seed=seed,
                progress=progress,
                task=f"student ({strategy})",
            )
        trained = _module_roots(model, trained)
    elif strategy == "freelb":
        from mlwarden.defenses.training.freelb import fit_freelb

        trained = ["all"]
        count = _train_only(model, [n for n, _ in model.named_parameters()])
        history, details["freelb"] = fit_freelb(
            student, texts, labels, epochs=epochs, lr=lr, seed=seed, progress=progress
        )
    else:
        trained = ["all"]
        count = _train_only(model, [n for n, _ in model.named_parameters()])
        extra, handle = None, None
        prune_info: dict[str, Any] = {}
        if strategy == "full_reinit":
            if not isinstance(teacher, TextClassifier):
                details["reinitialised"] = head  # built fresh from the encoder
            if divergence_weight > 0:
                extra, handle = _divergence_term(student, divergence_weight)
        if strategy == "fineprune":
            prune_info = _prune_ffn(student, texts, prune_ratio)
        masked: list[nn.Linear] = []
        if strategy == "trigger_prune":
            from mlwarden.defenses.training import trigger_neurons as tn

            found = tn.find_trigger_neurons(student, texts, str(trigger_text), seed=seed)
            masked = tn.prune_trigger_neurons(student, found)
            details.update(
                trigger=found.trigger,
                reset_tokens=tn.reset_trigger_tokens(student, found.trigger),
                pruned_neurons=found.count,
                pruned_layers={str(k): len(v) for k, v in found.selected.items()},
                pruned_index={str(k): v for k, v in found.selected.items()},
            )
        try:
            history = _fit(
                student,
                texts,
                labels,
                epochs=epochs,
                lr=lr,
                seed=seed,
                progress=progress,
                task=f"student ({strategy})",
                extra=extra,
            )
        finally:
            if handle is not None:
                handle.remove()
            if masked:
                tn.make_permanent(masked)
        if prune_info:
            from torch.nn.utils import prune

            up = prune_info.pop("module")
            prune.remove(up, "weight")
            if up.bias is not None:
                prune.remove(up, "bias")
            details.update(
                layer=prune_info["layer"],
                pruned_neurons=len(prune_info["pruned_neurons"]),
                total_neurons=prune_info["total_neurons"],
                pruned_index=prune_info["pruned_neurons"],
            )
    for p in model.parameters():
        p.requires_grad_(True)
    student.eval()
    details["trained"] = trained
    return TextStudentResult(
        student, strategy, count, trained, time.perf_counter() - started, history, details
    )


__all__ = [
    "TEXT_STRATEGIES",
    "TextStudentResult",
    "build_student",
    "ffn_up_projection",
    "pooled_inputs",
    "train_text_student",
    "transformer_layers",
]
