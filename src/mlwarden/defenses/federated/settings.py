"""`FederatedSettings`: the one home of every default and range of a simulated federation.

``mlwarden federated simulate`` builds it from the flags given and ``[checks.federated]``
from its table; both hand it to `run_federated`. Every setting that cannot work is
refused here, before Ray starts or any round runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mlwarden.defenses.federated.attacks import ATTACKS
from mlwarden.defenses.federated.clients import MODELS
from mlwarden.defenses.federated.defences import STRATEGIES, tolerance_error
from mlwarden.defenses.federated.partition import Partition


class FederatedSettings(BaseModel):
    """A federation, its attackers and the strategies to compare under them."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("mlp", description=f"the federation's architecture: {', '.join(MODELS)}")
    data: str = Field("digits", description="built-in set (digits, breast_cancer) or data file")
    clients: int = Field(20, ge=2, le=1000, description="number of clients")
    rounds: int = Field(20, ge=1, le=10_000, description="federated rounds")
    partition: str = Field("iid", description="iid or dirichlet:ALPHA")
    strategies: list[str] = Field(
        default_factory=lambda: ["fedavg"],
        description=f"{', '.join(STRATEGIES)}; 'compare' for all",
    )
    malicious: float = Field(0.0, description="fraction of malicious clients, in [0, 1)")
    attack: str = Field("backdoor", description=f"what they do: {', '.join(ATTACKS)}")
    boost: float | None = Field(
        None,
        gt=0,
        description="update boost (gamma); default clients/malicious for backdoors, "
        "10 for scaled, 1 for sign_flip",
    )
    target: int = Field(0, ge=0, description="backdoor target class")
    poison_fraction: float = Field(
        0.5, gt=0, le=1, description="share of a backdoor client's data triggered"
    )
    trigger_size: int = Field(3, ge=1, description="BadNets patch size")
    local_epochs: int = Field(2, ge=1, description="local epochs per round")
    lr: float = Field(0.3, gt=0, description="local learning rate (SGD)")
    batch_size: int = Field(32, ge=1, description="local batch size")
    trim_beta: float = Field(0.2, ge=0, lt=0.5, description="trimmed: share cut on each side")
    clip_norm: float | None = Field(
        None,
        gt=0,
        description="clip: fixed norm bound (default: adaptive, the median norm); "
        "dp: the clipping norm (default 1.0)",
    )
    noise_multiplier: float = Field(0.5, gt=0, description="dp: noise std / clipping norm")
    delta: float = Field(1e-5, gt=0, lt=1, description="dp: delta of the reported epsilon")
    secagg_shares: int | None = Field(
        None, ge=2, description="secagg: SecAgg+ shares per client (default: min(clients, 10))"
    )
    baseline: bool = Field(True, description="also run attack-free FedAvg as the reference")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="held-out share for evaluation")
    max_asr: float = Field(0.1, ge=0, le=1, description="a finding when final backdoor ASR >= this")
    num_cpus: int | None = Field(None, ge=1, description="CPUs Ray may use (default: all)")
    engine: Literal["auto", "ray", "inprocess"] = Field(
        "auto",
        description="ray: Flower's simulation engine; inprocess: the same apps without Ray; "
        "auto: Ray, or in-process when Ray does not start",
    )
    seed: int = Field(0, description="seed of the split, clients, attackers and training")

    @field_validator("strategies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            names: list[str] = []
            for item in value:
                for name in str(item).split(","):
                    name = name.strip().lower()
                    if name == "compare":
                        names.extend(STRATEGIES)
                    elif name:
                        names.append(name)
            return list(dict.fromkeys(names))
        return value

    @field_validator("strategies")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [n for n in value if n not in STRATEGIES]
        if unknown:
            raise ValueError(
                f"unknown strategy {', '.join(repr(u) for u in unknown)}; choose from "
                f"{', '.join(STRATEGIES)} or 'compare'"
            )
        if not value:
            raise ValueError("name at least one strategy")
        return value

    @field_validator("attack")
    @classmethod
    def _attack(cls, value: str) -> str:
        if value not in ATTACKS:
            raise ValueError(f"unknown attack {value!r}; choose one of {', '.join(ATTACKS)}")
        return value

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str) -> str:
        try:
            return str(Partition.parse(value))
        except Exception as exc:  # noqa: BLE001 - the message is the user's answer
            raise ValueError(str(exc).removeprefix(f"--partition {value!r}: ")) from None

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; choose one of {', '.join(MODELS)}")
        return value

    @field_validator("malicious")
    @classmethod
    def _tolerated(cls, value: float, info: ValidationInfo) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"the malicious fraction must be in [0, 1), got {value:g}")
        clients = info.data.get("clients")
        if clients is None:
            return value
        count = int(round(value * clients))
        if value > 0 and count == 0:
            raise ValueError(
                f"{value:g} of {clients} clients rounds to none; "
                f"the smallest non-zero share is {1 / clients:g}"
            )
        for name in info.data.get("strategies") or []:
            problem = tolerance_error(name, clients, count)
            if problem:
                raise ValueError(problem + "; lower --malicious or add clients")
        return value

    @property
    def num_malicious(self) -> int:
        """Malicious clients: ``round(malicious * clients)``."""
        return int(round(self.malicious * self.clients))

    @property
    def effective_boost(self) -> float:
        if self.boost is not None:
            return self.boost
        if self.attack in ("backdoor", "stealthy_backdoor"):
            return self.clients / max(self.num_malicious, 1)
        return {"scaled": 10.0}.get(self.attack, 1.0)
