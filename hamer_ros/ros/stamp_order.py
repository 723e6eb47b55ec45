"""What the order of image stamps says about a stream: a restart, or several cameras on one topic (plain Python).

Stamps that go backwards once mean the stream started over (a camera restarted, a bag played again): tracking must
start afresh. Stamps that go backwards again and again, a few frames apart, mean something else: two cameras (two
clocks) publishing on one topic, or a misconfigured driver. Restarting the tracking on every such frame only churns
track ids and MediaPipe state, so after the second backward step within `min_frames_between_restarts` frames the
stream is reported as mixed (once) and backward steps are no longer restarts, until `frames_to_recover` frames in a
row come in order. A bag played in a loop shorter than `min_frames_between_restarts` frames reads as mixed too.
"""
from __future__ import annotations

from typing import List

IN_ORDER = 'in order'
RESTART = 'restart'                     # went backwards: start tracking afresh
MIXING_STARTED = 'mixing started'       # went backwards again soon after the last time: several sources
OUT_OF_ORDER = 'out of order'           # went backwards while known to be mixed: nothing to do
MIXING_ENDED = 'mixing ended'           # in order for long enough again

_MAX_FRAME_IDS = 8


class StampOrder:
    """`update(stamp_ns, frame_id)` for every frame, in arrival order -> one of the events above."""

    def __init__(self, min_frames_between_restarts: int = 10, frames_to_recover: int = 100):
        self.min_frames_between_restarts = int(min_frames_between_restarts)
        self.frames_to_recover = int(frames_to_recover)
        self._last_stamp_ns = None
        self._in_order_run = self.min_frames_between_restarts      # frames in order since the last backward step
        self.mixed = False
        self.backward_steps = 0
        self.frame_ids: List[str] = []       # frame ids seen since the stream became mixed (the first few)

    def update(self, stamp_ns: int, frame_id: str = '') -> str:
        last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        if self.mixed and frame_id not in self.frame_ids and len(self.frame_ids) < _MAX_FRAME_IDS:
            self.frame_ids.append(frame_id)
        if last is None or stamp_ns >= last:
            self._in_order_run += 1
            if self.mixed and self._in_order_run >= self.frames_to_recover:
                self.mixed = False
                return MIXING_ENDED
            return IN_ORDER
        self.backward_steps += 1
        soon = self._in_order_run < self.min_frames_between_restarts
        self._in_order_run = 0
        if self.mixed:
            return OUT_OF_ORDER
        if soon:
            self.mixed = True
            self.frame_ids = [frame_id]
            return MIXING_STARTED
        return RESTART

    def describe(self) -> str:
        """For diagnostics: how the stamps behave now."""
        if not self.mixed:
            return IN_ORDER
        ids = ', '.join(repr(frame_id) for frame_id in self.frame_ids)
        return (f'going back and forth ({self.backward_steps} backward steps): several cameras on one topic? '
                f'frame ids {ids}')
