"""A stored variant in another content coding stands in for a miss (``[compression]``).

A client that gets ``identity`` (it accepts no coding we offer) or a coding nobody asked for yet
finds no stored variant of its own, but the same response is stored encoded for other clients:
decode it (and encode it again in the client's coding) once, store that variant like a fill would,
and serve it — instead of asking the origin again.  The derived variant keeps the source's times,
validators (weak) and ``stored_at``, so it expires, revalidates and is purged exactly as its source.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from edge.cache import compress
from edge.cache.context import CacheContext
from edge.cache.fill import entry_of
from edge.http import coding, policy, vary
from edge.http.headers import HeaderList, get_first
from edge.store.base import CachedObject, StoredMeta, body_checksum, iter_file_chunks
from edge.store.tiered import close_handle

log = logging.getLogger("edge.transcode")

DECODE_LIMIT = 64 * 1024 * 1024  # larger bodies are fetched again rather than decoded in memory


async def derive(ctx: CacheContext, key: str, received: HeaderList) -> CachedObject | None:
    """A new variant of ``key`` in the coding this request gets, made from a fresh stored one; or None."""
    wanted = get_first(received, "accept-encoding") or coding.IDENTITY
    now = time.time()
    candidates: list[StoredMeta] = []
    for meta in await ctx.store.all_variants(key):
        source = coding.content_coding(meta.headers)
        if "accept-encoding" not in meta.vary or source not in coding.CODINGS or source == wanted:
            continue
        others = tuple(field for field in meta.vary if field != "accept-encoding")
        mine = tuple(item for item in meta.secondary if item[0] != "accept-encoding")
        if vary.secondary_key(others, received) != mine or coding.no_transform(meta.headers):
            continue
        visible = ctx.purger.visible(CachedObject(meta))
        if visible is None:
            continue
        decision = policy.serve_decision("GET", received, entry_of(visible.meta), now, ctx.policy)
        if decision.action is policy.Action.FRESH_HIT:
            candidates.append(meta)
    candidates = [meta for meta in candidates if meta.size <= DECODE_LIMIT]
    if not candidates:
        return None
    chosen = max(candidates, key=lambda meta: meta.response_time)
    target = (key, vary.variant_id(vary.secondary_key(chosen.vary, received)))
    pending = ctx.derivations.get(target)
    if pending is not None:  # the same variant is being made for another request: share it
        return await asyncio.shield(pending)
    future: asyncio.Future[CachedObject | None] = asyncio.get_running_loop().create_future()
    ctx.derivations[target] = future
    try:
        result = await _derive_from(ctx, chosen, wanted, received)
    except BaseException:
        future.set_result(None)
        raise
    finally:
        del ctx.derivations[target]
    future.set_result(result)
    return result


async def _derive_from(ctx: CacheContext, source: StoredMeta, wanted: str, received: HeaderList) -> CachedObject | None:
    purges = ctx.purger
    start_seq, started = purges.view.applied_seq, time.time()
    found = await ctx.store.get_variant(source.key, source.variant)
    if found is None or found.meta.checksum != source.checksum:
        close_handle(found)
        return None
    try:
        body = found.body if found.body is not None else await _read(found)
    finally:
        close_handle(found)
    source_coding = coding.content_coding(source.headers)
    assert source_coding is not None
    compression = ctx.settings.compression
    try:
        plain = await asyncio.to_thread(compress.decode, source_coding, body, DECODE_LIMIT)
        out = plain if wanted == coding.IDENTITY else await asyncio.to_thread(
            compress.encode_all, wanted, plain, compression
        )  # fmt: skip
    except (ValueError, compress.TooLarge) as exc:
        log.warning("cannot derive a %s variant of %s from %s: %s", wanted, source.key[:200], source_coding, exc)
        return None
    secondary = vary.secondary_key(source.vary, received)
    meta = replace(
        source, variant=vary.variant_id(secondary), secondary=secondary,
        headers=tuple(coding.encoded_headers(source.headers, wanted)), size=len(out), checksum=body_checksum(out),
    )  # fmt: skip
    await ctx.store.put(meta, out)
    await purges.sync()
    if purges.view.purged_since(start_seq, started, meta.key, meta.tags):
        await ctx.store.delete(meta.key, meta.variant)
        return None
    if wanted != coding.IDENTITY:
        ctx.counters.count_compressed(wanted)
    return CachedObject(meta, body=out, tier="memory")


async def _read(found: CachedObject) -> bytes:
    assert found.path is not None
    chunks = [chunk async for chunk in iter_file_chunks(found.path, found.offset, found.meta.size)]
    return b"".join(chunks)
