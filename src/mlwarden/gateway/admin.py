"""Admin routes behind the ``admin`` scope: the blocks and throttles of this gateway.

With ``memory://`` storage the monitors' flags live in the gateway process, so
``mlwarden gateway blocks list|lift`` reaches them here; with Redis the CLI works on the
storage directly and these routes answer the same. Every call is audited (a lift names
the key that lifted), refusals like any other. With auth disabled they refuse: anyone
could otherwise lift their own block.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, Request
from fastapi import Path as PathParam

from mlwarden.gateway.errors import forbidden

if TYPE_CHECKING:
    from mlwarden.gateway.app import GatewayState
    from mlwarden.gateway.auth import Principal
    from mlwarden.gateway.pipeline import PredictPipeline

# what `blocks list` shows: a key's prefix, or the address of a failed_auth block
CLIENT_PATTERN = r"^([A-Za-z0-9]{4,32}|addr:[0-9A-Za-z.:_%-]{1,64})$"


def install_admin_routes(app: FastAPI, state: GatewayState, pipeline: PredictPipeline) -> None:
    """``GET /v1/admin/blocks`` and ``DELETE /v1/admin/blocks/{client}``."""

    def address(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def admin(request: Request) -> Principal | None:
        if not state.config.auth.enabled:  # else a blocked client could lift its own block
            err = forbidden("the admin routes need [gateway.auth] enabled")
            pipeline.refused(err, None, address(request), "/v1/admin/blocks")
            raise err
        return await pipeline.guard(request.headers, address(request), "admin",
                                    "/v1/admin/blocks")

    @app.get("/v1/admin/blocks", summary="Blocked and throttled clients (scope admin)")
    async def list_blocks(request: Request) -> dict[str, object]:
        await admin(request)
        return {"blocks": [asdict(b) for b in state.flags.blocks()]}

    @app.delete("/v1/admin/blocks/{client}", summary="Lift a client's blocks (scope admin)")
    async def lift_block(client: Annotated[str, PathParam(pattern=CLIENT_PATTERN)],
                         request: Request) -> dict[str, object]:
        who = await admin(request)
        lifted = state.flags.lift(client)
        state.monitors.reset(client)  # its evidence so far was acted on; it starts over
        state.trail.event("lift", key=who.prefix if who is not None else None,
                          address=address(request), client=client, lifted=lifted)
        return {"client": client, "lifted": lifted}
