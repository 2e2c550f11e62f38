"""Schemathesis fuzzes the gateway's OpenAPI schema over real HTTP: no 5xx, ever.

Both generation modes run: positive (bodies that match the schema) and negative
(bodies that violate it: wrong types, shapes, missing fields, out-of-range numbers).
"""

from __future__ import annotations

import pytest


@pytest.mark.peers
def test_schemathesis_finds_no_server_errors(gateway_config, start_gateway, keys):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings

    srv = start_gateway(gateway_config(monitoring={"extraction": {"action": "log"},
                                                   "query_attack": {"action": "log"}}))
    schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
    headers = {"Authorization": f"Bearer {keys['full'].api_key}"}
    statuses: list[int] = []
    failures: list[str] = []

    for result in schema.get_all_operations():
        op = result.ok()
        for mode in schemathesis.GenerationMode:
            if mode is schemathesis.GenerationMode.NEGATIVE and op.method.upper() == "GET":
                continue  # nothing to violate in a parameterless GET

            @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: object) -> None:
                response = case.call(headers=headers)  # type: ignore[attr-defined]
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.path}: "  # type: ignore[attr-defined]
                                    f"{response.status_code} {response.text[:200]}")

            run()
    assert failures == []
    assert len(statuses) >= 60
    assert 200 in statuses and any(400 <= s < 500 for s in statuses)  # both paths exercised
