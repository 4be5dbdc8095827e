"""Packing files into shards: balanced by bytes (a cheap stand-in for duration), deterministic."""

from __future__ import annotations

import heapq
import math
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def plan_shards(
    items: Sequence[T],
    size: Callable[[T], int],
    key: Callable[[T], str],
    files_per_shard: int | None,
    bytes_per_shard: int | None,
) -> list[list[T]]:
    """Split ``items`` into the fewest shards that meet both targets, balanced by bytes.

    Largest first into the lightest shard (LPT), ties broken by ``key``, so the same
    inputs always give the same shards.  No shard holds more than ``files_per_shard``.
    Within a shard, files keep ``key`` order.
    """
    if not items:
        return []
    sizes = [size(i) for i in items]
    keys = [key(i) for i in items]
    n = shard_count(len(items), sum(sizes), files_per_shard, bytes_per_shard)
    cap = files_per_shard or len(items)
    heap = [(0, 0, index) for index in range(n)]  # (bytes, count, shard index)
    shards: list[list[tuple[str, int]]] = [[] for _ in range(n)]  # (key, item position)
    # Largest first, ties by key: plain tuples sort in C (a million items: no Python key calls).
    for neg_size, k, position in sorted(zip([-b for b in sizes], keys, range(len(items)))):
        while heap[0][1] >= cap:  # a full shard leaves the heap for good; n * cap >= len(items)
            heapq.heappop(heap)
        load, count, index = heap[0]
        shards[index].append((k, position))
        heapq.heapreplace(heap, (load - neg_size, count + 1, index))
    return [[items[position] for _, position in sorted(shard)] for shard in shards]


def shard_count(n_items: int, total_bytes: int, files_per_shard: int | None, bytes_per_shard: int | None) -> int:
    """How many shards plan_shards makes of these items: every one gets at least one item
    (the first ``n`` items, largest first, each go to a shard still empty)."""
    if not n_items:
        return 0
    n = 1
    if files_per_shard:
        n = max(n, math.ceil(n_items / files_per_shard))
    if bytes_per_shard:
        n = max(n, math.ceil(total_bytes / bytes_per_shard))
    return min(n, n_items)
