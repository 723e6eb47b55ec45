"""The node's processing thread without ROS (hamer_ros.frame_worker): the latest-frame slot, the order of
`between_frames` and `process`, error accounting, and how it stops."""
from __future__ import annotations

import threading
import time

from hamer_ros.frame_worker import Counters, FrameWorker


def _wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.01)


def test_frames_arriving_while_one_is_processed_leave_only_the_newest():
    release, entered = threading.Event(), threading.Event()
    processed = []

    def process(frame):
        processed.append(frame)
        entered.set()
        release.wait(5)

    worker = FrameWorker(process)
    worker.start()
    worker.put(1)
    assert entered.wait(5)
    for frame in (2, 3, 4):          # the model is busy with 1: 2 and 3 are replaced, 4 waits
        worker.put(frame)
    release.set()
    _wait_for(lambda: processed == [1, 4])
    assert worker.dropped == 2
    assert worker.stop(5) and not worker.is_alive() and worker.fatal_error is None


def test_between_frames_runs_before_each_frame_and_while_idle():
    events = []
    worker = FrameWorker(lambda frame: events.append(('frame', frame)),
                         between_frames=lambda: events.append(('between',)))
    worker.start()
    _wait_for(lambda: len(events) >= 2)         # idle: every POLL_S
    assert set(events) == {('between',)}
    worker.put('a')
    _wait_for(lambda: ('frame', 'a') in events)
    index = events.index(('frame', 'a'))
    assert events[index - 1] == ('between',)
    assert worker.stop(5)


def test_an_escaping_exception_stops_the_thread_and_is_reported_once():
    fatal, exits = [], []

    def process(frame):
        raise RuntimeError(f'broken on {frame}')

    worker = FrameWorker(process, on_fatal=fatal.append, on_exit=lambda: exits.append(True))
    worker.start()
    worker.put(7)
    _wait_for(lambda: not worker.is_alive())
    assert worker.fatal_error == 'RuntimeError: broken on 7' and fatal == [worker.fatal_error]
    assert exits == [True]


def test_an_exception_while_stopping_is_no_fatal_error():
    stopping = threading.Event()
    fatal = []

    def process(frame):
        stopping.wait(5)
        raise RuntimeError('context gone')

    worker = FrameWorker(process, on_fatal=fatal.append)
    worker.start()
    worker.put(1)
    time.sleep(0.2)
    worker.stopping.set()
    stopping.set()
    assert worker.stop(5)
    assert worker.fatal_error is None and fatal == []


def test_stop_waits_for_the_frame_in_hand_or_reports_it_is_still_busy():
    release = threading.Event()
    exits = []
    worker = FrameWorker(lambda frame: release.wait(10), on_exit=lambda: exits.append(True))
    worker.start()
    worker.put(1)
    time.sleep(0.2)
    started = time.monotonic()
    assert worker.stop(0.3) is False              # inside the "model"
    assert time.monotonic() - started < 2.0 and exits == []
    release.set()
    assert worker.stop(5) is True and exits == [True]
    worker.put(2)                                 # after stop: nothing processes it
    assert not worker.is_alive()


def test_a_worker_never_started_stops_at_once():
    assert FrameWorker(lambda frame: None).stop(None) is True


def test_counters_from_many_threads_add_up():
    counters = Counters(('processed', 'failed'))

    def count():
        for _ in range(10000):
            counters.add('processed')
            counters.add('failed', 2)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counters.snapshot() == {'processed': 40000, 'failed': 80000}
    assert counters['failed'] == 80000
