"""The node's processing thread, without ROS: a latest-frame slot, one worker thread, and the error accounting.

Callbacks only `put` the newest frame (a frame still waiting is replaced and counted as dropped), so a slow model
never blocks whoever delivers frames, and latency stays bounded at any camera rate. The thread takes the frame
waiting in the slot, runs `between_frames` (changes that must happen with no frame in flight: a detector rebuild,
a retry) and then `process(frame)`. A failing frame is the business of `process` (it counts and reports it); an
exception that escapes it stops the thread: `fatal_error` says why and `on_fatal` is called (the node then exits
non-zero, as a node that processes nothing must not look alive). `on_exit` runs on the thread as it ends, however
it ends.

Counters (`Counters`) may be added to from any thread; `snapshot` reads them consistently.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, Iterable, Optional

from hamer_ros.overlap import LatestSlot


class Counters:
    """Named counts added to from several threads (`+=` on a dict item is not atomic)."""

    def __init__(self, names: Iterable[str]):
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = {name: 0 for name in names}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counts)


class FrameWorker:
    """One thread processing the newest frame. `start` once; `stop` ends it (see the module docstring)."""

    POLL_S = 0.1    # how often `between_frames` runs while no frame arrives

    def __init__(self, process: Callable[[object], None], between_frames: Optional[Callable[[], None]] = None,
                 on_fatal: Optional[Callable[[str], None]] = None, on_exit: Optional[Callable[[], None]] = None,
                 name: str = 'hamer_worker'):
        self._process = process
        self._between_frames = between_frames or (lambda: None)
        self._on_fatal = on_fatal or (lambda text: None)
        self._on_exit = on_exit or (lambda: None)
        self.slot = LatestSlot()
        self.stopping = threading.Event()
        self.fatal_error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def dropped(self) -> int:
        """Frames replaced in the slot before the thread took them."""
        return self.slot.dropped

    def put(self, frame) -> None:
        self.slot.put(frame)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Asks the thread to end and waits up to `timeout` s (None: however long the frame in hand takes);
        False when it is still busy (inside the model) then."""
        self.stopping.set()
        self.slot.close()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                frame = self.slot.take(timeout=self.POLL_S)
                if self.stopping.is_set():
                    break
                self._between_frames()
                if frame is not None:
                    self._process(frame)
        except Exception as exc:    # noqa: BLE001 - the worker must report, not vanish silently
            if not self.stopping.is_set():
                self.fatal_error = f'{type(exc).__name__}: {exc}'
                self._on_fatal(self.fatal_error)
        finally:
            self._on_exit()
