"""Start a service only on data it knows: the one hook ``appliance run`` puts around
every service's ``main`` (see :mod:`.dataversion`).

A store from a newer Hearth (after a rollback, or an older card image) is refused: the
service publishes ``phase=error`` with the reason and the ``data_too_new`` counter (the
OLED shows "Data from a newer Hearth") and stays up without opening anything until it
is stopped. Staying up rather than exiting keeps supervisord from restarting it in a
loop and the display from calling it silent; nothing is read or written meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..config import Config
from ..status import Phase, StatusPublisher
from .dataversion import DataTooNew, check_service

__all__ = ["DATA_TOO_NEW", "guarded"]

log = logging.getLogger("dataversion")

#: status counter set while a service refuses its data
DATA_TOO_NEW = "data_too_new"

Main = Callable[[Config], Awaitable[None]]


def guarded(service: str, main: Main) -> Main:
    """``main`` preceded by the data-version check of the stores ``service`` opens."""

    async def run(cfg: Config) -> None:
        try:
            versions = check_service(service, cfg)
        except DataTooNew as exc:
            log.error("%s", exc)
            await refuse(service, cfg, exc)
            return
        if versions:
            log.info("data versions: %s", ", ".join(f"{k} {v}" for k, v in versions.items()))
        await main(cfg)

    return run


async def refuse(service: str, cfg: Config, exc: DataTooNew) -> None:
    """Publish the refusal and wait (until cancelled by SIGTERM)."""
    async with StatusPublisher(cfg.hearth.run_dir, service) as status:
        status.update(phase=Phase.ERROR, last_error=str(exc), counters={DATA_TOO_NEW: 1},
                      detail=f"{exc.store} data v{exc.found} > v{exc.known}")
        await asyncio.Event().wait()
