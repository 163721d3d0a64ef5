"""Liveness for the programs that serve no gRPC (dispatcher, worker): a file
touched every few seconds while the broker session is up, and removed when it
is lost or the program stops. A health check reads its age
(`python -m calcmq.healthcheck --file PATH`): no file, or a stale one (a hung
event loop stops touching it), means unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

TOUCH_EVERY = 5.0


class LivenessFile:
    def __init__(self, path: str) -> None:
        self._path = Path(path) if path else None
        self._up = False
        self._task: asyncio.Task[None] | None = None

    def report(self, up: bool) -> None:
        """Broker session up or down (Broker.on_state_change)."""
        self._up = up
        if self._path is None:
            return
        if up and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._touch())
        elif not up:
            self.close()

    async def _touch(self) -> None:
        assert self._path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        while self._up:
            self._path.touch()
            await asyncio.sleep(TOUCH_EVERY)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
