"""Run a federation through Flower's simulation engine and measure every round.

`run_simulation` (Flower 1.42's supported entry: a `ServerApp` and a `ClientApp` on
virtual SuperNodes, Ray underneath) is used as is. Ray's start-up costs ~20 s on this
two-core machine while a round of 20 tiny clients costs well under a second, so all
strategies of one comparison run inside *one* simulation: the `ServerApp` runs each
strategy's `Strategy.start` in turn from the same initial weights (clients are stateless
and seeded per round, so runs do not leak into each other), and SecAgg+ (Flower's legacy
workflow, `secagg.py`) runs in the same `ServerApp` after them.

Measured per round, centrally on held-out data: clean accuracy, backdoor attack success
rate (mlwarden's `attack_success_rate`), seconds, and bytes on the wire (the protobuf
size of every message the server sent and received, counted by `CountingGrid`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlwarden.core.errors import MlwardenError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.defenses.federated.attacks import BACKDOOR_ATTACKS, build_attack
from mlwarden.defenses.federated.clients import (
    ClientJob,
    ModelRecipe,
    build_client_app,
    get_weights,
    set_weights,
)
from mlwarden.defenses.federated.defences import Observed, build_strategy, client_dp_epsilon
from mlwarden.defenses.federated.partition import Partition, partition_indices
from mlwarden.defenses.federated.settings import FederatedSettings

if TYPE_CHECKING:
    from flwr.app import Message

    from mlwarden.core.classifier import Classifier
    from mlwarden.io.dataset import Dataset


@dataclass
class RoundMetrics:
    round: int
    accuracy: float
    asr: float
    seconds: float
    bytes: int


@dataclass
class StrategyRun:
    """One strategy's federation: its curve, its final weights and what it cost."""

    strategy: str
    attack: str
    rounds: list[RoundMetrics] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    epsilon: float | None = None
    honest_norm: float | None = None
    malicious_norm: float | None = None
    aggregates_seen: int | None = None  # secagg: distinct update vectors the strategy saw

    @property
    def label(self) -> str:
        return f"{self.strategy} (no attack)" if self.attack == "none" else self.strategy

    @property
    def final(self) -> RoundMetrics:
        return self.rounds[-1]

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rounds[1:])

    @property
    def bytes_per_round(self) -> float:
        trained = self.rounds[1:]
        return sum(r.bytes for r in trained) / max(len(trained), 1)


@dataclass
class FederatedResult:
    settings: FederatedSettings
    runs: list[StrategyRun]
    recipe: ModelRecipe
    spec: Any
    malicious_clients: list[int]
    wall_seconds: float
    startup_seconds: float
    engine: str = "ray"

    def classifier(self, run: StrategyRun) -> Classifier:
        """The final global model of ``run`` as an mlwarden `Classifier`."""
        return _classifier(self.recipe, self.spec, run.weights)


class CountingGrid:
    """A Flower `Grid` that counts the bytes of every message through `send_and_receive`."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):  # type: ignore[no-untyped-def]
        from flwr.common.serde import recorddict_to_proto

        messages = list(messages)
        self.bytes += sum(recorddict_to_proto(m.content).ByteSize() for m in messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.bytes += sum(
            recorddict_to_proto(r.content).ByteSize() for r in replies if not r.has_error()
        )
        return replies


def _classifier(recipe: ModelRecipe, spec: Any, weights: list[np.ndarray]) -> Classifier:
    from mlwarden.core.classifier import Classifier

    module = recipe.build()
    if weights:
        set_weights(module, weights)
    return Classifier(module, spec, device="cpu")


class Evaluator:
    """Central evaluation of the global model each round: accuracy, ASR, time, bytes."""

    def __init__(
        self,
        recipe: ModelRecipe,
        spec: Any,
        test: Dataset,
        settings: FederatedSettings,
        progress: ProgressCallback,
    ) -> None:
        from mlwarden.attacks.poisoning.triggers import PatchTrigger

        self.recipe, self.spec, self.test, self.settings = recipe, spec, test, settings
        self.progress = progress
        self.trigger = PatchTrigger(size=settings.trigger_size, position="bottom-right")

    def measure(self, weights: list[np.ndarray]) -> tuple[float, float]:
        from mlwarden.attacks.poisoning.metrics import attack_success_rate

        model = _classifier(self.recipe, self.spec, weights)
        accuracy = model.accuracy(self.test.x, self.test.y)
        asr = attack_success_rate(
            model, self.test.x, self.test.y, self.trigger, self.settings.target
        )
        return float(accuracy), float(asr)

    def callback(
        self, run: StrategyRun, grid: CountingGrid
    ) -> Callable[[int, list[np.ndarray]], None]:
        """A per-round hook that appends the round's metrics to ``run`` and reports progress."""
        state = {"t": time.perf_counter(), "bytes": grid.bytes}
        task = f"federated {run.label}"

        def on_round(server_round: int, weights: list[np.ndarray]) -> None:
            now = time.perf_counter()
            seconds = 0.0 if server_round == 0 else now - state["t"]
            sent = grid.bytes - int(state["bytes"])
            accuracy, asr = self.measure(weights)
            run.rounds.append(RoundMetrics(server_round, accuracy, asr, seconds, sent))
            run.weights = weights
            self.progress(task, server_round, self.settings.rounds)
            state["t"], state["bytes"] = time.perf_counter(), grid.bytes

        return on_round


def prepare(
    settings: FederatedSettings, data: Dataset | None = None
) -> tuple[ClientJob, Dataset, Any, list[int]]:
    """The clients' job, the held-out test set, the spec and the malicious ids."""
    from mlwarden.io.data import load_data

    if data is None:
        data = load_data(settings.data)
    num_classes = len(data.class_names)
    if settings.attack in BACKDOOR_ATTACKS and settings.target >= num_classes:
        raise ParameterError(
            f"--target {settings.target} is not a class of {data.name} (0..{num_classes - 1})"
        )
    train, test = data.split(1.0 - settings.test_fraction, seed=settings.seed)
    shards = partition_indices(
        train.y.numpy(), settings.clients, Partition.parse(settings.partition), settings.seed
    )
    rng = np.random.default_rng(settings.seed + 1)
    malicious = sorted(
        int(i) for i in rng.choice(settings.clients, settings.num_malicious, replace=False)
    )
    recipe = ModelRecipe(settings.model, tuple(train.x.shape[1:]), num_classes)
    recipe.build()  # refuse a model that does not fit the data before Ray starts
    boost = settings.effective_boost
    attacks = {
        settings.attack: build_attack(
            settings.attack,
            boost=boost,
            target=settings.target,
            poison_fraction=settings.poison_fraction,
            trigger_size=settings.trigger_size,
        )
    }
    if settings.attack in BACKDOOR_ATTACKS:
        # the trigger must fit the inputs: the poisoning code's own check, before any round
        from mlwarden.attacks.poisoning.triggers import PatchTrigger

        PatchTrigger(size=settings.trigger_size, position="bottom-right").origin(
            tuple(train.x.shape[1:])
        )
    job = ClientJob(
        x=train.x.numpy(),
        y=train.y.numpy(),
        shards=shards,
        recipe=recipe,
        malicious=frozenset(malicious),
        attacks=attacks,
        local_epochs=settings.local_epochs,
        lr=settings.lr,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )
    return job, test, data.spec(), malicious


def plan(settings: FederatedSettings) -> list[tuple[str, str]]:
    """(strategy, attack) pairs to run, in order, the attack-free baseline first."""
    attack = settings.attack if settings.num_malicious else "none"
    pairs = [(s, attack) for s in settings.strategies]
    if settings.baseline and attack != "none":
        pairs.insert(0, ("fedavg", "none"))
    return pairs


def backend_config(settings: FederatedSettings) -> dict[str, Any]:
    """Ray for CPU only: one CPU per client actor, ``num_cpus`` actors in all, quiet."""
    cpus = settings.num_cpus or max(1, os.cpu_count() or 1)
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            # a cluster of our own: without it ray.init joins any Ray already running on
            # the machine (another user's job) and dies with it
            "address": "local",
            "num_cpus": cpus,
            "num_gpus": 0,
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "error",
        },
    }


RAY_START_ATTEMPTS = 3


def start_ray(settings: FederatedSettings) -> None:
    """Start Ray before Flower does, retrying a start-up that timed out.

    Ray waits a fixed 30 s for its raylet to register; on a loaded two-core machine it
    sometimes needs longer and Flower's simulation then crashes before the first round.
    Flower's backend starts Ray only when none is running (`RayBackend.init_ray`), so
    starting it here with the same arguments (the ``init_args`` of `backend_config` and
    Flower's ``PYTHONPATH`` runtime env) and retrying is enough.
    """
    import ray

    if ray.is_initialized():
        return
    import sys

    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    args = backend_config(settings)["init_args"]
    last: Exception | None = None
    for _ in range(RAY_START_ATTEMPTS):
        try:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **args)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception here
            last = exc
            ray.shutdown()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    raise MlwardenError(
        f"Ray did not start in {RAY_START_ATTEMPTS} attempts (load average {load:.1f}): {last}",
        hint="retry when the machine is less busy",
    )


def quiet_flower() -> None:
    """Flower logs every round at INFO; the CLI's progress bar says the same thing."""
    logging.getLogger("flwr").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def run_federated(
    settings: FederatedSettings,
    *,
    data: Dataset | None = None,
    progress: ProgressCallback = null_progress,
    record: dict[str, Any] | None = None,
) -> FederatedResult:
    """Every strategy of ``settings`` against its attackers, through Flower's simulation
    engine (Ray) or, where Ray cannot start, the same apps on `InProcessGrid`.

    ``record`` (tests) receives what the server received under SecAgg+ (`secagg.run_secagg`).
    """
    from mlwarden.core.errors import require

    require("flwr", "federated")
    from flwr.app import ArrayRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    quiet_flower()
    job, test, spec, malicious = prepare(settings, data)
    evaluator = Evaluator(job.recipe, spec, test, settings, progress)
    initial = get_weights(job.recipe.build(seed=settings.seed))
    runs: list[StrategyRun] = []
    errors: list[BaseException] = []
    started = time.perf_counter()

    def main(grid: Grid, context: Context) -> None:
        np.random.seed(settings.seed)  # Flower's DP noise draws from numpy's global RNG
        try:
            for name, attack in plan(settings):
                if name == "secagg":
                    from mlwarden.defenses.federated.secagg import run_secagg

                    runs.append(
                        run_secagg(
                            grid, context, settings, evaluator, initial, attack, record=record
                        )
                    )
                    continue
                run = StrategyRun(name, attack)
                runs.append(run)
                counting = CountingGrid(grid)
                strategy = Observed(
                    build_strategy(
                        name,
                        clients=settings.clients,
                        malicious=settings.num_malicious,
                        trim_beta=settings.trim_beta,
                        clip_norm=settings.clip_norm,
                        noise_multiplier=settings.noise_multiplier,
                    )
                )
                hook = evaluator.callback(run, counting)

                def evaluate(
                    server_round: int, arrays: ArrayRecord, hook=hook, run=run
                ) -> MetricRecord:
                    hook(server_round, arrays.to_numpy_ndarrays())
                    last = run.rounds[-1]
                    return MetricRecord({"accuracy": last.accuracy, "asr": last.asr})

                strategy.start(
                    grid=counting,
                    initial_arrays=ArrayRecord([w.copy() for w in initial]),
                    num_rounds=settings.rounds,
                    train_config=_config({"attack": attack}),
                    evaluate_fn=evaluate,
                )
                _check_complete(run, strategy, settings)
                _summarise(run, strategy)
                if name == "dp":
                    run.epsilon = client_dp_epsilon(
                        settings.noise_multiplier, settings.rounds, 1.0, settings.delta
                    )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    pairs = plan(settings)
    engine = _engine(settings)
    client_app = build_client_app(job)
    if engine == "ray":
        import ray

        app = ServerApp()
        app.main()(main)
        try:
            _run_quietly(
                lambda: run_simulation(
                    server_app=app,
                    client_app=client_app,
                    num_supernodes=settings.clients,
                    backend_config=backend_config(settings),  # type: ignore[arg-type]
                )
            )
        finally:
            ray.shutdown()
    else:
        from flwr.app import RecordDict

        from mlwarden.defenses.federated.inprocess import InProcessGrid

        main(
            InProcessGrid(client_app, settings.clients),
            Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        )
    if errors:
        raise errors[0]
    if len(runs) != len(pairs) or any(not r.rounds for r in runs):
        raise MlwardenError("the Flower simulation ended before every strategy ran")
    startup = _startup(runs)
    return FederatedResult(
        settings,
        runs,
        job.recipe,
        spec,
        malicious,
        time.perf_counter() - started,
        startup,
        engine,
    )


def _engine(settings: FederatedSettings) -> str:
    """``ray`` (Flower's simulation engine) when it starts, else the in-process `Grid`.

    ``auto`` tries Ray first and falls back when Ray does not start (`start_ray`);
    ``ray`` makes that an error; ``inprocess`` never starts Ray.
    """
    if settings.engine == "inprocess":
        return "inprocess"
    try:
        start_ray(settings)
    except MlwardenError:
        if settings.engine == "ray":
            raise
        logging.getLogger("mlwarden").warning(
            "Ray did not start; running the federation in-process (the same ServerApp "
            "and ClientApp through mlwarden's InProcessGrid)"
        )
        return "inprocess"
    return "ray"


def _startup(runs: list[StrategyRun]) -> float:
    """Ray's start-up: the first round of the first run less a typical later round."""
    if not runs or len(runs[0].rounds) < 2:
        return 0.0
    later = [r.seconds for run in runs for r in run.rounds[2:]]
    startup = max(0.0, runs[0].rounds[1].seconds - (float(np.median(later)) if later else 0.0))
    runs[0].rounds[1].seconds -= startup  # the run's own time, as for every other run
    return startup


def _config(values: dict[str, Any]):  # type: ignore[no-untyped-def]
    from flwr.app import ConfigRecord

    return ConfigRecord(values)


def _run_quietly(fn: Callable[[], None]) -> None:
    """Run a simulation; Flower exits the process on some failures, which we turn into errors."""
    try:
        fn()
    except SystemExit as exc:
        raise MlwardenError(f"the Flower simulation stopped (exit {exc.code})") from None


def _check_complete(run: StrategyRun, strategy: Observed, settings: FederatedSettings) -> None:
    if len(run.rounds) != settings.rounds + 1:
        raise MlwardenError(
            f"{run.label}: {len(run.rounds) - 1} of {settings.rounds} rounds completed "
            "(a client failed; rerun with MLWARDEN_DEBUG=1 and see Flower's log)"
        )
    short = [
        r
        for r, seen in strategy.rounds.items()
        if len(seen.honest_norms) + len(seen.malicious_norms) != settings.clients
    ]
    if short:
        raise MlwardenError(
            f"{run.label}: round {short[0]} heard from fewer than {settings.clients} clients"
        )


def _summarise(run: StrategyRun, strategy: Observed) -> None:
    honest = [n for seen in strategy.rounds.values() for n in seen.honest_norms]
    bad = [n for seen in strategy.rounds.values() for n in seen.malicious_norms]
    run.honest_norm = float(np.median(honest)) if honest else None
    run.malicious_norm = float(np.median(bad)) if bad else None
