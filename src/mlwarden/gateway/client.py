"""`HttpOracle`: a deployed gateway seen as an `Oracle`, so attacks stress-test the endpoint.

Uses httpx only (no FastAPI). Batches queries to the server's batch limit, waits on 429 as
``Retry-After`` says (bounded by ``max_retries`` and ``max_wait``), and turns refusals into
`OracleError` carrying the server's own message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from mlwarden.core.errors import OracleError, ParameterError, require
from mlwarden.core.oracle import Oracle, OracleOutput
from mlwarden.core.spec import InputSpec


class HttpOracle(Oracle):
    """Query ``POST {url}/v1/predict`` with an API key.

    Several ``url``s (replicas of one gateway) take the requests in turn, as a round-robin
    load balancer would: how an attacker spreads its queries across replicas."""

    def __init__(
        self,
        url: str | Sequence[str],
        api_key: str | None,
        spec: InputSpec,
        output: OracleOutput = "probabilities",
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        max_wait: float = 60.0,
        batch_size: int = 32,
        budget: int | None = None,
    ) -> None:
        super().__init__(spec, output, budget)
        if batch_size <= 0:
            raise ParameterError(f"batch_size must be positive, got {batch_size}")
        if max_retries < 0:
            raise ParameterError(f"max_retries must be >= 0, got {max_retries}")
        httpx = require("httpx", "serve")
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ParameterError("url: give at least one gateway URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.url = self.urls[0]
        self.name = ",".join(self.urls)
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.max_wait = max_wait
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)  # type: ignore[attr-defined]
        self.requests = 0
        # inputs the gateway answered, counted per request: unlike ``queries`` (whole calls),
        # it includes the requests of a call that a refusal cut short
        self.answered = 0
        self.last_flags: list[dict[str, Any]] = []

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self._post(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return torch.cat(outs) if outs else torch.empty(0)

    def _post(self, x: torch.Tensor) -> torch.Tensor:
        import httpx

        body = {"inputs": x.detach().cpu().float().tolist()}
        for attempt in range(self.max_retries + 1):
            url = self.urls[self.requests % len(self.urls)]
            try:
                resp = self._client.post(f"{url}/v1/predict", json=body)
            except httpx.HTTPError as exc:
                raise OracleError(f"gateway at {url} unreachable: {exc}") from None
            self.requests += 1
            if resp.status_code == 429 and attempt < self.max_retries:
                time.sleep(min(_retry_after(resp), self.max_wait))
                continue
            if resp.status_code != 200:
                raise OracleError(f"gateway refused the query ({resp.status_code}): "
                                  f"{_message(resp)}")
            out = self._decode(resp.json(), len(x))
            self.answered += len(x)
            return out
        raise OracleError("unreachable")  # pragma: no cover

    def _decode(self, payload: Any, n: int) -> torch.Tensor:
        try:
            preds = payload["predictions"]
            self.last_flags = list(payload.get("flags") or [])
            if len(preds) != n:
                raise OracleError(f"gateway answered {len(preds)} predictions for {n} inputs")
            if self.output == "labels":
                return torch.tensor([int(p["label"]) for p in preds], dtype=torch.long)
            rows = []
            for p in preds:
                if p.get("probabilities") is not None:
                    rows.append([float(v) for v in p["probabilities"]])
                elif p.get("top_k") is not None:  # spread the withheld mass evenly
                    row = [0.0] * self.num_classes
                    for t in p["top_k"]:
                        row[int(t["label"])] = float(t["probability"])
                    rest = max(0.0, 1.0 - sum(row))
                    missing = [i for i, v in enumerate(row) if v == 0.0]
                    for i in missing:
                        row[i] = rest / len(missing)
                    rows.append(row)
                else:
                    raise OracleError(
                        "this API key only receives labels; create the oracle with output='labels'"
                    )
            return torch.tensor(rows, dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise OracleError(f"gateway answered malformed JSON: missing {exc}") from None


def _retry_after(resp: Any) -> float:
    try:
        return max(float(resp.headers.get("Retry-After", "1")), 0.0)
    except ValueError:
        return 1.0


def _message(resp: Any) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except Exception:  # not our JSON: show the start of the body
        return resp.text[:200] or resp.reason_phrase
