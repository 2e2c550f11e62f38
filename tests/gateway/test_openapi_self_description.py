"""The OpenAPI schema states the auth header and the input limit the gateway enforces."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
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
        # docs pages are off by default
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_can_be_turned_on_and_load_nothing_from_another_host(digits_cnn, gateway_config,
                                                                  page):
    with TestClient(create_app(digits_cnn, gateway_config(docs=True))) as client:
        html = client.get(page)
        assert html.status_code == 200
        pattern = r"""(?:src|href|spec-url)=["']([^"']+)["']|url: *["']([^"']+)["']"""
        urls = [a or b for a, b in re.findall(pattern, html.text)]
        assert len(urls) >= 2 and all(u.startswith("/") for u in urls), urls  # no CDN
        for url in urls:
            assert client.get(url).status_code == 200, url


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_docs_render_offline_in_headless_chromium(digits_cnn, gateway_config, tmp_path):
    """The page renders the operations with no network: everything comes from the gateway."""
    import threading

    import uvicorn

    app = create_app(digits_cnn, gateway_config(docs=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        dom = subprocess.run(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={tmp_path}", "--virtual-time-budget=15000", "--dump-dom",
             f"http://127.0.0.1:{port}/docs"],
            capture_output=True, text=True, timeout=90,
        )
        dom = dom.stdout
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    # Swagger UI drew the operations (it breaks paths with <wbr>, so match the pieces)
    drawn = re.sub(r"<wbr>|\u200b", "", dom)
    assert 'class="opblock-summary-path"' in drawn and "/v1/predict" in drawn, drawn[-2000:]
