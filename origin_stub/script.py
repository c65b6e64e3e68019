"""Scripted responses: the JSON a test PUTs to ``/_stub/script/<id>``, validated with pydantic.

Validation is strict (unknown fields rejected, header values checked) so a typo in a test's script
fails loudly at PUT time with a 400, instead of silently producing a different response later.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .body import body_chunks

__all__ = ["ResponseSpec", "Script", "ScriptRun", "parse_script"]

HeaderPair = tuple[str, str]

# Bytes that would let a header value end the header line (or the block) early. Everything else,
# including odd or invalid values, is the test's business and goes out verbatim.
_FORBIDDEN = ("\r", "\n", "\x00")


def _check_pairs(pairs: list[HeaderPair]) -> list[HeaderPair]:
    for name, value in pairs:
        if not name or any(c in name for c in _FORBIDDEN):
            raise ValueError(f"invalid header name {name!r}")
        if any(c in value for c in _FORBIDDEN):
            raise ValueError(f"header {name!r}: value must not contain CR, LF or NUL")
    return pairs


class ResponseSpec(BaseModel):
    """One scripted response. Only what is asked for is sent (plus Date and framing headers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int = Field(default=200, ge=200, le=999)
    headers: list[HeaderPair] | dict[str, str] = Field(default_factory=list)
    body: str | None = None
    body_b64: str | None = None
    body_size: int | None = Field(default=None, ge=0)
    delay_ms: float = Field(default=0.0, ge=0)
    chunk_delay_ms: float = Field(default=0.0, ge=0)
    chunk_size: int = Field(default=65536, gt=0)
    chunked: bool = False
    content_length: int | str | None = None
    fault: Literal["reset", "short"] | None = None
    early_hints: list[list[HeaderPair]] = Field(default_factory=list)

    @field_validator("early_hints")
    @classmethod
    def _check_hints(cls, hints: list[list[HeaderPair]]) -> list[list[HeaderPair]]:
        for pairs in hints:
            _check_pairs(pairs)
        return hints

    @field_validator("content_length")
    @classmethod
    def _check_content_length(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and any(c in value for c in _FORBIDDEN):
            raise ValueError("content_length must not contain CR, LF or NUL")
        return value

    @model_validator(mode="after")
    def _check(self) -> ResponseSpec:
        _check_pairs(self.header_pairs())
        given = [f for f in ("body", "body_b64", "body_size") if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of body, body_b64, body_size (got {', '.join(given)})")
        if self.body_b64 is not None:
            try:
                base64.b64decode(self.body_b64, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"body_b64 is not valid base64: {exc}") from exc
        return self

    def header_pairs(self) -> list[HeaderPair]:
        if isinstance(self.headers, dict):
            return list(self.headers.items())
        return list(self.headers)

    def body_length(self) -> int:
        if self.body_size is not None:
            return self.body_size
        return len(self._literal_body())

    def body_iter(self, script_id: str) -> Iterator[bytes]:
        """The body in chunk_size pieces; body_size bodies are generated, never built whole."""
        if self.body_size is not None:
            yield from body_chunks(script_id, 0, self.body_size, self.chunk_size)
            return
        data = self._literal_body()
        for pos in range(0, len(data), self.chunk_size):
            yield data[pos : pos + self.chunk_size]

    def _literal_body(self) -> bytes:
        if self.body_b64 is not None:
            return base64.b64decode(self.body_b64)
        if self.body is not None:
            return self.body.encode()
        return b""


class Script(BaseModel):
    """The ``{"responses": [...], "repeat_last": ...}`` form of a script."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    responses: list[ResponseSpec] = Field(min_length=1)
    repeat_last: bool = True


def parse_script(data: Any) -> Script:
    """Accept both the bare list and the object form (raises pydantic.ValidationError)."""
    if isinstance(data, list):
        data = {"responses": data}
    return Script.model_validate(data)


@dataclass
class ScriptRun:
    """A script plus how far through it the requests have got."""

    script: Script
    served: int = 0

    def next_spec(self) -> ResponseSpec | None:
        """The spec for the next request, or None once exhausted without repeat_last."""
        responses = self.script.responses
        index = self.served
        self.served += 1
        if index < len(responses):
            return responses[index]
        if self.script.repeat_last:
            return responses[-1]
        return None
