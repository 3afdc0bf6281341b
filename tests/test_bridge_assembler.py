"""The bridge's observation assembly and request checks, without sockets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from auras.bridge.assembler import ObservationAssembler, Part, parse_part
from auras.bridge.service import check_op, parse_configure, parse_hello, parse_reset
from auras_client.protocol import ProtocolError

IMAGE = Part("image", "front", np.zeros((4, 4, 3), np.uint8))
STATE = Part("state", "state", np.zeros(4, np.float32))


def _frame(topic: str, array: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, arrays=[array])


def test_a_seq_completes_with_every_needed_part_and_supersedes_older_incomplete_ones():
    a = ObservationAssembler(("front",), ("privileged_state",))
    assert a.add(0, 1.0, IMAGE) is None and a.add(1, 2.0, IMAGE) is None and a.add(1, 2.0, STATE) is None
    done = a.add(1, 2.0, Part("extra", "privileged_state", np.zeros(3)))
    assert done is not None and done[0] == 1 and done[1].stamp == 2.0 and set(done[1].images) == {"front"}
    assert a.counters["dropped_incomplete"] == 1 and not a.pending and a.stamps == {1: 2.0}  # seq 0 superseded
    assert a.add(0, 1.0, STATE) is None and a.counters["late_messages"] == 1  # a part of a given-up seq


def test_every_seq_is_accounted_for_lost_pending_evicted_and_reset():
    a = ObservationAssembler(("front",), max_pending=2)
    a.add(0, 0.0, IMAGE)
    a.add(3, 0.0, IMAGE)  # seqs 1 and 2 never arrived
    a.add(4, 0.0, IMAGE)  # a third incomplete seq: the oldest is evicted
    assert a.counters["lost"] == 2 and a.counters["dropped_incomplete"] == 1 and sorted(a.pending) == [3, 4]
    assert a.add(0, 0.0, STATE) is None and a.counters["late_messages"] == 1  # evicted seq 0 stays refused
    a.restart(10)
    assert a.counters["dropped_incomplete"] == 3 and not a.pending
    assert a.counters["unseen_at_reset"] == 5  # seqs 5-9 never arrived before the reset
    assert a.add(9, 0.0, IMAGE) is None and a.counters["before_reset"] == 1  # a straggler: a message, not a seq
    a.add(10, 5.0, IMAGE)
    assert a.add(10, 5.0, STATE)[0] == 10
    placed = sum(a.counters[k] for k in ("lost", "dropped_incomplete", "unseen_at_reset")) + 1  # seq 10 submitted
    assert placed == a.max_seen + 1  # every seq 0-10 exactly once


def test_after_a_reset_seqs_from_its_from_seq_that_never_came_are_lost():
    """A session whose first message is seq 3 after a reset from 0: seqs 0-2 are lost, not nowhere."""
    a = ObservationAssembler(("front",))
    a.restart(0)
    a.add(3, 0.0, IMAGE)
    assert a.counters["lost"] == 3 and a.add(3, 0.0, STATE)[0] == 3
    b = ObservationAssembler(("front",))  # no reset: the episode starts at the first seq seen
    b.add(3, 0.0, IMAGE)
    assert b.counters["lost"] == 0
    b.add(99, 0.0, IMAGE)
    b.restart(0)  # a reset without from_seq (0) while the robot's seqs go on: nothing below 100 is lost
    b.add(100, 0.0, IMAGE)
    assert b.counters["lost"] == 95 and b.counters["unseen_at_reset"] == 0  # 4-98 went missing before the reset


def test_parts_are_checked_against_the_declared_layout():
    cameras = {"front": (4, 4)}
    assert parse_part(_frame("camera/front", np.zeros((4, 4, 3), np.uint8)), cameras, 4).kind == "image"
    for frame, code in [
        (_frame("camera/side", np.zeros((4, 4, 3), np.uint8)), "unknown_topic"),
        (_frame("camera/front", np.zeros((5, 4, 3), np.uint8)), "bad_shape"),
        (_frame("camera/front", np.zeros((4, 4, 3), np.float32)), "bad_dtype"),
        (_frame("joint_states", np.full(4, np.nan, np.float32)), "bad_shape"),
        (_frame("joint_states", np.zeros(3, np.float32)), "bad_shape"),
        (_frame("wheel_odometry", np.zeros(3)), "unknown_topic"),
    ]:
        with pytest.raises(ProtocolError) as caught:
            parse_part(frame, cameras, 4)
        assert caught.value.code == code, (frame.topic, caught.value)


def test_service_requests_are_validated_before_anything_runs():
    hello = parse_hello({"versions": [1], "robot": "arm", "cameras": {"front": [84, 84]}, "state_dim": 4,
                         "instruction": "push"})
    assert hello.cameras == {"front": (84, 84)} and hello.schema == 1 and hello.extras == ()
    bad = [
        ({"versions": [99], "cameras": {"front": [84, 84]}, "state_dim": 4, "instruction": "x"}, "bad_version"),
        ({"versions": [1], "cameras": {}, "state_dim": 4, "instruction": "x"}, "bad_request"),
        ({"versions": [1], "cameras": {"front": [84, 84]}, "state_dim": True, "instruction": "x"}, "bad_request"),
        ({"versions": [1], "cameras": {"front": [84, 84]}, "state_dim": 4, "instruction": " "}, "bad_request"),
    ]
    for request, code in bad:
        with pytest.raises(ProtocolError) as caught:
            parse_hello(request)
        assert caught.value.code == code
    assert check_op({"v": 1, "op": "health"}) == "health" and check_op({"op": "hello"}) == "hello"
    with pytest.raises(ProtocolError, match="bad_version"):
        check_op({"v": 7, "op": "reset"})
    with pytest.raises(ProtocolError, match="unknown_op"):
        check_op({"v": 1, "op": "dance"})
    assert parse_reset({}) == 0 and parse_configure({"instruction": "open"}, "push") == "open"
    with pytest.raises(ProtocolError, match="from_seq"):
        parse_reset({"from_seq": -1})
    with pytest.raises(ProtocolError, match="unknown settings"):
        parse_configure({"speed": 2}, "push")
