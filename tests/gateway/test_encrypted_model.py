"""An encrypted .pt2 served by the gateway: decrypted into memory, no plaintext on disk."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("cryptography")

from mlwarden.io import load_model  # noqa: E402
from mlwarden.io.export import save_pt2  # noqa: E402
from mlwarden.supplychain.encryption import (  # noqa: E402
    KEY_ENV,
    KEY_FILE_ENV,
    encrypt_file,
    generate_key,
    read_key,
)


def test_encrypted_pt2_is_served_without_a_plaintext_file(
    tmp_path, monkeypatch, digits_cnn, digits_split, gateway_config, start_gateway, client, keys
):  # type: ignore[no-untyped-def]
    key_file = generate_key(tmp_path / "model.key")
    clear = save_pt2(digits_cnn, tmp_path / "clear" / "cnn.pt2")
    store = tmp_path / "store"
    store.mkdir()
    enc = encrypt_file(clear, store / "digits-cnn.pt2.enc", read_key(key_file))
    clear.unlink()  # only the encrypted file exists from here on
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.chdir(store)

    def listing() -> dict[str, int]:
        return {str(p): p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()}

    before = listing()
    model = load_model(enc)
    server = start_gateway(gateway_config(), model=model)
    x = digits_split[1].x[:16]
    r = client.post(
        f"{server.url}/v1/predict",
        json={"inputs": x.tolist()},
        headers={"Authorization": f"Bearer {keys['full'].api_key}"},
    )
    assert r.status_code == 200, r.text
    labels = [p["label"] for p in r.json()["predictions"]]
    assert labels == digits_cnn.predict(x).tolist()
    after = {k: v for k, v in listing().items() if not k.endswith("audit.jsonl")}
    assert after == before  # the audit log is the gateway's own; no model bytes were written
    assert not any(Path(p).suffix == ".pt2" for p in after)
    assert torch.equal(model.predict(x), digits_cnn.predict(x))
