"""The OpenAPI schema states the auth header and the input limit the gateway enforces."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mlwarden.gateway.app import create_app


def test_schema_declares_the_api_key_header_and_the_enforced_limit(digits_cnn, gateway_config,
                                                                    keys, digits_split):
    config = gateway_config(rate_limit={"enabled": True, "per_key_burst": "100/second",
                                        "per_address_burst": "200/second"})
    assert config.validation.max_batch == 256 and config.max_inputs == 100
    app = create_app(digits_cnn, config)
    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()
        schemes = schema["components"]["securitySchemes"]
        assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        post = schema["paths"]["/v1/predict"]["post"]
        assert {"ApiKeyHeader": []} in post["security"]
        inputs = post["requestBody"]["content"]["application/json"]["schema"]["properties"]
        assert inputs["inputs"]["maxItems"] == 100
        key = next(iter(keys.values())).api_key
        x = digits_split[1].x[0].tolist()
        over = client.post("/v1/predict", headers={"X-API-Key": key}, json={"inputs": [x] * 101})
        assert over.status_code in (400, 422) and "limit is 100" in over.text
        # docs pages are off by default (CDN-loaded UI, no key needed)
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404


def test_docs_can_be_turned_on(digits_cnn, gateway_config):
    with TestClient(create_app(digits_cnn, gateway_config(docs=True))) as client:
        assert client.get("/docs").status_code == 200
