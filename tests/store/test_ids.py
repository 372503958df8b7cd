"""Snowflake ids: unique, increasing, and carrying their creation time."""

from __future__ import annotations

import threading
import time

from microfedi.store.ids import IdGenerator, id_time, new_id


def test_ids_increase_and_are_unique_in_a_tight_loop() -> None:
    generator = IdGenerator()
    ids = [generator.next_id() for _ in range(50_000)]
    assert all(earlier < later for earlier, later in zip(ids, ids[1:]))
    assert 0 < ids[0] and ids[-1] < 2**63  # fits SQLite's signed 64-bit INTEGER


def test_ids_are_unique_across_threads() -> None:
    per_thread: list[list[int]] = [[] for _ in range(4)]

    def generate(bucket: list[int]) -> None:
        bucket.extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=generate, args=(bucket,)) for bucket in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every_id = [i for bucket in per_thread for i in bucket]
    assert len(set(every_id)) == len(every_id)
    # Each thread sees its own ids increase too.
    assert all(bucket == sorted(bucket) for bucket in per_thread)


def test_ids_encode_their_creation_time() -> None:
    before = time.time()
    snowflake = new_id()
    after = time.time()
    assert int(before * 1000) / 1000 <= id_time(snowflake) <= after + 0.001

    assert id_time(IdGenerator().next_id(now=1_700_000_000.1234)) == 1_700_000_000.123


def test_ids_keep_increasing_when_the_clock_steps_back() -> None:
    generator = IdGenerator()
    first = generator.next_id(now=1_700_000_000.0)
    second = generator.next_id(now=1_699_999_990.0)
    assert second > first


def test_more_ids_in_one_millisecond_than_the_sequence_holds() -> None:
    generator = IdGenerator()
    now = 1_700_000_000.0
    ids = [generator.next_id(now=now) for _ in range(70_000)]  # more than 2**16
    assert all(earlier < later for earlier, later in zip(ids, ids[1:]))
    # Overflowing borrows the next millisecond or two, never more.
    assert now <= id_time(ids[-1]) <= now + 0.002
