"""An edge worker in the test's own event loop, on fresh loopback ports (public and admin)."""

from __future__ import annotations

from yarl import URL

from edge.config import EdgeSettings
from edge.runtime import EdgeRuntime
from edge.worker import EdgeWorker


class InProcessEdge:
    """The public listener of an in-process edge worker, shaped like aiohttp's ``TestServer``."""

    host = "127.0.0.1"
    scheme = "http"

    def __init__(self, worker: EdgeWorker) -> None:
        self.worker = worker

    @property
    def port(self) -> int:
        return self.worker.port

    @property
    def runtime(self) -> EdgeRuntime:
        return self.worker.runtime

    def make_url(self, path: str) -> URL:
        return URL(f"{self.scheme}://{self.host}:{self.port}{path}", encoded=True)

    async def close(self) -> None:
        await self.worker.stop()


class InProcessAdmin:
    """The admin listener of the same worker."""

    host = "127.0.0.1"

    def __init__(self, worker: EdgeWorker) -> None:
        self.worker = worker

    @property
    def port(self) -> int:
        return self.worker.admin_port

    def make_url(self, path: str) -> URL:
        return URL(f"http://{self.host}:{self.port}{path}", encoded=True)

    async def close(self) -> None:
        if self.worker.admin_runner is not None:
            await self.worker.admin_runner.cleanup()


async def start_in_process(settings: EdgeSettings, node_name: str, port: int = 0) -> InProcessEdge:
    worker = EdgeWorker(settings, node_name)
    await worker.start(port=port)
    return InProcessEdge(worker)
