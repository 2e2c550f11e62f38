"""``/v1/predict-encrypted``: the real app, a real CKKS client, auth, limits and refusals."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlwarden.core.errors import ConfigError
from mlwarden.gateway.auth import NewKey
from mlwarden.gateway.config import GatewayConfig
from mlwarden.io.dataset import Dataset

pytest.importorskip("tenseal")
from fastapi.testclient import TestClient  # noqa: E402

from mlwarden.defenses.encrypted_inference import EncryptedClient, HEHead, fit_head  # noqa: E402
from mlwarden.gateway.app import create_app  # noqa: E402
from mlwarden.gateway.encrypted import (  # noqa: E402
    CONTEXT,
    INFO,
    PREDICT,
    EncryptedGatewayClient,
)


@pytest.fixture(scope="module")
def cancer_head(cancer_split: tuple[Dataset, Dataset]) -> Any:
    train, _ = cancer_split
    return fit_head(train.x, train.y, class_names=train.class_names)


@pytest.fixture
def served(
    tmp_path: Path,
    cancer_head: Any,
    gateway_config: Callable[..., GatewayConfig],
    keys: dict[str, NewKey],
) -> Iterator[tuple[TestClient, str]]:
    head_file = HEHead.from_module(cancer_head).save(tmp_path / "head.npz")
    config = gateway_config(
        encrypted={"enabled": True, "head": str(head_file), "max_ciphertext_bytes": 1_000_000}
    )
    with TestClient(create_app(cancer_head, config)) as client:
        yield client, keys["full"].api_key


def test_encrypted_prediction_over_http_equals_plaintext(
    served: tuple[TestClient, str], cancer_head: Any, cancer_split: tuple[Dataset, Dataset]
) -> None:
    client, secret = served
    _, test = cancer_split
    client.headers["X-API-Key"] = secret
    gateway = EncryptedGatewayClient("http://testserver", http=client)
    assert gateway.info["in_features"] == 30 and gateway.info["depth"] == 1
    with torch.no_grad():
        plain = cancer_head(test.x[:3]).double().numpy()
    scores = np.array([gateway.predict(row) for row in test.x[:3].numpy()])
    np.testing.assert_allclose(scores, plain, atol=1e-4)
    assert (scores.argmax(1) == plain.argmax(1)).all()
    # a replica that lost the context: the client sends it again
    gateway.context_id = "0" * 64
    np.testing.assert_allclose(gateway.predict(test.x[0].numpy()), plain[0], atol=1e-4)


def test_auth_is_required(served: tuple[TestClient, str]) -> None:
    client, _ = served
    assert client.get(INFO).status_code == 401
    assert client.post(CONTEXT, content=b"x").status_code == 401
    assert client.post(PREDICT, json={}).status_code == 401


def test_malformed_payloads_get_4xx(served: tuple[TestClient, str]) -> None:
    client, secret = served
    auth = {"X-API-Key": secret}
    assert client.post(CONTEXT, content=b"not a context", headers=auth).status_code == 400
    secret_ctx = EncryptedClient(1).context.serialize(save_secret_key=True)
    answer = client.post(CONTEXT, content=secret_ctx, headers=auth)
    assert answer.status_code == 400 and "secret key" in answer.json()["error"]["message"]
    assert client.post(PREDICT, content=b"{", headers=auth).status_code == 400
    assert client.post(PREDICT, json={"context_id": "a"}, headers=auth).status_code == 422
    bad64 = {"context_id": "a", "ciphertext": "!!"}
    assert client.post(PREDICT, json=bad64, headers=auth).status_code == 422
    unknown = {"context_id": "a", "ciphertext": base64.b64encode(b"x").decode()}
    answer = client.post(PREDICT, json=unknown, headers=auth)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_context"
    huge = {"context_id": "a", "ciphertext": "A" * 3_000_000}
    assert client.post(PREDICT, json=huge, headers=auth).status_code == 413
    he = EncryptedClient(1)
    context_id = client.post(CONTEXT, content=he.public_context(), headers=auth).json()
    garbage = {
        "context_id": context_id["context_id"],
        "ciphertext": base64.b64encode(b"\x00" * 100).decode(),
    }
    assert client.post(PREDICT, json=garbage, headers=auth).status_code == 422
    short = {
        "context_id": context_id["context_id"],
        "ciphertext": base64.b64encode(he.encrypt([1.0, 2.0])).decode(),
    }
    answer = client.post(PREDICT, json=short, headers=auth)
    assert answer.status_code == 422 and "this head takes 30" in answer.json()["error"]["message"]


def test_rate_limits_apply(
    tmp_path: Path,
    cancer_head: Any,
    gateway_config: Callable[..., GatewayConfig],
    keys: dict[str, NewKey],
) -> None:
    head_file = HEHead.from_module(cancer_head).save(tmp_path / "head.npz")
    config = gateway_config(
        encrypted={"enabled": True, "head": str(head_file)},
        rate_limit={"per_key": "2/minute", "per_key_burst": None},
    )
    with TestClient(create_app(cancer_head, config)) as client:
        auth = {"X-API-Key": keys["full"].api_key}
        codes = [client.get(INFO, headers=auth).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_off_by_default_and_startup_errors(
    tmp_path: Path, cancer_head: Any, gateway_config: Callable[..., GatewayConfig]
) -> None:
    with TestClient(create_app(cancer_head, gateway_config())) as client:
        assert client.post(PREDICT, json={}).status_code in (404, 405)
    with pytest.raises(ConfigError, match="names no head"):
        create_app(cancer_head, gateway_config(encrypted={"enabled": True}))
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not an encrypted-inference head"):
        create_app(
            cancer_head,
            gateway_config(encrypted={"enabled": True, "head": str(tmp_path / "bad.npz")}),
        )
