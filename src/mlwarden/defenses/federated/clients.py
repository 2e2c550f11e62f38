"""The clients of a simulated federation: local training, honest or malicious.

Flower runs a `ClientApp` on each simulated node (in Ray actors); the app is pickled to
them, so everything a client needs travels in `ClientJob`: the training arrays (numpy),
each client's sample indices, which clients are malicious and the attacks. A client's
work is a deterministic function of (seed, round, client id), so the federation is
deterministic whatever order Ray schedules the clients in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlwarden.core.errors import ParameterError
from mlwarden.defenses.federated.attacks import ClientAttack, update_norm

if TYPE_CHECKING:
    import torch.nn as nn

MODELS = ("mlp", "small_cnn")


@dataclass(frozen=True)
class ModelRecipe:
    """How to build the federation's model: a reference architecture of `mlwarden.models`."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    hidden: tuple[int, ...] = (64,)

    def build(self, seed: int = 0) -> nn.Module:
        import torch
        from torch import nn

        from mlwarden.models import MLP, SmallCNN

        torch.manual_seed(seed)
        if self.name == "mlp":
            width = int(np.prod(self.input_shape))
            return nn.Sequential(nn.Flatten(), MLP(width, self.num_classes, self.hidden))
        if self.name == "small_cnn":
            if len(self.input_shape) != 3 or self.input_shape[1] != self.input_shape[2]:
                raise ParameterError(
                    f"model 'small_cnn' needs square (C, H, W) images, the data has shape "
                    f"{self.input_shape}; use --model mlp"
                )
            return SmallCNN(self.input_shape[0], self.num_classes, image_size=self.input_shape[1])
        raise ParameterError(f"unknown model '{self.name}'; choose one of {', '.join(MODELS)}")


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    import torch

    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise ParameterError(f"the model has {len(keys)} arrays, the update {len(weights)}")
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
    )


def client_seed(seed: int, server_round: int, client: int) -> int:
    """One seed per (run seed, round, client), independent of scheduling order."""
    return (seed * 1_000_003 + server_round * 10_007 + client) % (2**31 - 1)


@dataclass
class ClientJob:
    """Everything a simulated client needs, picklable for the Ray actors."""

    x: np.ndarray
    y: np.ndarray
    shards: list[np.ndarray]
    recipe: ModelRecipe
    malicious: frozenset[int]
    attacks: dict[str, ClientAttack] = field(default_factory=dict)
    local_epochs: int = 2
    lr: float = 0.01
    batch_size: int = 32
    seed: int = 0

    def _train(self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, seed: int):  # type: ignore[no-untyped-def]
        """Local SGD from the global weights, FedAvg's client solver (McMahan et al. 2017).

        Not `core.training.fit`, which uses Adam: Adam's per-coordinate scaling makes every
        local update dense (each weight moves by about the learning rate), and the
        noise of a boosted dense update, which honest averaging would cancel, swamps the
        global model instead of replacing it with the attacker's.
        """
        import torch
        from torch import nn

        from mlwarden.core.seeding import make_generator

        torch.set_num_threads(1)
        torch.manual_seed(seed)
        model = self.recipe.build()
        set_weights(model, weights)
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr)
        gen = make_generator(seed)
        model.train()
        for _ in range(self.local_epochs):
            order = torch.randperm(len(xs), generator=gen)
            for start in range(0, len(xs), self.batch_size):
                idx = order[start : start + self.batch_size]
                loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        return get_weights(model)

    def fit_client(
        self, client: int, weights: list[np.ndarray], server_round: int, attack: str
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Client ``client``'s new local weights and the metrics it reports."""
        seed = client_seed(self.seed, server_round, client)
        idx = self.shards[client]
        x, y = self.x[idx], self.y[idx]
        is_malicious = client in self.malicious and attack != "none"
        threat = self.attacks[attack] if is_malicious else ClientAttack()
        px, py = threat.poison_data(x, y, self.recipe.num_classes, seed)
        local = self._train(weights, px, py, seed)
        delta = [a - b for a, b in zip(local, weights, strict=True)]

        def honest_norm() -> float:
            # The stealthy attacker's yardstick: what an honest update of its own clean
            # data looks like this round.
            clean = self._train(weights, x, y, seed)
            return update_norm([a - b for a, b in zip(clean, weights, strict=True)])

        sent = threat.poison_update(delta, honest_norm)
        new = [(w + d).astype(w.dtype) for w, d in zip(weights, sent, strict=True)]
        metrics = {
            "num-examples": len(idx),
            "weight": 1.0,  # uniform weights: what client-level DP's sensitivity assumes
            "partition-id": client,
            "malicious": int(is_malicious),
        }
        return new, metrics


def build_client_app(job: ClientJob):  # type: ignore[no-untyped-def]
    """One Flower `ClientApp` for every strategy of a comparison, SecAgg+ included.

    Message-API strategies send ``arrays`` + ``config``; Flower 1.42's SecAgg+ exists only
    for the legacy workflow, which sends legacy ``fitins`` records through
    ``secaggplus_mod``. Serving both from one app lets a whole comparison share one
    simulation, so Ray starts once (it costs far more than the rounds here). The server
    names the attack of the run in the config (``attack``), so the attack-free baseline
    and the attacked runs share the app too.
    """
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.common import (
        Code,
        FitRes,
        Status,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.compat.common import recorddict_compat as compat

    app = ClientApp(mods=[_secagg_when_asked])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        client = int(context.node_config["partition-id"])
        if "fitins.parameters" in msg.content.array_records:  # the legacy SecAgg+ workflow
            fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            weights = parameters_to_ndarrays(fitins.parameters)
            config = fitins.config
            new, metrics = job.fit_client(
                client, weights, int(config["server-round"]), str(config["attack"])
            )
            fitres = FitRes(
                status=Status(Code.OK, ""),
                parameters=ndarrays_to_parameters(new),
                num_examples=int(metrics["num-examples"]),
                metrics={"partition-id": client},
            )
            return Message(content=compat.fitres_to_recorddict(fitres, False), reply_to=msg)
        config = msg.content["config"]
        weights = msg.content["arrays"].to_numpy_ndarrays()
        new, metrics = job.fit_client(
            client, weights, int(config["server-round"]), str(config["attack"])
        )
        content = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    return app


def _secagg_when_asked(msg, context, call_next):  # type: ignore[no-untyped-def]
    """Flower's ``secaggplus_mod``, for the messages of the SecAgg+ workflow only."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)
