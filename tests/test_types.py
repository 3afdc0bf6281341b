"""Observation / Action validation at the API boundary: each bad input names expected and got."""

from __future__ import annotations

import numpy as np
import pytest

from auras.errors import InvalidInputError
from auras.types import Action, Observation, ObservationSpec, StepTimings


def make_obs(**changes) -> Observation:
    fields = dict(
        images={"front": np.zeros((84, 84, 3), np.uint8)},
        state=np.zeros(4, np.float32),
        instruction="push the puck",
        step_id=0,
        capture_time=1.0,
    )
    fields.update(changes)
    return Observation(**fields)


SPEC = ObservationSpec({"front": (84, 84)}, state_dim=4)


def test_valid_observation_passes_spec():
    SPEC.check(make_obs())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"images": {"front": np.zeros((84, 84, 3), np.float32)}},
            r"Observation.images\['front'\]: expected dtype uint8, got float32",
        ),
        (
            {"images": {"front": np.zeros((84, 84), np.uint8)}},
            r"Observation.images\['front'\]: expected shape \(H, W, 3\), got \(84, 84\)",
        ),
        ({"images": {"front": [[1, 2, 3]]}}, r"expected a numpy array \(H, W, 3\) uint8, got list"),
        ({"images": {}}, "Observation.images: expected a non-empty mapping"),
        ({"state": np.zeros(4, np.float64)}, "Observation.state: expected dtype float32, got float64"),
        ({"state": np.zeros((2, 2), np.float32)}, r"Observation.state: expected shape \(D,\), got \(2, 2\)"),
        (
            {"state": np.array([0, np.nan, 0, 0], np.float32)},
            r"Observation.state: expected finite values, got np.float32\(nan\) at index \(1,\)",
        ),
        (
            {"state": np.array([0, 0, np.inf, 0], np.float32)},
            r"expected finite values, got np.float32\(inf\)",
        ),
        ({"instruction": ""}, "Observation.instruction: expected non-empty text, got ''"),
        ({"instruction": "   "}, "Observation.instruction: expected non-empty text"),
        ({"step_id": -1}, "Observation.step_id: expected an integer >= 0, got -1"),
        ({"step_id": True}, "Observation.step_id: expected an integer >= 0, got True"),
        ({"capture_time": float("nan")}, "Observation.capture_time: expected finite seconds"),
        (
            {"extras": {"privileged_state": np.array([np.nan])}},
            r"extras\['privileged_state'\]: expected finite",
        ),
        (
            {"extras": {"privileged_state": np.array([1], np.int64)}},
            "expected a float numpy array, got ndarray of dtype int64",
        ),
    ],
)
def test_bad_observation_is_rejected_with_expected_and_got(changes, message):
    with pytest.raises(InvalidInputError, match=message):
        make_obs(**changes)


def test_spec_missing_camera():
    obs = make_obs(images={"wrist": np.zeros((84, 84, 3), np.uint8)})
    with pytest.raises(InvalidInputError, match=r"expected camera 'front' .*got cameras \['wrist'\]"):
        SPEC.check(obs)


def test_spec_wrong_image_size_and_state_dim():
    with pytest.raises(InvalidInputError, match=r"expected shape \(84, 84, 3\), got \(64, 64, 3\)"):
        SPEC.check(make_obs(images={"front": np.zeros((64, 64, 3), np.uint8)}))
    with pytest.raises(InvalidInputError, match=r"Observation.state: expected shape \(4,\), got \(7,\)"):
        SPEC.check(make_obs(state=np.zeros(7, np.float32)))


def test_spec_extra_cameras_are_ignored_and_extras_required():
    SPEC.check(make_obs(images={"front": np.zeros((84, 84, 3), np.uint8), "wrist": np.zeros((8, 8, 3), np.uint8)}))
    privileged = ObservationSpec({"front": (84, 84)}, 4, ("privileged_state",))
    with pytest.raises(InvalidInputError, match="expected key 'privileged_state'"):
        privileged.check(make_obs())


def test_action_validation_and_chunk_view():
    timings = StepTimings({"perception": 1.0}, 1.0)
    single = Action(np.zeros(4, np.float32), 3, 1.0, timings)
    assert not single.is_chunk and single.chunk.shape == (1, 4)
    chunk = Action(np.zeros((8, 4), np.float32), 3, 1.0, timings)
    assert chunk.is_chunk and chunk.chunk.shape == (8, 4)
    with pytest.raises(InvalidInputError, match=r"Action\.values: expected float32 numpy array, got float64"):
        Action(np.zeros(4), 0, 1.0, timings)
    with pytest.raises(InvalidInputError, match=r"Action\.values: expected finite values"):
        Action(np.array([np.nan], np.float32), 0, 1.0, timings)
    with pytest.raises(InvalidInputError, match=r"expected shape \(A,\) or \(H, A\), got \(1, 1, 1\)"):
        Action(np.zeros((1, 1, 1), np.float32), 0, 1.0, timings)
