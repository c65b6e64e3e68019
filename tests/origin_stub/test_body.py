"""Deterministic bodies: the contract other modules' tests rely on to check bytes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from origin_stub.body import BLOCK_SIZE, body_chunks, expected_body


def test_expected_body_is_deterministic_sized_and_named() -> None:
    assert expected_body("a", 0) == b""
    assert len(expected_body("a", 1)) == 1
    assert len(expected_body("a", 100_000)) == 100_000
    assert expected_body("a", 5000) == expected_body("a", 5000)
    assert expected_body("a", 5000) != expected_body("b", 5000)
    # the first 32 bytes after the stamp come straight from the documented seed derivation
    seed = hashlib.sha256(b"a").digest()
    assert expected_body("a", 64)[32:64] == hashlib.sha256(seed + (1).to_bytes(4, "big")).digest()


def test_a_shorter_body_is_a_prefix_of_a_longer_one() -> None:
    # A cache that stored a prefix must compare equal to the start of the full object.
    assert expected_body("obj", 70_000) == expected_body("obj", 200_000)[:70_000]


def test_blocks_repeat_except_for_the_index_stamp() -> None:
    body = expected_body("stamp", 3 * BLOCK_SIZE)
    blocks = [body[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE] for i in range(3)]
    assert blocks[0][8:] == blocks[1][8:] == blocks[2][8:]
    # ...but a body shifted by one whole block does not compare equal
    assert len({b[:8] for b in blocks}) == 3


def test_body_chunks_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="start"):
        list(body_chunks("x", -1, 10, 4))
    with pytest.raises(ValueError, match="start"):
        list(body_chunks("x", 10, 5, 4))
    with pytest.raises(ValueError, match="chunk_size"):
        list(body_chunks("x", 0, 10, 0))
    with pytest.raises(ValueError, match="size"):
        expected_body("x", -1)


def test_body_chunks_far_into_a_huge_object_without_building_it() -> None:
    offset = 5 * 1024**3 + 3  # 5 GiB in
    got = b"".join(body_chunks("huge", offset, offset + 300, 64))
    assert len(got) == 300
    # offset % BLOCK_SIZE == 3: stamp bytes 3..7 differ per block, the rest is the shared pattern
    pattern = expected_body("huge", BLOCK_SIZE)
    assert got[5:] == pattern[8 : 8 + 295]
    assert got[:5] != pattern[3:8]


@st.composite
def _ranges(draw: st.DrawFn) -> tuple[str, int, int, int, int]:
    name = draw(st.text(min_size=0, max_size=12))
    size = draw(st.integers(min_value=0, max_value=3 * BLOCK_SIZE + 100))
    start = draw(st.integers(min_value=0, max_value=size))
    end = draw(st.integers(min_value=start, max_value=size))
    # keep the number of chunks bounded so the property stays fast
    chunk_size = draw(st.integers(min_value=max(1, (end - start) // 2000), max_value=2 * BLOCK_SIZE))
    return name, size, start, end, chunk_size


@settings(max_examples=150, deadline=None)
@given(_ranges())
def test_body_chunks_concatenate_to_the_expected_slice(case: tuple[str, int, int, int, int]) -> None:
    name, size, start, end, chunk_size = case
    chunks = list(body_chunks(name, start, end, chunk_size))
    assert b"".join(chunks) == expected_body(name, size)[start:end]
    assert all(len(c) == chunk_size for c in chunks[:-1])
    assert all(0 < len(c) <= chunk_size for c in chunks)
