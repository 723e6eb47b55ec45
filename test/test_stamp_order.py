"""StampOrder: a stream restart once, two clocks on one topic reported once instead of a restart per frame."""
from hamer_ros.ros.stamp_order import IN_ORDER, MIXING_ENDED, MIXING_STARTED, OUT_OF_ORDER, RESTART, StampOrder

SECOND = 1_000_000_000


def test_a_bag_played_in_a_loop_restarts_once_per_loop():
    order = StampOrder()
    loop = [5 * SECOND + i * SECOND // 30 for i in range(40)]
    events = [order.update(stamp, 'camera') for _ in range(100) for stamp in loop]
    assert events.count(RESTART) == 99 and set(events) == {IN_ORDER, RESTART}
    assert not order.mixed and order.describe() == 'in order'


def test_two_cameras_on_one_topic_are_reported_once_not_restarted_per_frame():
    order = StampOrder()
    events = []
    for i in range(600):                # camera a on a clock near 1000 s, camera b near 5000 s, alternating
        camera = 'a' if i % 2 == 0 else 'b'
        stamp = (1000 if camera == 'a' else 5000) * SECOND + (i // 2) * SECOND // 30
        events.append(order.update(stamp, f'{camera}_optical_frame'))
    assert events[:4] == [IN_ORDER, IN_ORDER, RESTART, IN_ORDER]
    assert events[4] == MIXING_STARTED and events.count(MIXING_STARTED) == 1
    assert events.count(RESTART) == 1 and set(events[5:]) == {IN_ORDER, OUT_OF_ORDER}
    assert order.mixed and order.frame_ids == ['a_optical_frame', 'b_optical_frame']
    assert order.describe().startswith('going back and forth (299 backward steps): several cameras on one topic?')
    # Camera b stops: after frames_to_recover frames in order the stream counts as one again, and a later
    # backward step is a restart again.
    later = [order.update(1100 * SECOND + i * SECOND // 30, 'a_optical_frame') for i in range(101)]
    assert later[0] == OUT_OF_ORDER and set(later[1:-1]) == {IN_ORDER}        # b's clock was ahead
    assert later[-1] == MIXING_ENDED and not order.mixed
    assert order.update(SECOND, 'a_optical_frame') == RESTART


def test_equal_stamps_are_in_order():
    order = StampOrder()
    assert [order.update(7, 'c') for _ in range(3)] == [IN_ORDER] * 3
