"""Reading a JSON request body on the admin listeners: every bad body is the client's 4xx, never our 500.

``json.loads`` raises ``RecursionError`` on deeply nested input (``[[[[…``), which escaped as a
500 with a traceback; bodies over the listener's ``client_max_size`` are aiohttp's own 413.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class BadJsonBody(Exception):
    """The body is not usable JSON; ``status`` says which 4xx, ``reason`` why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_json(request: web.Request) -> Any:
    """The decoded body, or :class:`BadJsonBody` (400) for anything that is not JSON text."""
    raw = await request.read()  # over client_max_size: aiohttp raises HTTPRequestEntityTooLarge (413)
    if not raw.strip():
        raise BadJsonBody(400, "body is not valid JSON: it is empty")
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadJsonBody(400, "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise BadJsonBody(400, f"body is not valid JSON: {str(exc)[:100]}") from None
