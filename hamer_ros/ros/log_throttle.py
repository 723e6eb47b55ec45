"""Warnings throttled by kind of problem, with a count of the ones held back (plain Python, no rclpy).

A stream of bad frames must not flood the log, and the text of one kind of problem often changes from frame to
frame (an image truncated by a different number of bytes, another track id in "hand not published"): throttling by
text lets every one of them through. So each warning names its kind; the first of a kind is logged at once, later
ones of the same kind within `period_s` are counted instead, and the next one logged says how many were held back.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple


class WarningThrottle:
    """`admit(kind, text, period_s)` -> the line to log now, or None when a warning of that kind was logged less
    than `period_s` ago (it is counted, and the next line of that kind says so)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._kinds: Dict[str, Tuple[float, int]] = {}      # kind -> (time last logged, held back since)

    def admit(self, kind: str, text: str, period_s: float) -> Optional[str]:
        now = self._clock()
        last, held_back = self._kinds.get(kind, (float('-inf'), 0))
        if now - last < period_s:
            self._kinds[kind] = (last, held_back + 1)
            return None
        self._kinds[kind] = (now, 0)
        if held_back:
            text += (f' [{held_back} more warning{"s" if held_back > 1 else ""} of this kind in the last '
                     f'{now - last:.0f} s not logged]')
        return text

    def held_back(self, kind: str) -> int:
        """Warnings of `kind` counted but not logged since the last one logged."""
        return self._kinds.get(kind, (0.0, 0))[1]
