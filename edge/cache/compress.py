"""The codecs behind ``[compression]``: streaming encoders for fills, whole-body decoding and
re-encoding for variants derived from a stored one (``edge.cache.transcode``).

Brotli (``brotli``), Zstandard (``zstandard``) and gzip (the standard library's ``zlib``).  A chunk
large enough to hold the event loop for more than a moment is compressed in a thread (all three
libraries release the GIL while they work).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Protocol

import brotli
import zstandard

from edge.config import CompressionSettings

THREAD_CHUNK = 32 * 1024  # below this a chunk is compressed on the loop (a fraction of a millisecond)


class Encoder(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _Brotli:
    def __init__(self, quality: int) -> None:
        self._codec = brotli.Compressor(quality=quality)

    def feed(self, chunk: bytes) -> bytes:
        out: bytes = self._codec.process(chunk)
        return out

    def finish(self) -> bytes:
        out: bytes = self._codec.finish()
        return out


class _Zstd:
    def __init__(self, level: int) -> None:
        self._codec = zstandard.ZstdCompressor(level=level).compressobj()

    def feed(self, chunk: bytes) -> bytes:
        return self._codec.compress(chunk)

    def finish(self) -> bytes:
        return self._codec.flush()


class _Gzip:
    def __init__(self, level: int) -> None:
        self._codec = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: the gzip container

    def feed(self, chunk: bytes) -> bytes:
        return self._codec.compress(chunk)

    def finish(self) -> bytes:
        return self._codec.flush()


def encoder(coding: str, settings: CompressionSettings) -> Encoder:
    if coding == "br":
        return _Brotli(settings.brotli_quality)
    if coding == "zstd":
        return _Zstd(settings.zstd_level)
    if coding == "gzip":
        return _Gzip(settings.gzip_level)
    raise ValueError(f"no encoder for {coding!r}")


async def encoded(chunks: AsyncIterator[bytes], codec: Encoder) -> AsyncIterator[bytes]:
    """``chunks`` encoded as they come (empty outputs skipped), then the codec's tail."""
    async for chunk in chunks:
        out = await asyncio.to_thread(codec.feed, chunk) if len(chunk) >= THREAD_CHUNK else codec.feed(chunk)
        if out:
            yield out
    tail = codec.finish()
    if tail:
        yield tail


class TooLarge(Exception):
    """Decoding would produce more than the allowed number of bytes (a decompression bomb, or just big)."""


def decode(coding: str, body: bytes, limit: int) -> bytes:
    """The whole body decoded; raises TooLarge past ``limit`` bytes and ValueError when corrupt."""
    try:
        if coding == "gzip":
            decompressor = zlib.decompressobj(31)
            out = decompressor.decompress(body, limit + 1)
            if len(out) > limit or decompressor.unconsumed_tail:
                raise TooLarge(f"decoded body exceeds {limit} bytes")
            if not decompressor.eof:
                raise ValueError("truncated gzip stream")
            return out
        if coding == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(body)
            out = reader.read(limit + 1)
            if len(out) > limit:
                raise TooLarge(f"decoded body exceeds {limit} bytes")
            # The reader stops quietly at a truncated end; decoding again (bounded now) says whether
            # the frame ended.
            check = zstandard.ZstdDecompressor().decompressobj()
            check.decompress(body)
            if not check.eof:
                raise ValueError("truncated zstd stream")
            return out
        if coding == "br":
            brotli_decoder = brotli.Decompressor()
            result = bytearray(brotli_decoder.process(body, output_buffer_limit=limit + 1))
            while len(result) <= limit and not brotli_decoder.can_accept_more_data():
                result += brotli_decoder.process(b"", output_buffer_limit=limit + 1 - len(result))
            if len(result) > limit:
                raise TooLarge(f"decoded body exceeds {limit} bytes")
            if not brotli_decoder.is_finished():
                raise ValueError("truncated brotli stream")
            return bytes(result)
    except (zlib.error, zstandard.ZstdError, brotli.error) as exc:
        raise ValueError(f"corrupt {coding} body: {exc}") from exc
    raise ValueError(f"no decoder for {coding!r}")


def encode_all(coding: str, body: bytes, settings: CompressionSettings) -> bytes:
    codec = encoder(coding, settings)
    return codec.feed(body) + codec.finish()
