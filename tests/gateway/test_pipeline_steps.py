"""Each step of the predict pipeline on its own, without HTTP, on real objects.

The steps in request order: parse, authenticate, limit, validate, batch, harden, monitor,
log (see `mlwarden.gateway.pipeline`). The last test runs the argmax guard of rounding
through a real gateway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core import Classifier, InputSpec
from mlwarden.core.errors import ParameterError
from mlwarden.defenses.output import release, round_probabilities
from mlwarden.gateway.audit_log import AuditLog, AuditTrail, verify_chain
from mlwarden.gateway.auth import Authenticator, KeyStore, api_key_from_headers, client_id
from mlwarden.gateway.batching import BatchWorker, Ticket
from mlwarden.gateway.config import MonitoringConfig, RateLimitConfig
from mlwarden.gateway.errors import GatewayError
from mlwarden.gateway.metrics import GatewayMetrics
from mlwarden.gateway.monitoring import MonitorActions, MonitorBank
from mlwarden.gateway.ratelimit import ClientFlags, RateGate, RateLimiter
from mlwarden.gateway.runner import ModelRunner
from mlwarden.gateway.validation import (
    bounds_flag,
    ood_flag,
    parse_body,
    parse_inputs,
    read_body,
)


def _refusal(call, *args, **kw) -> GatewayError:  # type: ignore[no-untyped-def]
    """The `GatewayError` a step raises (awaited when the step is a coroutine)."""
    with pytest.raises(GatewayError) as err:
        out = call(*args, **kw)
        if asyncio.iscoroutine(out):
            asyncio.run(out)
    return err.value


# -- parse ----------------------------------------------------------------------------------


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


def test_parse_reads_the_body_within_its_limit() -> None:
    body = asyncio.run(read_body({"content-length": "6"}, _chunks(b'{"a"', b":1}"), 10))
    assert body == b'{"a":1}' and parse_body(body) == {"a": 1}
    declared = _refusal(read_body, {"content-length": "11"}, _chunks(b"x"), 10)
    streamed = _refusal(read_body, {}, _chunks(b"x" * 6, b"x" * 6), 10)
    assert declared.status == streamed.status == 413 and "10 bytes" in streamed.message
    assert _refusal(read_body, {"content-length": "ten"}, _chunks(), 10).status == 400
    bad = _refusal(parse_body, b'{"inputs": [1,')
    assert bad.status == 400 and "malformed JSON at line 1" in bad.message


# -- authenticate ---------------------------------------------------------------------------


def test_authenticate_reads_either_header_and_checks_the_scope(keys) -> None:  # type: ignore[no-untyped-def]
    full, metrics_only = keys["full"], keys["metrics_only"]
    assert api_key_from_headers({"x-api-key": "k1", "authorization": "Bearer k2"}) == "k1"
    assert api_key_from_headers({"authorization": "bearer  k2 "}) == "k2"
    assert api_key_from_headers({"authorization": "Basic dXNlcjpwYXNz"}) is None
    auth = Authenticator(KeyStore([full.entry, metrics_only.entry]))
    principal = auth({"authorization": f"Bearer {full.api_key}"}, "predict")
    assert principal is not None and principal.prefix == full.entry.prefix
    assert client_id(principal, "1.2.3.4") == full.entry.prefix
    assert _refusal(auth, {}, "predict").status == 401
    wrong = _refusal(auth, {"x-api-key": full.api_key[:-1]}, "predict")
    assert wrong.status == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    scope = _refusal(auth, {"x-api-key": metrics_only.api_key}, "predict")
    assert scope.status == 403 and "'predict' scope" in scope.message
    anonymous = Authenticator(KeyStore([]), enabled=False)
    assert anonymous({}, "predict") is None and client_id(None, "1.2.3.4") == "addr:1.2.3.4"


# -- limit ----------------------------------------------------------------------------------


def _gate(**limits: object) -> RateGate:
    cfg = RateLimitConfig(**{"per_key": None, "per_key_burst": None, "per_address": None,
                             "per_address_burst": None, **limits})
    return RateGate(RateLimiter(cfg, "2/minute"), ClientFlags(cfg.storage))


def test_limit_spends_inputs_and_refuses_with_the_right_status() -> None:
    gate = _gate(per_key="10/minute")
    headers = asyncio.run(gate.spend("k", "1.2.3.4", 6))
    assert headers["RateLimit-Limit"] == "10" and headers["RateLimit-Remaining"] == "4"
    over = _refusal(gate.spend, "k", "1.2.3.4", 5)
    assert over.status == 429 and over.code == "rate_limited" and "Retry-After" in over.headers
    huge = _refusal(gate.spend, "k", "1.2.3.4", 11)
    assert huge.status == 422 and huge.code == "batch_exceeds_rate_limit"
    # a throttled key also meets the throttle rate (2 per minute here)
    assert asyncio.run(gate.spend("t", "1.2.3.4", 2, throttled=True))
    assert _refusal(gate.spend, "t", "1.2.3.4", 1, throttled=True).status == 429


def test_limit_blocks_flagged_clients_and_guards_against_guessing() -> None:
    gate = _gate(per_address="2/minute")
    assert asyncio.run(gate.admit("c")) is False
    asyncio.run(gate.flag("throttled", "c", 60))
    assert asyncio.run(gate.admit("c")) is True
    asyncio.run(gate.flag("blocked", "c", 60))
    refused = _refusal(gate.admit, "c")
    assert refused.status == 403 and refused.code == "blocked"
    asyncio.run(gate.failed_auth("5.6.7.8"))
    asyncio.run(gate.failed_auth("5.6.7.8"))
    guessing = _refusal(gate.failed_auth, "5.6.7.8")
    assert guessing.status == 429 and "this address" in guessing.message
    assert asyncio.run(gate.ping())


# -- validate -------------------------------------------------------------------------------


def test_validate_checks_inputs_then_the_ood_verdict(digits_spec, digits_split) -> None:  # type: ignore[no-untyped-def]
    x = digits_split[1].x[:3].clone()
    x[2, 0, 0, 0] = 1.5
    payload = {"inputs": x.tolist()}
    refused = _refusal(parse_inputs, payload, digits_spec, 8, "reject")
    assert refused.status == 422 and "sample(s) 2" in refused.message
    batch = parse_inputs(payload, digits_spec, 8, "flag")
    assert batch.x.shape == (3, 1, 8, 8) and batch.x.max() == 1.0 and batch.out_of_bounds == [2]
    flag = bounds_flag(batch, "flag")
    assert flag is not None and flag.visible and flag.public()["samples"] == [2]
    assert not bounds_flag(batch, "log").visible  # type: ignore[union-attr]
    assert _refusal(parse_inputs, payload, digits_spec, 2).message.endswith(
        "the limit is 2 per request: send smaller batches")
    assert ood_flag(None, 3.0, "reject") is None and ood_flag([False], 3.0, "reject") is None
    ood = ood_flag([False, True, True], 3.0, "flag")
    assert ood is not None and ood.samples == [1, 2] and "threshold 3" in ood.detail
    reject = _refusal(ood_flag, [True, False], 3.0, "reject")
    assert reject.status == 422 and reject.code == "out_of_distribution"


# -- batch ----------------------------------------------------------------------------------


def test_batch_answers_each_request_at_its_own_output_level(digits_cnn, digits_split, validator,
                                                            knn_threshold) -> None:  # type: ignore[no-untyped-def]
    x = digits_split[1].x[:12]
    noise = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x = torch.cat([x, noise])
    bank = MonitorBank(extraction=None, max_clients=10,
                       query_attack={"threshold": knn_threshold, "k": 2, "hits_to_alert": 1})
    worker = BatchWorker(ModelRunner(digits_cnn, validator), bank, partial(release, k=2),
                         ood_threshold=validator.threshold_)
    # a: 3 rows of full probabilities, b: 4 rows of labels, a again: 5 rows rounded; c: top-k
    items = [(Ticket("a", "probabilities"), 3), (Ticket("b", "labels"), 4),
             (Ticket("a", "rounded"), 5), (Ticket("c", "top_k"), 2)]
    answers = worker(x, items)
    truth = digits_cnn.probabilities(x)
    labels = truth.argmax(1).tolist()
    ood = validator.predict_ood(validator.score(digits_cnn, x)).tolist()
    assert [a.labels for a in answers] == [labels[:3], labels[3:7], labels[7:12], labels[12:]]
    assert [a.ood for a in answers] == [ood[:3], ood[3:7], ood[7:12], ood[12:]]
    assert torch.allclose(torch.tensor(answers[0].probabilities), truth[:3], atol=1e-6)
    assert answers[1].probabilities is None and answers[1].top_k is None
    rounded = torch.tensor(answers[2].probabilities, dtype=torch.float64)
    assert torch.equal(rounded, torch.round(rounded, decimals=2))
    assert rounded.argmax(1).tolist() == labels[7:12]
    values, top = answers[3].top_k  # type: ignore[misc]
    assert [t[0] for t in top] == labels[12:] and all(len(v) == 2 for v in values)
    # the monitors saw each client's rows together: a's 8 rows in one update
    assert bank._clients["a"].query_attack.queries_ == 8  # type: ignore[union-attr]
    # a client's alerts go to its first request; every request of it knows them
    assert answers[2].alerts == [] and answers[2].group_alerts == answers[0].alerts


# -- harden ---------------------------------------------------------------------------------


def test_harden_releases_each_level_and_keeps_the_label(digits_cnn, digits_split) -> None:  # type: ignore[no-untyped-def]
    p = digits_cnn.probabilities(digits_split[1].x[:40])
    labels = p.argmax(1)
    assert release(p, "labels").probabilities is None
    assert release(p, "probabilities").probabilities is p
    rounded = release(p, "rounded", decimals=1).probabilities
    assert rounded is not None and rounded.dtype == torch.float64
    assert torch.equal(rounded.argmax(1), labels)
    assert (rounded - p.double()).abs().max() <= 0.1 + 1e-9
    perturbed = release(p, "perturbed", beta=0.7, gamma=0.4).probabilities
    assert perturbed is not None and torch.equal(perturbed.argmax(1), labels)
    assert (perturbed - p).abs().max() > 0.05
    values, idx = release(p, "top_k", k=4).top_k  # type: ignore[misc]
    assert values.shape == idx.shape == (40, 4) and torch.equal(idx[:, 0], labels)
    assert json.dumps(values[0].tolist()) == json.dumps([round(v, 6) for v in values[0].tolist()])
    with pytest.raises(ParameterError, match="output level"):
        release(p, "everything")


def test_rounding_breaks_the_ties_it_creates_in_favour_of_the_label() -> None:
    # label 1 rounded down into a tie: raised one step; label 1 rounded up into a tie with
    # an entry rounded up too: that entry lowered one step; the same for a label that comes
    # first in its row (no reader has to know how argmax breaks ties)
    p = torch.tensor([[0.499, 0.501, 0.0], [0.47, 0.49, 0.04], [0.51, 0.49, 0.0],
                      [0.5, 0.3, 0.2]])
    q = round_probabilities(p, 1)
    assert q.argmax(1).tolist() == [1, 1, 0, 0]
    assert torch.allclose(q, torch.tensor([[0.5, 0.6, 0.0], [0.4, 0.5, 0.0], [0.6, 0.5, 0.0],
                                           [0.5, 0.3, 0.2]]))
    assert torch.equal(round_probabilities(torch.tensor([[0.33, 0.34, 0.33]]), 0),
                       torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.equal(round_probabilities(torch.tensor([[0.34, 0.33, 0.33]]), 0),
                       torch.tensor([[1.0, 0.0, 0.0]]))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), decimals=st.integers(0, 3), scale=st.floats(0.01, 8.0),
       classes=st.integers(2, 12))
def test_rounding_never_changes_the_top1_and_stays_within_a_step(seed, decimals, scale,  # type: ignore[no-untyped-def]
                                                                 classes) -> None:
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(64, classes, generator=g, dtype=torch.float64) * scale, 1)
    q = round_probabilities(p, decimals)
    top2 = q.topk(2, dim=1).values
    assert torch.equal(q.argmax(1), p.argmax(1)) and bool((top2[:, 0] > top2[:, 1]).all())
    assert torch.equal(q, torch.round(q, decimals=decimals))  # on the grid
    assert (q - p).abs().max() < 10.0 ** -decimals + 1e-9


# -- monitor --------------------------------------------------------------------------------


def _trail(tmp_path: Path) -> AuditTrail:
    return AuditTrail(AuditLog(tmp_path / "audit.jsonl", interval=0.001), "m")


def _entries(trail: AuditTrail) -> list[dict[str, object]]:
    assert trail.log is not None
    trail.log.flush()
    return [json.loads(line) for line in trail.log.path.read_text().splitlines()]


def test_monitor_records_alerts_and_throttles_or_blocks(tmp_path: Path) -> None:
    bank = MonitorBank(extraction={"max_ood_rate": 0.2, "ood_min_samples": 20},
                       query_attack=None)
    x = torch.rand(30, 4, generator=torch.Generator().manual_seed(0))
    (alert,) = bank.observe("c", x, torch.zeros(30, dtype=torch.long),
                            torch.ones(30, dtype=torch.bool))
    gate = _gate()
    trail, metrics = _trail(tmp_path), GatewayMetrics()
    throttle = MonitorActions(MonitoringConfig.model_validate(
        {"extraction": {"action": "throttle"}, "block_seconds": 60}),
        gate.flag, audit=trail, metrics=metrics)
    asyncio.run(throttle([alert], [alert], "c", "c", "1.2.3.4"))  # served, now throttled
    assert throttle.raised == [alert] and gate.flags.has("throttled", "c")
    assert not gate.flags.has("blocked", "c")
    block = MonitorActions(MonitoringConfig(), gate.flag, audit=trail, metrics=metrics)
    refused = _refusal(block, [alert], [alert], "c", "c", "1.2.3.4")
    assert refused.status == 403 and refused.code == "blocked" and gate.flags.has("blocked", "c")
    # the client's other requests in the same batch carry no alert, and are refused too
    assert _refusal(block, [], [alert], "c").code == "blocked"
    assert len(block.raised) == 1  # recorded once, by the request that carried it
    asyncio.run(block([], [], "d"))  # no alert: nothing happens
    assert metrics.alerts.labels("extraction")._value.get() == 2
    logged = [e for e in _entries(trail) if e["event"] == "alert"]
    assert [e["action"] for e in logged] == ["throttle", "block"]
    assert logged[0]["detector"] == "extraction" and logged[0]["queries"] == 30


# -- log ------------------------------------------------------------------------------------


def test_log_writes_one_chained_entry_per_decision(tmp_path: Path, digits_split) -> None:  # type: ignore[no-untyped-def]
    trail = _trail(tmp_path)
    x = digits_split[1].x[:2].numpy()
    flag = bounds_flag(parse_inputs({"inputs": (x + 0.5).tolist()}, InputSpec(
        shape=(1, 8, 8), class_names=tuple("0123456789")), 4, "log"), "log")
    trail.event("start")
    trail.refused(key=None, address="1.2.3.4", status=401, reason="unauthorized",
                  detail="missing or invalid API key", input_sha256=None)
    trail.predicted(key="k", address="1.2.3.4", inputs=x, input_sha256="ab" * 32,
                    labels=[3, 4], flags=[flag], output="rounded")  # type: ignore[list-item]
    trail.log.close()  # type: ignore[union-attr]
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in entries] == ["start", "refuse", "predict"]
    assert all(e["model"] == "m" for e in entries)
    assert entries[1]["reason"] == "unauthorized" and entries[1]["status"] == 401
    pred = entries[2]
    assert pred["inputs_count"] == 2 and pred["labels"] == [3, 4] and pred["output"] == "rounded"
    assert pred["flags"] == [{"check": "bounds", "samples": [0, 1]}] and "inputs" not in pred
    assert verify_chain(tmp_path / "audit.jsonl").ok
    with_inputs = AuditTrail(AuditLog(tmp_path / "raw.jsonl"), "m", include_inputs=True)
    with_inputs.predicted(key=None, address="a", inputs=x, input_sha256="", labels=[3, 4],
                          flags=[], output="labels")
    with_inputs.close()
    raw = json.loads((tmp_path / "raw.jsonl").read_text())
    assert torch.allclose(torch.tensor(raw["inputs"]), torch.from_numpy(x), atol=1e-6)
    off = AuditTrail(None, "m")
    off.event("start")  # audit disabled: nothing to write, nothing raised
    off.close()


# -- the argmax guard through the gateway ---------------------------------------------------


def test_rounded_output_through_the_gateway_keeps_the_top1(gateway_config, start_gateway,
                                                          client, keys) -> None:  # type: ignore[no-untyped-def]
    """Scores a hair apart round to a tie at 2 decimals; the released vector still ranks the
    model's label first (the gateway's old inline rounding answered [0.5, 0.5] here)."""
    linear = torch.nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(2))
        linear.bias.zero_()
    spec = InputSpec(shape=(2,), bounds=(0.0, 1.0), class_names=("a", "b"))
    model = Classifier(linear.eval(), spec, name="two-logits")
    x = torch.tensor([[0.0, 0.004], [0.0, 0.012], [0.004, 0.0], [0.003, 0.0], [0.0, 0.9]])
    cfg = gateway_config(monitoring={"extraction": {"enabled": False},
                                     "query_attack": {"enabled": False}})
    srv = start_gateway(cfg, model=model, use_validator=False)
    r = client.post(f"{srv.url}/v1/predict", json={"inputs": x.tolist()},
                    headers={"X-API-Key": keys["rounded"].api_key})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    labels = model.predict(x).tolist()
    assert [p["label"] for p in preds] == labels == [1, 1, 0, 0, 1]
    rounded = torch.tensor([p["probabilities"] for p in preds], dtype=torch.float64)
    assert rounded.argmax(1).tolist() == labels  # rounding never changes the top-1
    assert bool((rounded[:, 0] != rounded[:, 1]).all())  # and leaves no tie to guess from
    assert torch.equal(rounded, torch.round(rounded, decimals=2))
    assert preds[0]["probabilities"] == [0.5, 0.51]  # one step up for the rounded-down label
