"""The gateway over real HTTP: auth, validation, hardening, health, metrics, audit."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mlwarden.gateway.audit_log import verify_chain
from mlwarden.gateway.auth import generate_key


def bearer(key) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {key.api_key}"}


@pytest.fixture
def server(gateway_config, start_gateway, keys):  # type: ignore[no-untyped-def]
    revoked = keys["labels"].entry.model_copy(update={"revoked": True, "prefix": "Revoked1"})
    cfg = gateway_config()
    cfg.auth.keys.append(revoked)
    return start_gateway(cfg)


def test_predictions_match_the_local_model(server, client, keys, digits_cnn, digits_split):
    x = digits_split[1].x[:20]
    r = client.post(f"{server.url}/v1/predict", json={"inputs": x.tolist()},
                    headers=bearer(keys["full"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "digits-cnn"
    probs = torch.tensor([p["probabilities"] for p in body["predictions"]])
    assert torch.allclose(probs, digits_cnn.probabilities(x), atol=1e-5)
    assert [p["label"] for p in body["predictions"]] == digits_cnn.predict(x).tolist()
    assert body["predictions"][0]["class_name"] == str(body["predictions"][0]["label"])
    assert int(r.headers["RateLimit-Remaining"]) < int(r.headers["RateLimit-Limit"])


def test_x_api_key_header_is_accepted(server, client, keys, digits_split):
    r = client.post(f"{server.url}/v1/predict", json={"inputs": digits_split[1].x[:1].tolist()},
                    headers={"X-API-Key": keys["full"].api_key})
    assert r.status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer mlw_AAAAAAAA_not-a-real-secret"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"X-API-Key": "garbage"},
], ids=["none", "unknown-prefix", "wrong-scheme", "malformed"])
def test_missing_or_wrong_keys_get_401(server, client, digits_split, headers):
    r = client.post(f"{server.url}/v1/predict", json={"inputs": digits_split[1].x[:1].tolist()},
                    headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "unauthorized", "message": "missing or invalid API key"}}
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_secret_and_revoked_key_look_like_unknown_keys(server, client, keys, digits_split):
    """401 with the same body whether the prefix exists or not: no hint to a guesser."""
    x = {"inputs": digits_split[1].x[:1].tolist()}
    prefix = keys["full"].entry.prefix
    wrong = client.post(f"{server.url}/v1/predict", json=x,
                        headers={"X-API-Key": f"mlw_{prefix}_wrongsecret"})
    secret = keys["labels"].api_key.split("_", 2)[2]
    revoked = client.post(f"{server.url}/v1/predict", json=x,
                          headers={"X-API-Key": f"mlw_Revoked1_{secret}"})
    unknown = client.post(f"{server.url}/v1/predict", json=x,
                          headers={"X-API-Key": "mlw_Zzzzzzzz_wrongsecret"})
    assert wrong.status_code == revoked.status_code == unknown.status_code == 401
    assert wrong.content == revoked.content == unknown.content


def test_key_without_scope_gets_403(server, client, keys, digits_split):
    r = client.post(f"{server.url}/v1/predict", json={"inputs": digits_split[1].x[:1].tolist()},
                    headers=bearer(keys["metrics_only"]))
    assert r.status_code == 403
    assert "'predict' scope" in r.json()["error"]["message"]
    m = client.get(f"{server.url}/metrics", headers=bearer(keys["labels"]))
    assert m.status_code == 403
    assert client.get(f"{server.url}/metrics").status_code == 401


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "malformed JSON"),
    (b"", 400, "empty"),
    (b"\xff\xfe", 400, "JSON"),
    (b"[" * 5000 + b"]" * 5000, 400, "JSON"),
    (b'{"inputs": 3}', 422, "list of samples"),
    (b'{"inputs": []}', 422, "empty"),
    (b'{"inputs": [[1, 2, 3]]}', 422, "(1, 8, 8)"),
    (b'{"data": []}', 422, "unknown field"),
    (b'[1, 2]', 422, "JSON object"),
    (b'{"inputs": [[[["a"]]]]}', 422, "numbers"),
], ids=["malformed", "empty", "binary", "deep", "not-list", "no-samples", "shape", "extra",
        "array", "strings"])
def test_malformed_requests_get_4xx_with_a_message(server, client, keys, body, status, needle):
    r = client.post(f"{server.url}/v1/predict", content=body,
                    headers={**bearer(keys["full"]), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_ragged_sample_names_the_sample(server, client, keys, digits_split):
    good = digits_split[1].x[0].tolist()
    bad = [[row[:7] for row in good[0]]]
    r = client.post(f"{server.url}/v1/predict", json={"inputs": [good, bad]},
                    headers=bearer(keys["full"]))
    assert r.status_code == 422
    assert "inputs[1]" in r.json()["error"]["message"]


def test_nan_infinity_and_out_of_bounds_are_refused(server, client, keys, digits_split):
    x = digits_split[1].x[:3].clone()
    x[1, 0, 2, 2] = math.nan
    body = json.dumps({"inputs": x.tolist()}).encode()  # json writes NaN, like many clients
    r = client.post(f"{server.url}/v1/predict", content=body, headers=bearer(keys["full"]))
    assert r.status_code == 422
    assert "sample(s) 1" in r.json()["error"]["message"] and "NaN" in r.json()["error"]["message"]
    x = digits_split[1].x[:3].clone()
    x[2, 0, 0, 0] = 1.5
    r = client.post(f"{server.url}/v1/predict", json={"inputs": x.tolist()},
                    headers=bearer(keys["full"]))
    assert r.status_code == 422
    assert "sample(s) 2" in r.json()["error"]["message"]
    assert "bounds" in r.json()["error"]["message"]
    r = client.post(f"{server.url}/v1/predict", content=b'{"inputs": [[[[1e999]]]]}',
                    headers=bearer(keys["full"]))
    assert r.status_code == 422


def test_oversize_body_gets_413(server, client, keys):
    big = b'{"inputs": [' + b"0," * 150_000 + b"0]}"
    r = client.post(f"{server.url}/v1/predict", content=big, headers=bearer(keys["full"]))
    assert r.status_code == 413
    assert "200000 bytes" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit holds on the stream too
        for _ in range(30):
            yield b" " * 10_000

    r = client.post(f"{server.url}/v1/predict", content=chunks(), headers=bearer(keys["full"]))
    assert r.status_code == 413


def test_too_many_samples_in_one_batch(gateway_config, start_gateway, client, keys):
    srv = start_gateway(gateway_config(validation={"max_batch": 4}))
    r = client.post(f"{srv.url}/v1/predict", json={"inputs": torch.zeros(5, 1, 8, 8).tolist()},
                    headers=bearer(keys["full"]))
    assert r.status_code == 422 and "limit is 4" in r.json()["error"]["message"]


def test_output_detail_follows_the_key(server, client, keys, digits_cnn, digits_split):
    x = digits_split[1].x[:30]
    truth = digits_cnn.probabilities(x)
    labels = truth.argmax(1).tolist()

    def ask(name):  # type: ignore[no-untyped-def]
        r = client.post(f"{server.url}/v1/predict", json={"inputs": x.tolist()},
                        headers=bearer(keys[name]))
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["label"] for p in preds] == labels  # every level keeps the answer
        return preds

    only = ask("labels")
    assert all(p["probabilities"] is None and p["top_k"] is None for p in only)
    topk = ask("topk")
    assert all(len(p["top_k"]) == 3 and p["probabilities"] is None for p in topk)
    assert [p["top_k"][0]["label"] for p in topk] == labels
    rounded = torch.tensor([p["probabilities"] for p in ask("rounded")])
    assert torch.allclose(rounded, truth, atol=0.005 + 1e-6)
    assert torch.equal(rounded, torch.round(rounded, decimals=2))
    perturbed = torch.tensor([p["probabilities"] for p in ask("perturbed")])
    assert perturbed.argmax(1).tolist() == labels
    assert torch.allclose(perturbed.sum(1), torch.ones(30), atol=1e-4)
    assert (perturbed - truth).abs().max() > 0.05  # really perturbed


def test_ood_inputs_are_flagged_or_rejected(gateway_config, start_gateway, client, keys,
                                            digits_split, validator, digits_cnn):
    noise = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x = torch.cat([digits_split[1].x[:8], noise])
    flag = start_gateway(gateway_config())
    r = client.post(f"{flag.url}/v1/predict", json={"inputs": x.tolist()},
                    headers=bearer(keys["full"]))
    assert r.status_code == 200
    flagged = [f for f in r.json()["flags"] if f["check"] == "ood"]
    assert flagged and set(flagged[0]["samples"]) & set(range(8, 16))
    reject = start_gateway(gateway_config(validation={"ood": "reject"}))
    r = client.post(f"{reject.url}/v1/predict", json={"inputs": noise.tolist()},
                    headers=bearer(keys["full"]))
    assert r.status_code == 422 and "out of distribution" in r.json()["error"]["message"]
    test_x = digits_split[1].x[:40]
    inside = test_x[~validator.predict_ood(validator.score(digits_cnn, test_x))][:5]
    ok = client.post(f"{reject.url}/v1/predict", json={"inputs": inside.tolist()},
                     headers=bearer(keys["full"]))
    assert ok.status_code == 200, ok.text


def test_bounds_flag_clips_instead_of_refusing(gateway_config, start_gateway, client, keys,
                                               digits_split, digits_cnn):
    srv = start_gateway(gateway_config(validation={"bounds": "flag"}))
    x = digits_split[1].x[:2].clone()
    x[1] += 0.5
    r = client.post(f"{srv.url}/v1/predict", json={"inputs": x.tolist()},
                    headers=bearer(keys["full"]))
    assert r.status_code == 200
    assert {"check": "bounds", "samples": [1]}.items() <= r.json()["flags"][0].items()
    assert r.json()["predictions"][1]["label"] == int(digits_cnn.predict(x.clamp(0, 1))[1])


def test_health_ready_metrics_openapi(server, client, keys, digits_split):
    assert client.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert client.get(f"{server.url}/readyz").status_code == 200
    client.post(f"{server.url}/v1/predict", json={"inputs": digits_split[1].x[:3].tolist()},
                headers=bearer(keys["full"]))
    client.post(f"{server.url}/v1/predict", json={"inputs": 1}, headers=bearer(keys["full"]))
    text = client.get(f"{server.url}/metrics", headers=bearer(keys["full"])).text
    assert 'mlwarden_requests_total{endpoint="predict",status="200"} 1.0' in text
    assert 'mlwarden_refusals_total{reason="invalid_input"} 1.0' in text
    assert "mlwarden_inputs_total 3.0" in text
    schema = client.get(f"{server.url}/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
    sample = body["schema"]["properties"]["inputs"]["items"]
    assert sample["minItems"] == sample["maxItems"] == 1
    assert sample["items"]["items"]["items"]["maximum"] == 1.0


def test_unknown_route_and_method_are_json_4xx(server, client):
    r = client.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get(f"{server.url}/v1/predict")
    assert r.status_code == 405


def test_every_decision_is_in_the_hash_chained_audit_log(server, client, keys, digits_split,
                                                         gateway_config):
    x = digits_split[1].x[:2]
    client.post(f"{server.url}/v1/predict", json={"inputs": x.tolist()},
                headers=bearer(keys["full"]))
    client.post(f"{server.url}/v1/predict", json={"inputs": x.tolist()})
    server.stop()
    path = gateway_config().audit_log.path
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    events = [e["event"] for e in entries]
    assert events[0] == "start" and events[-1] == "stop"
    ok = next(e for e in entries if e["event"] == "predict")
    assert ok["key"] == keys["full"].entry.prefix and ok["inputs_count"] == 2
    assert len(ok["input_sha256"]) == 64 and "inputs" not in ok  # no raw inputs by default
    refused = next(e for e in entries if e["event"] == "refuse")
    assert refused["status"] == 401 and refused["key"] is None
    assert verify_chain(path).ok


def test_revocation_in_key_file_applies_without_restart(gateway_config, start_gateway, client,
                                                        tmp_path, digits_split):
    from mlwarden.gateway.auth import add_key, revoke_key

    key_file = tmp_path / "keys.json"
    new = add_key(key_file, "svc", ("predict",))
    srv = start_gateway(gateway_config(auth={"key_file": str(key_file), "keys": []}))
    x = {"inputs": digits_split[1].x[:1].tolist()}
    assert client.post(f"{srv.url}/v1/predict", json=x, headers=bearer(new)).status_code == 200
    revoke_key(key_file, "svc")
    assert client.post(f"{srv.url}/v1/predict", json=x, headers=bearer(new)).status_code == 401


def test_unused_generated_key_is_unknown(server, client, digits_split):
    stranger = generate_key("x")
    r = client.post(f"{server.url}/v1/predict", json={"inputs": digits_split[1].x[:1].tolist()},
                    headers=bearer(stranger))
    assert r.status_code == 401


def test_black_box_oracle_is_served_without_ood(gateway_config, start_gateway, client, keys,
                                                digits_cnn, digits_split, validator):
    """An `Oracle` (e.g. ONNX) serves fine; a feature-based validator is refused up front."""
    from mlwarden.core.errors import ConfigError
    from mlwarden.core.oracle import ClassifierOracle
    from mlwarden.gateway.app import create_app

    oracle = ClassifierOracle(digits_cnn)
    with pytest.raises(ConfigError, match="black-box"):
        create_app(oracle, gateway_config(), validator=validator)
    srv = start_gateway(gateway_config(), model=oracle, use_validator=False)
    x = digits_split[1].x[:5]
    r = client.post(f"{srv.url}/v1/predict", json={"inputs": x.tolist()},
                    headers=bearer(keys["full"]))
    assert r.status_code == 200
    assert [p["label"] for p in r.json()["predictions"]] == digits_cnn.predict(x).tolist()
