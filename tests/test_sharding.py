"""Sharding: balanced by bytes, capped by count, deterministic."""

from __future__ import annotations

import random

from orchestrator.sharding import plan_shards


def _plan(sizes, files=None, bytes_=None):
    items = [(f"/a/{i:03d}.mp4", s) for i, s in enumerate(sizes)]
    return plan_shards(items, lambda i: i[1], lambda i: i[0], files, bytes_)


def test_same_inputs_same_shards_whatever_the_order():
    sizes = [random.Random(7).randint(1, 10**9) for _ in range(200)]
    first = _plan(sizes, files=20)
    items = [(f"/a/{i:03d}.mp4", s) for i, s in enumerate(sizes)]
    random.Random(1).shuffle(items)
    second = plan_shards(items, lambda i: i[1], lambda i: i[0], 20, None)
    assert first == second


def test_balanced_by_bytes_and_capped_by_count():
    sizes = [random.Random(3).randint(10**8, 8 * 10**9) for _ in range(1000)]
    shards = _plan(sizes, files=25)
    assert len(shards) == 40
    assert max(len(s) for s in shards) <= 25
    loads = [sum(s for _, s in shard) for shard in shards]
    assert max(loads) / min(loads) < 1.05
    assert sorted(p for shard in shards for p, _ in shard) == sorted(f"/a/{i:03d}.mp4" for i in range(1000))


def test_bytes_target_sets_the_shard_count():
    shards = _plan([10] * 30, files=None, bytes_=100)
    assert len(shards) == 3 and all(sum(s for _, s in shard) == 100 for shard in shards)


def test_count_cap_beats_byte_balance():
    shards = _plan([1000, 1, 1, 1, 1, 1], files=3)
    assert [len(s) for s in shards] == [3, 3]
    heavy = [s for s in shards if any(size == 1000 for _, size in s)][0]
    assert sorted(size for _, size in heavy) == [1, 1, 1000]  # small files fill the light shard first


def test_nothing_to_shard():
    assert _plan([], files=10) == []
