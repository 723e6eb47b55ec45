"""WarningThrottle: one warning per kind of problem and period, whatever its text, with the count held back."""
from hamer_ros.ros.log_throttle import WarningThrottle


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_texts_that_change_every_frame_are_throttled_by_kind_and_counted():
    clock = Clock()
    throttle = WarningThrottle(clock)
    logged = []
    for frame in range(300):                     # 300 frames at 32 Hz, each truncated by a different amount
        line = throttle.admit('bad image: data length', f'image data has {1000 - frame} bytes, expected 1200', 5.0)
        if line is not None:
            logged.append((clock.now, line))
        clock.now += 1 / 32
    # 9.4 s of frames: one line at the start, one 5 s later; never one per frame.
    assert [round(t - 100.0, 1) for t, _ in logged] == [0.0, 5.0]
    assert logged[0][1] == 'image data has 1000 bytes, expected 1200'
    assert logged[1][1] == 'image data has 840 bytes, expected 1200 [159 more warnings of this kind in the last ' \
                           '5 s not logged]'
    assert throttle.held_back('bad image: data length') == 139


def test_another_kind_is_logged_at_once_and_a_quiet_kind_logs_again_without_a_count():
    clock = Clock()
    throttle = WarningThrottle(clock)
    assert throttle.admit('a', 'first a', 5.0) == 'first a'
    assert throttle.admit('b', 'first b', 5.0) == 'first b'
    assert throttle.admit('a', 'second a', 5.0) is None
    clock.now += 5.0
    assert throttle.admit('a', 'third a', 5.0) == 'third a [1 more warning of this kind in the last 5 s not logged]'
    clock.now += 60.0
    assert throttle.admit('a', 'fourth a', 5.0) == 'fourth a'
