"""The gateway serving a text classifier over real HTTP: predictions, bad input, audit, monitors.

One server for the module (MiniLM plus a seeded 2-class head, every protection on, a
Mahalanobis validator fitted on the sentence embeddings of 120 real reviews); the
batch-step tests drive `TextBatchWorker` directly on the same model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

# The text fixtures (MiniLM folder, its sequence-classification checkpoint, real reviews)
# live in tests/text/conftest.py; they are reused here rather than written twice.
_spec = importlib.util.spec_from_file_location(
    "text_fixtures", Path(__file__).parents[1] / "text" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_text = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_text)
minilm_path = _text.minilm_path
seqcls_path = _text.seqcls_path
reviews_jsonl = _text.reviews_jsonl

MAX_TOKENS = 48
"""The served token limit (over-long texts refused), below MiniLM's 256 to test it cheaply."""
PROBE_SENTENCE = "the acting in this film is {} and the plot is {}"
PROBE_WORDS = ("good", "bad", "fine", "great", "dull", "odd", "weak", "fresh")


def bearer(key: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.api_key}"}


@pytest.fixture(scope="module")
def reviews(reviews_jsonl: Path) -> list[str]:
    return [json.loads(line)["review"] for line in reviews_jsonl.read_text().splitlines()]


@pytest.fixture(scope="module")
def classifier(seqcls_path: Path) -> Any:
    from mlwarden.io import load_model

    return load_model(seqcls_path, device="cpu")


@pytest.fixture(scope="module")
def fitted(classifier: Any, reviews: list[str]) -> tuple[Any, float]:
    """A validator on the sentence embeddings of 120 reviews, and their k-NN threshold."""
    from mlwarden.defenses.detection.ood import MahalanobisDetector
    from mlwarden.gateway.monitoring import calibrate_knn_threshold
    from mlwarden.gateway.text import SENTENCE_EMBEDDING, text_features

    logits, emb = text_features(classifier, reviews[:120])
    det = MahalanobisDetector(false_rejection_rate=0.01).fit_features(
        emb, logits.argmax(1), layer=SENTENCE_EMBEDDING
    )
    return det, calibrate_knn_threshold(emb, k=10, quantile=0.001)


@pytest.fixture(scope="module")
def text_keys() -> dict[str, Any]:
    from mlwarden.gateway.auth import generate_key

    return {
        name: generate_key(name, ("predict",), output)
        for name, output in (("full", "probabilities"), ("rounded", "rounded"), ("probe", "labels"))
    }


@pytest.fixture(scope="module")
def server(
    classifier: Any,
    fitted: tuple[Any, float],
    text_keys: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.config import GatewayConfig
    from mlwarden.gateway.server import GatewayServer

    validator, threshold = fitted
    audit = tmp_path_factory.mktemp("text-audit") / "audit.jsonl"
    config = GatewayConfig.from_dict(
        {
            "auth": {"keys": [k.entry.model_dump() for k in text_keys.values()]},
            "rate_limit": {
                "per_key": "100000/minute",
                "per_key_burst": "10000/second",
                "per_address": "100000/minute",
                "per_address_burst": "10000/second",
            },
            "validation": {"ood": "flag", "max_batch": 64},
            "text": {"max_tokens": MAX_TOKENS},
            "monitoring": {"query_attack": {"threshold": threshold, "hits_to_alert": 10}},
            "audit_log": {"path": str(audit)},
        }
    )
    with GatewayServer(create_app(classifier, config, validator=validator)) as s:
        s.audit_path = audit  # type: ignore[attr-defined]
        yield s


@pytest.fixture(scope="module")
def http() -> Any:
    import httpx

    with httpx.Client(timeout=60) as c:
        yield c


def test_predictions_equal_the_classifier_s_own_batched_from_many_clients(
    server: Any, http: Any, classifier: Any, reviews: list[str], text_keys: dict[str, Any]
) -> None:
    counts = classifier.token_counts(reviews[200:300])
    texts = [t for t, n in zip(reviews[200:300], counts, strict=True) if n <= MAX_TOKENS][:24]
    answers: dict[int, Any] = {}

    def send(i: int) -> None:  # 8 concurrent requests of 3 texts: batched together
        answers[i] = http.post(
            f"{server.url}/v1/predict",
            json={"inputs": texts[3 * i : 3 * i + 3]},
            headers=bearer(text_keys["full"]),
        )

    batches_before = server.server.config.app.state.gateway.batcher.batches
    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    preds = []
    for i in range(8):
        assert answers[i].status_code == 200, answers[i].text
        preds.extend(answers[i].json()["predictions"])
    assert [p["label"] for p in preds] == classifier.predict(texts).tolist()
    assert [p["class_name"] for p in preds][:2] == [
        classifier.spec.class_names[p["label"]] for p in preds[:2]
    ]
    probs = torch.tensor([p["probabilities"] for p in preds])
    assert torch.allclose(probs, classifier.probabilities(texts), atol=1e-4)
    batches = server.server.config.app.state.gateway.batcher.batches - batches_before
    assert batches < 8  # requests of different clients shared forward passes


def test_rounded_key_gets_rounded_probabilities(
    server: Any, http: Any, text_keys: dict[str, Any]
) -> None:
    r = http.post(
        f"{server.url}/v1/predict",
        json={"inputs": ["a warm and funny film"]},
        headers=bearer(text_keys["rounded"]),
    )
    assert r.status_code == 200, r.text
    probs = r.json()["predictions"][0]["probabilities"]
    assert all(round(p, 2) == p for p in probs)


BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("empty-string", b'{"inputs": [""]}', 422, "empty or only whitespace"),
    ("whitespace-only", b'{"inputs": ["ok", " \\t\\n "]}', 422, "inputs[1] is empty"),
    ("number", b'{"inputs": [3.5]}', 422, "inputs[0] is a number, not a string"),
    ("null", b'{"inputs": [null]}', 422, "not a string"),
    ("nested-list", b'{"inputs": [["a", "b"]]}', 422, "takes text, not tensors"),
    ("tensor-payload", b'{"inputs": [[[0.1, 0.2], [0.3, 0.4]]]}', 422, "takes text"),
    ("bare-string", b'"a review"', 422, "got a string"),
    ("inputs-a-string", b'{"inputs": "a review"}', 422, "got a string"),
    ("inputs-a-number", b'{"inputs": 7}', 422, "got a number"),
    ("no-inputs", b'{"text": ["a"]}', 422, "unknown field"),
    ("empty-list", b'{"inputs": []}', 422, "is empty"),
    ("non-utf8", b'{"inputs": ["caf\xe9 \xff"]}', 400, "not UTF-8"),
    ("broken-json", b'{"inputs": ["a"', 400, "malformed JSON"),
    ("lone-surrogate", b'{"inputs": ["\\ud800 x"]}', 422, "surrogate"),
    (
        "10000-inputs",
        json.dumps({"inputs": ["fine"] * 10_000}).encode(),
        422,
        "10000 texts; the limit is 64",
    ),
    (
        "1MB-string",
        json.dumps({"inputs": ["a" * 1_000_000]}).encode(),
        422,
        "1000000 characters; the limit is 5000",
    ),
    ("2MB-string", json.dumps({"inputs": ["a" * 2_000_000]}).encode(), 413, "exceeds the limit"),
    (
        "too-many-tokens",
        json.dumps({"inputs": ["ok", "word " * 200]}).encode(),
        422,
        f"inputs[1] take(s) more than {MAX_TOKENS} tokens",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "message"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_bad_input_is_a_4xx_with_a_message_and_the_server_keeps_answering(
    server: Any, http: Any, text_keys: dict[str, Any], body: bytes, status: int, message: str
) -> None:
    headers = {**bearer(text_keys["full"]), "Content-Type": "application/json"}
    r = http.post(f"{server.url}/v1/predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    ok = http.post(
        f"{server.url}/v1/predict",
        json={"inputs": ["still answering?"]},
        headers=bearer(text_keys["full"]),
    )
    assert ok.status_code == 200, ok.text


def test_text_to_a_tensor_model_is_refused_with_a_message(digits_cnn: Any) -> None:
    from fastapi.testclient import TestClient

    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.config import GatewayConfig

    app = create_app(
        digits_cnn,
        GatewayConfig.from_dict(
            {
                "auth": {"enabled": False},
                "audit_log": {"enabled": False},
                "monitoring": {"query_attack": {"enabled": False}},
            }
        ),
    )
    with TestClient(app) as c:
        r = c.post("/v1/predict", json={"inputs": ["a review"]})
    assert r.status_code == 422
    assert "inputs[0] is text; this model takes tensors" in r.json()["error"]["message"]


def test_audit_log_holds_the_sha256_of_each_text_and_never_the_text(
    server: Any, http: Any, text_keys: dict[str, Any]
) -> None:
    secret = "my private review of a film nobody else has seen, 7c1f"
    r = http.post(
        f"{server.url}/v1/predict",
        json={"inputs": [secret, "plain"]},
        headers=bearer(text_keys["full"]),
    )
    assert r.status_code == 200, r.text
    refused = http.post(
        f"{server.url}/v1/predict", json={"inputs": [secret, ""]}, headers=bearer(text_keys["full"])
    )
    assert refused.status_code == 422
    server.server.config.app.state.gateway.audit.flush()
    log = server.audit_path.read_text()
    assert secret not in log and "7c1f" not in log
    entries = [json.loads(line) for line in log.splitlines()]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    served = [
        e for e in entries if e.get("event") == "predict" and digest in e.get("texts_sha256", [])
    ]
    assert len(served) == 1 and served[0]["inputs_count"] == 2
    assert "inputs" not in served[0]
    assert any(e.get("event") == "refuse" and e.get("reason") == "invalid_input" for e in entries)


def test_openapi_documents_the_text_request(server: Any, http: Any) -> None:
    schema = http.get(f"{server.url}/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
    inputs = body["schema"]["properties"]["inputs"]
    assert inputs["maxItems"] == 64 and inputs["items"]["type"] == "string"
    assert inputs["items"]["maxLength"] == 5000
    assert f"{MAX_TOKENS} tokens" in inputs["items"]["description"]


def test_near_duplicate_probing_is_blocked_by_the_query_attack_monitor(
    server: Any, http: Any, text_keys: dict[str, Any]
) -> None:
    """Word swaps in one sentence (how text attacks query) sit close in embedding space."""
    probes = [PROBE_SENTENCE.format(a, b) for a in PROBE_WORDS for b in PROBE_WORDS]
    statuses = []
    for start in range(0, len(probes), 8):
        r = http.post(
            f"{server.url}/v1/predict",
            json={"inputs": probes[start : start + 8]},
            headers=bearer(text_keys["probe"]),
        )
        statuses.append(r.status_code)
    assert 403 in statuses, statuses
    assert statuses[0] == 200
    after = http.post(
        f"{server.url}/v1/predict",
        json={"inputs": ["another film"]},
        headers=bearer(text_keys["probe"]),
    )
    assert after.status_code == 403 and after.json()["error"]["code"] == "blocked"
    alerts = server.server.config.app.state.gateway.alerts
    assert any(a.detector == "query_attack" for a in alerts)


# -- the batch step alone ----------------------------------------------------------------


def _worker(classifier: Any, **text: Any) -> Any:
    from mlwarden.defenses.output import release
    from mlwarden.gateway.config import TextConfig
    from mlwarden.gateway.monitoring import MonitorBank
    from mlwarden.gateway.text import TextBatchWorker

    bank = MonitorBank(extraction=None, query_attack=None)
    return TextBatchWorker(classifier, bank, partial(release, k=2), TextConfig(**text))


def test_over_long_text_refuses_only_its_own_request_in_a_batch(classifier: Any) -> None:
    from mlwarden.gateway.batching import Ticket
    from mlwarden.gateway.errors import GatewayError

    worker = _worker(classifier, max_tokens=16)
    texts = ["short one", "a film " * 20, "short two", "and three"]
    out = worker(texts, [(Ticket("a", "labels"), 2), (Ticket("b", "labels"), 2)])
    assert isinstance(out[0], GatewayError) and out[0].status == 422
    assert "inputs[1]" in out[0].message and "16 tokens" in out[0].message
    assert out[1].labels == classifier.predict(texts[2:]).tolist()


def test_truncation_when_configured_matches_the_model_s_own(
    classifier: Any, reviews: list[str]
) -> None:
    from mlwarden.gateway.batching import Ticket

    worker = _worker(classifier, over_long="truncate")
    long = " ".join(reviews[:60])  # far over the model's limit (512 tokens)
    texts = [long, reviews[41], long[len(long) // 2 :]]
    (answer,) = worker(texts, [(Ticket("a", "probabilities"), 3)])
    assert answer.labels == classifier.predict(texts).tolist()
    assert torch.allclose(
        torch.tensor(answer.probabilities), classifier.probabilities(texts), atol=1e-4
    )


def test_a_token_limit_above_the_model_s_is_a_config_error(classifier: Any) -> None:
    from mlwarden.core.errors import ConfigError

    limit = classifier.spec.max_tokens
    with pytest.raises(ConfigError, match=f"exceeds the model's limit of {limit} tokens"):
        _worker(classifier, max_tokens=limit + 1)


def test_a_text_encoder_is_refused_in_one_line(minilm_path: Path) -> None:
    from mlwarden.core.errors import ParameterError
    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.config import GatewayConfig
    from mlwarden.io import load_model

    encoder = load_model(minilm_path, device="cpu")
    with pytest.raises(ParameterError, match="the gateway needs labels"):
        create_app(encoder, GatewayConfig.from_dict({"auth": {"enabled": False}}))


def test_a_batch_is_padded_per_group_of_similar_length(classifier: Any) -> None:
    worker = _worker(classifier)
    assert worker.chunks([5, 50, 6, 52, 7]) == [[0, 2, 4], [1, 3]]
    assert worker.chunks([9, 9, 10]) == [[0, 1, 2]]


# -- the CLI -------------------------------------------------------------------------------


def test_fit_validator_on_texts_writes_a_sentence_embedding_validator(
    tmp_path: Path, seqcls_path: Path, reviews_jsonl: Path
) -> None:
    from typer.testing import CliRunner

    from mlwarden.cli.main import app
    from mlwarden.defenses.detection.ood import load_detector
    from mlwarden.gateway.text import SENTENCE_EMBEDDING

    data = tmp_path / "train.jsonl"
    data.write_text("".join(reviews_jsonl.read_text().splitlines(keepends=True)[:60]))
    out = tmp_path / "validator.safetensors"
    res = CliRunner().invoke(
        app,
        [
            "gateway",
            "fit-validator",
            "--model",
            str(seqcls_path),
            "--data",
            str(data),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    detector, extra = load_detector(out)
    assert detector.layer_ == SENTENCE_EMBEDDING  # type: ignore[union-attr]
    assert extra["query_attack_threshold"] > 0


def test_serve_model_folder_without_a_config_fails_closed(
    tmp_path: Path, seqcls_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --model FOLDER` loads the folder; the defaults then demand what they protect
    with (a query-attack threshold, API keys) instead of serving unprotected."""
    from typer.testing import CliRunner

    from mlwarden.cli.main import app

    monkeypatch.chdir(tmp_path)  # no mlwarden.toml here: the gateway's defaults apply
    res = CliRunner().invoke(app, ["serve", "--model", str(seqcls_path)])
    assert res.exit_code != 0
    message = res.output + str(res.exception)
    assert "[gateway.monitoring.query_attack] has no threshold" in message


def test_encrypted_hf_folder_is_served_without_a_plaintext_file(
    tmp_path, monkeypatch, gateway_config, start_gateway, client, keys, seqcls_path
):  # type: ignore[no-untyped-def]
    """The classifier folder exists only as one encrypted archive: decrypted, gated and loaded
    from memory, then served; nothing of it is written anywhere, by the load or the server."""
    import tempfile

    from mlwarden.io import load_model
    from mlwarden.supplychain.encryption import (
        KEY_ENV,
        KEY_FILE_ENV,
        encrypt_folder,
        generate_key,
        read_key,
    )

    key_file = generate_key(tmp_path / "model.key")
    store = tmp_path / "store"
    store.mkdir()
    enc = encrypt_folder(seqcls_path, store / "review-classifier.enc", read_key(key_file))
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.chdir(store)

    def listing() -> dict[str, int]:
        return {str(p): p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()}

    before = listing()
    model = load_model(enc)
    server = start_gateway(gateway_config(), model=model, use_validator=False)
    texts = ["a fine, moving film", "the worst movie of the year: dull, long and loud"]
    r = client.post(
        f"{server.url}/v1/predict",
        json={"inputs": texts},
        headers={"Authorization": f"Bearer {keys['full'].api_key}"},
    )
    assert r.status_code == 200, r.text
    labels = [p["label"] for p in r.json()["predictions"]]
    plain = load_model(seqcls_path)
    assert labels == plain.predict(texts).tolist()
    after = {k: v for k, v in listing().items() if not k.endswith("audit.jsonl")}
    assert after == before  # only the gateway's own audit log was written
    assert not any(Path(p).suffix in (".safetensors", ".json", ".txt") for p in after)
