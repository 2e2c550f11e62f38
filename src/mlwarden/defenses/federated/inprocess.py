"""Flower's `Grid`, delivered to the `ClientApp` in this process: the engine when Ray cannot run.

Measured on this project's shared two-core machine (docs/federated.md): Ray's start-up
takes 20-80 s, and at load averages around 20-40 its raylet misses Ray's fixed 30 s
registration deadline three times out of three, so ``run_simulation`` crashes before
the first round. Nothing else of a simulation needs Ray: the strategies
(`Strategy.start`, `SecAggPlusWorkflow`), the messages, the `ClientApp` with its mods
and each node's `Context` are Flower's own. `InProcessGrid` is the one piece we write:
Flower's `Grid` interface whose ``send_and_receive`` calls the `ClientApp` on each
node's `Context` in turn, as the simulation's workers do (``vce_api.worker``), on a
serialised copy of each message as the transport would deliver it, and keeps each
node's state between messages (SecAgg+ keeps its keys there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

NODE_ID_BASE = 1_000_003
"""Node ids: distinct positive integers, as the simulation draws (SecAgg+ orders by them)."""


@dataclass
class _Run:
    run_id: int


class InProcessGrid(Grid):
    """``num_nodes`` virtual SuperNodes running ``client_app`` here, one message at a time."""

    def __init__(self, client_app: Any, num_nodes: int, run_id: int = 1) -> None:
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        # the identity Flower's ServerApp runtime gives its process (`compat/server/app.py`);
        # messages read it when they are built
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self._app = client_app
        self._run = _Run(run_id)
        self.contexts = {
            NODE_ID_BASE + i: Context(
                run_id=run_id,
                node_id=NODE_ID_BASE + i,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        self._run = _Run(int(run.run_id))

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[message.metadata.message_id] = self._deliver(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))

    def _deliver(self, message: Message) -> Message:
        context = self.contexts[message.metadata.dst_node_id]
        try:
            reply = self._app(_over_the_wire(message), context)
        except Exception as exc:  # noqa: BLE001 - a failing client is an error reply, as in Flower
            reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return _over_the_wire(reply)


def _over_the_wire(message: Message) -> Message:
    """``message`` serialised and parsed back, as Flower's transport delivers it.

    Not a formality: the server may send one record object to many nodes, and
    ``secaggplus_mod`` pops keys from what it receives; each node needs its own copy.
    """
    from flwr.common.serde import message_from_proto, message_to_proto

    return message_from_proto(message_to_proto(message))
