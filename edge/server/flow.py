"""Flow control, both directions, in one place (after uvicorn's ``flow_control.py``).

Reading: the connection stops reading from the socket while a request body waits unread (the
origin is slower than the client) and resumes when the body queue drains.  Writing: the transport
calls ``pause_writing`` when its buffer passes the high-water mark; producers ``await drain()``
before writing more, so a slow client never makes us buffer a large response in memory.  A client
that reads nothing for ``send_timeout`` seconds is cut off by the connection's sweeper.
"""

from __future__ import annotations

import asyncio

WRITE_HIGH_WATER = 64 * 1024  # a slow client holds at most this much of our memory (plus one chunk)
WRITE_LOW_WATER = 16 * 1024


class ClientGone(ConnectionError):
    """The client closed the connection (or it was cut) while its response was being sent."""


class FlowControl:
    __slots__ = ("_drained", "closed", "read_paused", "transport", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.read_paused = False
        self.write_paused = False
        self.closed = False
        self._drained: asyncio.Future[None] | None = None
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)

    # -- reading -----------------------------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    # -- writing -----------------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def lost(self) -> None:
        """The connection is gone: release every producer waiting to write."""
        self.closed = True
        self.write_paused = False
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # the producer wakes, sees ``closed`` and stops

    async def drain(self) -> None:
        """Return once the transport accepts more; raise :class:`ClientGone` if the client left."""
        if self.closed:
            raise ClientGone("client connection closed")
        if not self.write_paused:
            return
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)
        if self.closed:
            raise ClientGone("client connection closed")
