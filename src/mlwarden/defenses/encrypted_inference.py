"""Encrypted inference: a small head evaluated on a CKKS ciphertext the server cannot read.

The client keeps the secret key. It sends a *public* TenSEAL context (relinearisation and
Galois keys, no secret key) once and then encrypted feature vectors; the server evaluates
the head on the ciphertext and returns encrypted scores only the client can decrypt (CKKS:
Cheon, Kim, Kim and Song, "Homomorphic encryption for arithmetic of approximate numbers",
ASIACRYPT 2017; TenSEAL: Benaissa et al., 2021). The features may
be tabular inputs or a text encoder's embedding computed on the client.

CKKS evaluates additions and multiplications only, each multiplication costing one level
of the modulus chain, so the heads are the ones a chain of a few levels holds:

* a linear head ``W x + b`` (logistic regression; depth 1);
* a polynomial-activation net ``W2 p(W1 x + b1) + b2`` with ``p`` of degree 2 or 3 (the
  square activation of CryptoNets, Gilad-Bachrach et al., ICML 2016): depth 3 for degree
  2, depth 4 for degree 3.

The answer is one ciphertext per class.

`fit_head` trains either on features and labels (a `Classifier` that standardises its
input); `HEHead.from_module` turns a trained torch head into plain matrices, a
`Classifier`'s normalisation becoming the client's `HEHead.prepare` step; `HEHead.evaluate`
runs it on a CKKS vector; `EncryptedClient` makes the context, encrypts and decrypts.

What it protects: the client's input and the score (the server sees neither). What it
does not: the weights from the client. The slots past each score (partial sums of the
dot product) and the noise are not masked, and a client who reads exact scores can
extract a linear head with ``d + 1`` queries; keep the gateway's rate limits on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlwarden.core.errors import InputError, ModelLoadError, ParameterError, require

if TYPE_CHECKING:
    from mlwarden.core.classifier import Classifier

__all__ = [
    "EncryptedClient",
    "HEHead",
    "PolyActivation",
    "PolyHead",
    "context_parameters",
    "fit_head",
    "load_context",
    "load_vector",
]

MAX_DEGREE = 3
_PARAMS: dict[int, tuple[int, tuple[int, ...], int]] = {
    # depth: (poly_modulus_degree, coeff_mod_bit_sizes, log2 of the scale); 128-bit security
    1: (8192, (60, 40, 40, 60), 40),
    3: (8192, (50, 35, 35, 35, 50), 35),
    4: (16384, (60, 50, 50, 50, 50, 60), 50),
}


def _ts() -> Any:
    return require("tenseal", "he")


def context_parameters(depth: int) -> tuple[int, tuple[int, ...], int]:
    """CKKS parameters for a head of multiplicative ``depth``: the smallest ring that holds it."""
    for level in sorted(_PARAMS):
        if depth <= level:
            return _PARAMS[level]
    raise ParameterError(f"depth {depth} needs more levels than mlwarden's presets (at most 4)")


# -- torch heads ------------------------------------------------------------------------------
class PolyActivation(torch.nn.Module):
    """``p(h) = sum_k c_k h^k``, ``k <= degree``: an activation CKKS can evaluate.

    Initialised near ``0.5 h + 0.25 h^2`` (the low-degree fit of softplus around zero that
    keeps training stable) and learned with the rest of the net.
    """

    def __init__(self, degree: int = 2) -> None:
        super().__init__()
        if degree not in (2, 3):
            raise ParameterError(f"degree must be 2 or 3, got {degree}")
        init = [0.0, 0.5, 0.25, 0.0][: degree + 1]
        self.coefficients = torch.nn.Parameter(torch.tensor(init))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.coefficients[0] * torch.ones_like(h)
        power = h
        for k in range(1, len(self.coefficients)):
            out = out + self.coefficients[k] * power
            power = power * h
        return out


class PolyHead(torch.nn.Sequential):
    """``Linear(d, C)`` if ``hidden == 0``, else ``Linear(d, hidden) -> p -> Linear(hidden, C)``."""

    def __init__(self, in_features: int, n_classes: int, hidden: int = 0, degree: int = 2):
        nn = torch.nn
        if hidden == 0:
            super().__init__(nn.Linear(in_features, n_classes))
        else:
            super().__init__(
                nn.Linear(in_features, hidden),
                PolyActivation(degree),
                nn.Linear(hidden, n_classes),
            )


def fit_head(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    hidden: int = 0,
    degree: int = 2,
    class_names: Sequence[str] | None = None,
    bounds: tuple[float, float] | None = None,
    epochs: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> Classifier:
    """Train a linear (``hidden=0``: multinomial logistic regression) or polynomial head.

    Returns a `Classifier` whose spec standardises each feature with the training mean and
    std, so the polynomial sees values near zero, where it is a good activation, and the
    gateway can serve the same model in the clear on ``/v1/predict``. Full-batch Adam on
    cross-entropy; ``seed`` fixes the initialisation.
    """
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.spec import InputSpec

    if hidden < 0 or epochs < 1 or lr <= 0:
        raise ParameterError("hidden must be >= 0, epochs >= 1 and lr > 0")
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if xt.ndim != 2 or yt.ndim != 1 or len(xt) != len(yt):
        raise InputError(
            f"x must be (n, d) and y (n,), got {tuple(xt.shape)} and {tuple(yt.shape)}"
        )
    n_classes = int(yt.max()) + 1
    if n_classes < 2:
        raise InputError("y holds a single class; a head needs at least two")
    names = tuple(class_names) if class_names is not None else tuple(map(str, range(n_classes)))
    mean, std = xt.mean(0), xt.std(0).clamp_min(1e-6)
    spec = InputSpec(
        shape=(xt.shape[1],),
        bounds=bounds or (float(xt.min()), float(xt.max())),
        class_names=names,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = PolyHead(xt.shape[1], n_classes, hidden, degree)
    z = (xt - mean) / std
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(z), yt)
        loss.backward()
        opt.step()
    return Classifier(head, spec, name="he-head")


# -- the HE-evaluable form --------------------------------------------------------------------
@dataclass(frozen=True)
class HEHead:
    """A head as plain matrices: ``W1 (d, h)``, ``b1``, optional activation and ``W2 (h, C)``.

    ``coefficients`` is empty for a linear head (then ``w2``/``b2`` are unused). ``mean`` and
    ``std`` are the input normalisation the *client* applies before encrypting (`prepare`).
    It is not folded into ``W1``: raw features (hundreds to thousands in breast_cancer)
    leave large partial sums in the slots past a dot product's result, and once squared
    they overflow the last modulus level and wreck every score.
    """

    w1: np.ndarray
    b1: np.ndarray
    coefficients: tuple[float, ...] = ()
    w2: np.ndarray | None = None
    b2: np.ndarray | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def in_features(self) -> int:
        return int(self.w1.shape[0])

    @property
    def n_classes(self) -> int:
        return int((self.w2 if self.w2 is not None else self.w1).shape[1])

    @property
    def depth(self) -> int:
        """Multiplicative depth: 1 for linear, ``1 + degree`` with a polynomial activation."""
        return 1 if not self.coefficients else len(self.coefficients)

    @classmethod
    def from_module(cls, module: Any) -> HEHead:
        """The head of a torch ``Linear``, a `PolyHead`, or a `Classifier` wrapping one.

        A `Classifier`'s input normalisation ``(x - mean) / std`` becomes `prepare`.
        Anything else raises `ModelLoadError` naming the layers found.
        """
        mean = std = None
        inner = module
        spec = getattr(module, "spec", None)
        if spec is not None and hasattr(module, "module"):
            inner = module.module
            mean, std = getattr(spec, "mean", None), getattr(spec, "std", None)
        layers = list(inner) if isinstance(inner, torch.nn.Sequential) else [inner]
        kinds = [type(m).__name__ for m in layers]
        linear = torch.nn.Linear
        if len(layers) == 1 and isinstance(layers[0], linear):
            first, act, last = layers[0], None, None
        elif (
            len(layers) == 3
            and isinstance(layers[0], linear)
            and isinstance(layers[1], PolyActivation)
            and isinstance(layers[2], linear)
        ):
            first, act, last = layers
        else:
            raise ModelLoadError(
                f"encrypted inference evaluates Linear or Linear -> PolyActivation -> Linear "
                f"heads; this model is {' -> '.join(kinds) or 'empty'}"
            )
        w1 = first.weight.detach().double().numpy().T.copy()
        b1 = (
            first.bias.detach().double().numpy().copy()
            if first.bias is not None
            else np.zeros(w1.shape[1])
        )
        norm: dict[str, tuple[float, ...]] = {}
        if mean is not None and std is not None:
            d = w1.shape[0]
            norm = {
                "mean": tuple(np.broadcast_to(np.asarray(mean, float), (d,)).tolist()),
                "std": tuple(np.broadcast_to(np.asarray(std, float), (d,)).tolist()),
            }
        if act is None:
            return cls(w1, b1, **norm)
        coef = tuple(float(c) for c in act.coefficients.detach().double())
        w2 = last.weight.detach().double().numpy().T.copy()
        b2 = (
            last.bias.detach().double().numpy().copy()
            if last.bias is not None
            else np.zeros(w2.shape[1])
        )
        return cls(w1, b1, coef, w2, b2, **norm)

    def prepare(self, x: np.ndarray | Sequence[float]) -> np.ndarray:
        """The client's step before encrypting: the model's input normalisation, if any."""
        row = np.asarray(x, float)
        if self.mean is None or self.std is None:
            return row
        return (row - np.asarray(self.mean)) / np.asarray(self.std)

    def plain(self, x: np.ndarray) -> np.ndarray:
        """The same computation in float64 on plaintext (raw) rows: the reference."""
        h = self.prepare(x) @ self.w1 + self.b1
        if not self.coefficients:
            return h
        p = sum(c * h**k for k, c in enumerate(self.coefficients))
        return p @ self.w2 + self.b2

    def evaluate(self, vector: Any) -> list[Any]:
        """The head on an encrypted ``CKKSVector`` of ``in_features`` slots: one encrypted
        score per class (a ``CKKSVector`` of size 1 each).

        Each first-layer unit is a dot product (a plain multiplication and a log-depth sum
        of rotations): for d = 384 and two classes this is about 70 times faster than
        TenSEAL's vector-matrix product, which rotates once per input. From then on every
        value is a scalar ciphertext, so ``W2^T p(h) = sum_k (c_k W2)^T h^k`` costs one
        multiplication per power of ``h`` and one per weight: depth ``1 + degree``.
        """
        if vector.size() != self.in_features:
            raise InputError(
                f"the ciphertext holds {vector.size()} values; this head takes {self.in_features}"
            )
        context = vector.context()
        hidden = [
            _dot(vector, self.w1[:, j], float(self.b1[j]), context) for j in range(self.w1.shape[1])
        ]
        if not self.coefficients:
            return hidden
        assert self.w2 is not None and self.b2 is not None
        powers = [hidden]
        for _ in range(2, len(self.coefficients)):
            powers.append([p * h for p, h in zip(powers[-1], hidden, strict=True)])
        bias = self.b2 + self.coefficients[0] * self.w2.sum(axis=0)
        scores = []
        for c in range(self.n_classes):
            terms = [
                power[j] * float(self.coefficients[k + 1] * self.w2[j, c])
                for k, power in enumerate(powers)
                for j in range(len(hidden))
                if self.coefficients[k + 1] * self.w2[j, c] != 0.0
            ]
            scores.append(_total(terms, float(bias[c]), context))
        return scores

    def save(self, path: str | Path) -> Path:
        """Write the head as an ``.npz`` of floats, no pickle (``[gateway.encrypted] head``)."""
        path = Path(path)
        arrays = {"w1": self.w1, "b1": self.b1, "coefficients": np.asarray(self.coefficients)}
        if self.w2 is not None and self.b2 is not None:
            arrays |= {"w2": self.w2, "b2": self.b2}
        if self.mean is not None and self.std is not None:
            arrays |= {"mean": np.asarray(self.mean), "std": np.asarray(self.std)}
        with path.open("wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HEHead:
        """Read a head `save` wrote; any other file is a `ModelLoadError`."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k], float) for k in data.files}
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"'{path}' is not an encrypted-inference head: {exc}") from None
        try:
            w1, b1 = arrays["w1"], arrays["b1"]
            coef = tuple(float(c) for c in arrays.get("coefficients", np.zeros(0)))
            w2, b2 = (arrays["w2"], arrays["b2"]) if coef else (None, None)
        except KeyError as exc:
            raise ModelLoadError(f"'{path}' lacks the array {exc} of a head") from None
        norm = {k: tuple(arrays[k].tolist()) for k in ("mean", "std") if k in arrays}
        ok = w1.ndim == 2 and b1.shape == (w1.shape[1],) and len(norm) in (0, 2)
        ok = ok and all(len(v) == w1.shape[0] for v in norm.values())
        if w2 is not None and b2 is not None:
            ok = ok and len(coef) in (3, 4) and w2.ndim == 2 and w2.shape[0] == w1.shape[1]
            ok = ok and b2.shape == (w2.shape[1],)
        if not ok:
            raise ModelLoadError(f"'{path}' holds arrays whose shapes do not form a head")
        return cls(w1, b1, coef, w2, b2, **norm)  # type: ignore[arg-type]


def _dot(vector: Any, weights: np.ndarray, bias: float, context: Any) -> Any:
    """``weights . x + bias`` encrypted; all-zero weights give an encryption of ``bias``
    (SEAL refuses a product with a zero plaintext: it would be a transparent ciphertext)."""
    if not weights.any():
        return _ts().ckks_vector(context, [bias])
    return vector.dot(weights.tolist()) + [bias]


def _total(terms: list[Any], constant: float, context: Any) -> Any:
    if not terms:
        return _ts().ckks_vector(context, [constant])
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out + [constant]


# -- wire format ------------------------------------------------------------------------------
def load_context(data: bytes) -> Any:
    """A public CKKS context from the client; refuses one holding a secret key or no Galois keys."""
    ts = _ts()
    try:
        ctx = ts.context_from(data)
    except Exception as exc:  # noqa: BLE001 - TenSEAL raises ValueError/RuntimeError on bad bytes
        raise InputError(f"not a serialized TenSEAL context ({type(exc).__name__})") from None
    if not ctx.is_public():
        raise InputError("the context holds its secret key; send the public context only")
    if not ctx.has_galois_keys() or not ctx.has_relin_keys():
        raise InputError("the context lacks Galois or relinearisation keys")
    return ctx


def load_vector(context: Any, data: bytes) -> Any:
    """A CKKS vector under ``context`` from its serialized bytes."""
    ts = _ts()
    try:
        return ts.ckks_vector_from(context, data)
    except Exception as exc:  # noqa: BLE001 - TenSEAL raises ValueError/RuntimeError on bad bytes
        raise InputError(
            f"not a serialized CKKS vector for this context ({type(exc).__name__})"
        ) from None


class EncryptedClient:
    """The client side: owns the secret key, encrypts feature rows, decrypts scores.

    ``depth`` is the head's (`HEHead.depth`; the gateway's ``/v1/predict-encrypted`` info
    says it); the context's parameters follow from it (`context_parameters`).
    """

    def __init__(self, depth: int = 1) -> None:
        ts = _ts()
        n, bits, scale = context_parameters(depth)
        self.context = ts.context(ts.SCHEME_TYPE.CKKS, n, coeff_mod_bit_sizes=list(bits))
        self.context.global_scale = 2.0**scale
        self.context.generate_galois_keys()
        self.depth = depth

    def public_context(self) -> bytes:
        """The context without its secret key, with the keys the server needs."""
        return self.context.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True
        )

    def encrypt(self, features: Sequence[float] | np.ndarray) -> bytes:
        """One feature row (already `HEHead.prepare`-d), encrypted and serialized."""
        row = np.asarray(features, float).ravel()
        return _ts().ckks_vector(self.context, row.tolist()).serialize()

    def decrypt(self, scores: Sequence[bytes]) -> np.ndarray:
        """The score vector of an encrypted answer (one ciphertext per class)."""
        return np.array([load_vector(self.context, s).decrypt()[0] for s in scores], float)

    def predict_local(self, head: HEHead, features: Sequence[float] | np.ndarray) -> np.ndarray:
        """Encrypt, evaluate ``head`` as the server would (on the public context), decrypt."""
        server_ctx = load_context(self.public_context())
        encrypted = load_vector(server_ctx, self.encrypt(head.prepare(features)))
        return self.decrypt([s.serialize() for s in head.evaluate(encrypted)])
