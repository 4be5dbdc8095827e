"""Sharding: balanced by bytes, capped by count, deterministic."""

from __future__ import annotations

import random

from orchestrator.sharding import plan_shards, shard_count


GB = 10**9


def _plan(sizes, files=None, bytes_=None):
    items = [(f"/a/{i:03d}.mp4", s) for i, s in enumerate(sizes)]
    return plan_shards(items, lambda i: i[1], lambda i: i[0], files, bytes_)


def _sizes(n: int, low: int, high: int, seed: int) -> list[int]:
    """``n`` sizes drawn from one generator (one per test), so that they really vary."""
    rng = random.Random(seed)
    sizes = [rng.randint(low, high) for _ in range(n)]
    assert len(set(sizes)) > 0.9 * n
    return sizes


def _loads(shards) -> list[int]:
    return [sum(s for _, s in shard) for shard in shards]


def test_same_inputs_same_shards_whatever_the_order():
    sizes = _sizes(200, 1, 10**9, seed=7)
    first = _plan(sizes, files=20)
    items = [(f"/a/{i:03d}.mp4", s) for i, s in enumerate(sizes)]
    random.Random(1).shuffle(items)
    second = plan_shards(items, lambda i: i[1], lambda i: i[0], 20, None)
    assert first == second


def test_balanced_by_bytes_and_capped_by_count():
    sizes = _sizes(1000, GB // 10, 8 * GB, seed=3)
    shards = _plan(sizes, files=25)
    assert len(shards) == 40
    assert max(len(s) for s in shards) <= 25
    loads = _loads(shards)
    assert max(loads) / min(loads) < 1.01  # dealt out in turn, largest first, they would differ by 8 %
    assert sorted(p for shard in shards for p, _ in shard) == sorted(f"/a/{i:03d}.mp4" for i in range(1000))


def test_a_few_huge_files_among_many_small_ones():
    """LPT's promise: a file goes to the lightest shard, largest first, so the last (smallest) file
    of every shard arrived when that shard was the lightest: no shard is heavier than the lightest
    by more than its own smallest file.  Huge files therefore sit alone in their shards (the rest
    never catch up with them) and the small ones balance the other shards to within a small file."""
    small = _sizes(400, GB // 10, 2 * GB, seed=11)
    huge = [90 * GB, 80 * GB, 70 * GB]
    sizes = small[:100] + huge + small[100:]
    shards = _plan(sizes, bytes_=50 * GB)
    loads = _loads(shards)
    assert len(shards) == -(-sum(sizes) // (50 * GB)) == 13
    for shard, load in zip(shards, loads):
        assert load - min(s for _, s in shard) <= min(loads), (load, min(loads))
    alone = sorted(shard[0][1] for shard in shards if len(shard) == 1)
    assert alone == sorted(huge)
    others = [load for shard, load in zip(shards, loads) if len(shard) > 1]
    assert max(others) - min(others) <= 2 * GB


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


def test_shard_count_is_the_plans_length():
    """What a dry run reports without packing: the number of shards the packing makes."""
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.choice([0, 1, rng.randint(1, 5 * GB)]) for _ in range(rng.randint(1, 120))]
        files, bytes_ = rng.choice([None, 1, 4, 50]), rng.choice([None, 1, GB, 10 * GB])
        assert len(_plan(sizes, files, bytes_)) == shard_count(len(sizes), sum(sizes), files, bytes_)
    assert shard_count(0, 0, 5, None) == 0
