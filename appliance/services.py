"""The services ``appliance run`` can start: one supervisord program each.

Each entry names a module with ``async def main(cfg: Config) -> None``, the process's
composition root. Modules are imported only when run, so one service's dependencies
(luma, pyudev ...) never load into another's process.
"""

from __future__ import annotations

import asyncio
import faulthandler
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import cast

from .config import Config
from .logs import setup_logging

__all__ = ["SERVICES", "run_service", "run_until_signal"]

#: service name -> module holding its ``main(cfg)``
SERVICES: dict[str, str] = {
    "node": "appliance.node.service",
    "indexer": "appliance.indexer.service",
    "display": "appliance.display.service",
    "button": "appliance.button.service",
    "tower": "appliance.tower.service",
    "backup": "appliance.backup.service",
    "usb": "appliance.usb.service",
    "setup": "appliance.setup.service",
    "tor": "appliance.tor.service",
}


def run_service(name: str, cfg: Config) -> int:
    """Run one service until SIGTERM/SIGINT; returns the process exit code."""
    if name not in SERVICES:
        raise KeyError(name)
    log = setup_logging(name, cfg.log.level)
    # kill -USR1 <pid> prints every thread's stack to the log: for a service that hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    module = importlib.import_module(SERVICES[name])
    main = cast(Callable[[Config], Awaitable[None]], module.main)
    from .update.guard import guarded

    main = guarded(name, main)  # refuses a store from a newer Hearth (appliance/update/)
    return run_until_signal(lambda: main(cfg), log)


def run_until_signal(make: Callable[[], Awaitable[None]], log: logging.Logger) -> int:
    """Run ``make()`` on a new event loop until it ends or SIGTERM/SIGINT cancels it;
    returns the process exit code (1 after logging an unexpected exception)."""

    async def runner() -> None:
        task = asyncio.ensure_future(make())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("stopping on signal")

    try:
        asyncio.run(runner())
    except Exception:
        log.exception("%s failed", log.name)
        return 1
    return 0
