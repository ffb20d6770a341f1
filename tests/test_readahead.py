"""The one read-ahead scheduler (``chunks.readahead.Scheduler``): priorities, claiming, Futures, shutdown.

It serves the mount (items through its ``run`` callback), verify (Futures) and the sequential readers
(``iter_with_data``); here its rules are checked with real threads, and the sequential reader with a real
packed layer whose bytes are compared with its source tar.
"""

from __future__ import annotations

import os
import tarfile
import threading

import pytest
from fixtures_util import fixture_tars_fixture, pack_layer  # noqa: F401

from nydus_inspect.chunks.readahead import DONE, QUEUED, RUNNING, Scheduler, iter_with_data
from nydus_inspect.errors import NydusInspectError
from nydus_inspect.layer import open_layer


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.state = QUEUED


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(name + "-")]


def test_urgent_units_run_before_background_ones():
    order: list[str] = []
    gate = threading.Event()

    def run(item: Item) -> None:
        if item.name == "block":
            gate.wait(10)
        order.append(item.name)
        item.state = DONE

    sched = Scheduler(1, run=run, name="t-prio")
    sched.queue([Item("block")])  # holds the one worker while the rest is queued
    for i in range(3):
        sched.queue([Item(f"bg{i}")])
    sched.queue([Item("urgent")], urgent=True)
    assert [i.name for i in sched.pending()] == ["urgent", "bg0", "bg1", "bg2"]
    gate.set()
    sched.shutdown(wait=True)
    assert order == ["block", "urgent", "bg0", "bg1", "bg2"]
    assert not _threads("t-prio")


def test_a_claimed_item_is_not_run_and_a_running_one_cannot_be_claimed():
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def run(item: Item) -> None:
        assert item.state == RUNNING
        if item.name == "first":
            started.set()
            release.wait(10)
        ran.append(item.name)

    sched = Scheduler(1, run=run, name="t-claim")
    first, second = Item("first"), Item("second")
    sched.queue([first, second])
    assert started.wait(10)
    assert not sched.claim(first)  # a worker has it: the reader waits for it instead
    assert sched.claim(second)  # nobody started it: the reader does it itself
    release.set()
    sched.shutdown(wait=True)
    assert ran == ["first"]


def test_an_item_queued_twice_runs_once():
    ran: list[str] = []
    item = Item("x")
    sched = Scheduler(2, run=lambda it: ran.append(it.name), name="t-twice", start=False)
    sched.queue([item])
    sched.queue([item], urgent=True)  # a reader moving it up
    assert not _threads("t-twice")  # not started yet: the mount starts it once its loop runs
    sched.start()
    sched.shutdown(wait=True)
    assert ran == ["x"]


def test_a_failing_callback_leaves_the_worker_alive(caplog):
    done: list[str] = []

    def run(item: Item) -> None:
        if item.name == "bad":
            raise ValueError("a bug")
        done.append(item.name)

    sched = Scheduler(1, run=run, name="t-bug")
    sched.queue([Item("bad")])
    sched.queue([Item("good")])
    sched.shutdown(wait=True)
    assert done == ["good"]
    assert "a bug" in caplog.text


def test_futures_results_exceptions_and_cancel():
    gate = threading.Event()
    with Scheduler(1, name="t-fut") as sched:
        blocker = sched.submit(gate.wait, 10)
        ok = sched.submit(pow, 2, 10)
        bad = sched.submit(int, "x")
        dropped = sched.submit(pow, 3, 3)
        assert dropped.cancel()
        gate.set()
        assert blocker.result(10) is True
        assert ok.result(10) == 1024
        with pytest.raises(ValueError):
            bad.result(10)
        assert dropped.cancelled()
    assert not _threads("t-fut")
    with pytest.raises(RuntimeError):
        sched.submit(pow, 1, 1)


def test_shutdown_with_cancel_drops_what_is_queued():
    gate = threading.Event()
    sched = Scheduler(1, name="t-cancel")
    sched.submit(gate.wait, 10)
    later = [sched.submit(pow, 2, i) for i in range(5)]
    threading.Timer(0.2, gate.set).start()
    sched.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in later)
    assert not _threads("t-cancel")


def test_iter_with_data_gives_the_source_bytes_in_order(fixture_tars, tmp_path):
    """A real packed layer read through the scheduler, with a window smaller than a file: every regular file's
    bytes are its source's, in walk order, and the workers are gone afterwards."""
    tar = fixture_tars["every-type.tar"]
    blob = tmp_path / "layer.blob"
    pack_layer(tar, blob, chunk_size=0x1000)
    with tarfile.open(tar) as tf:
        want = {
            b"/" + os.fsencode(m.name).removeprefix(b"./"): tf.extractfile(m).read()
            for m in tf.getmembers()
            if m.isreg()
        }
    with open_layer(str(blob)) as layer:
        nodes = list(layer.rafs.walk())
        got = {}
        seen = []
        for node, results in iter_with_data(layer, iter(nodes), window=4096, workers=2):
            seen.append(node.path)
            if results is not None:
                got[node.path] = b"".join(bytes(r.result()) for r in results)
    assert seen == [n.path for n in nodes]
    assert want and set(want) <= set(got)
    assert all(got[p] == want[p] for p in want)
    assert not _threads("readahead")


def test_iter_with_data_refuses_a_damaged_chunk(fixture_tars, tmp_path):
    tar = fixture_tars["every-type.tar"]
    blob = tmp_path / "layer.blob"
    pack_layer(tar, blob, chunk_size=0x1000)
    with open_layer(str(blob)) as layer:
        node = layer.rafs.lookup("/data/random-3000.bin")
        chunk = layer.rafs.chunks(node)[0]
    data = bytearray(blob.read_bytes())
    data[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x55
    blob.write_bytes(bytes(data))
    with open_layer(str(blob)) as layer, pytest.raises(NydusInspectError, match=chunk.name):
        for _, results in iter_with_data(layer, layer.rafs.walk(), workers=2):
            for r in results or ():
                r.result()
    assert not _threads("readahead")
