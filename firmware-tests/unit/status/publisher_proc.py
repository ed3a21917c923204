"""A status publisher in its own process, for tests that kill -9 or SIGSTOP it.

Usage: publisher_proc.py RUN_DIR SERVICE HEARTBEAT_S PHASE [DETAIL]. Prints ``ready``
once it has bound and sent its first snapshot, then publishes until killed.
"""

from __future__ import annotations

import asyncio
import sys

from appliance.status import Phase, StatusPublisher


async def main(run_dir: str, service: str, heartbeat_s: float, phase: str, detail: str) -> None:
    async with StatusPublisher(run_dir, service, heartbeat_s=heartbeat_s) as pub:
        pub.update(phase=Phase(phase), detail=detail, counters={"pid_alive": 1})
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4],
                     sys.argv[5] if len(sys.argv) > 5 else ""))
