"""Demonstration datasets: collect -> store -> lazy read round trip, append, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from auras.cli import app
from auras.data.dataset import ReplayDataset
from auras.errors import InvalidInputError


@pytest.mark.mujoco
def test_collect_round_trip_matches_a_replay_of_the_env(tmp_path):
    from auras.data.collect import collect
    from auras.envs import make_env

    out = tmp_path / "demos"
    summary = collect("reach-v3", episodes=2, out=out, seed=5, horizon=60)
    assert summary["episodes"] == 2 and summary["tasks"] == ["reach-v3"]
    data = ReplayDataset(out)
    episode = data.episode(1)
    assert (episode.task, episode.seed, episode.instruction) == ("reach-v3", 6, "reach the goal position")
    assert episode.images.dtype == np.uint8 and episode.images.shape[1:] == (84, 84, 3)
    assert len(episode.images) == len(episode.state) == len(episode.action) <= 60
    # Replaying the stored actions from the stored seed reproduces the stored frames exactly.
    with make_env("reach-v3", horizon=60) as env:
        obs, _ = env.reset(seed=episode.seed)
        for t in range(len(episode.action)):
            assert np.array_equal(obs["image"], episode.images[t])
            np.testing.assert_array_equal(obs["state"], episode.state[t])
            obs, *_ = env.step(episode.action[t])


@pytest.mark.mujoco
def test_collect_appends_and_cli_reports(tmp_path):
    out = tmp_path / "demos"
    runner = CliRunner()
    for seed in ("0", "10"):
        result = runner.invoke(app, ["collect", "--task", "button-press-v3", "-n", "1", "--out", str(out),
                                     "--seed", seed, "--horizon", "30"])
        assert result.exit_code == 0, result.output
    assert "dataset now has 2 episodes" in result.output
    data = ReplayDataset(out)
    assert data.num_episodes == 2
    assert data.num_steps == data.array("state").shape[0] == int(data.episode_ends[-1])
    assert list(data.array("step")[: data.episode_ends[0]]) == list(range(int(data.episode_ends[0])))


def test_collecting_seeds_a_store_already_has_is_refused_with_the_next_free_seed(tmp_path):
    out = tmp_path / "demos"
    runner = CliRunner()
    args = ["collect", "--task", "button-press-v3", "-n", "2", "--out", str(out), "--horizon", "20"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)  # seeds 0 and 1 again
    assert again.exit_code != 0
    assert "already has button-press-v3 episodes on seeds [0, 1]" in again.output and "--seed 2" in again.output
    assert ReplayDataset(out).num_episodes == 2  # nothing was added
    other_task = runner.invoke(app, ["collect", "--task", "reach-v3", "-n", "1", "--out", str(out), "--horizon", "20"])
    assert other_task.exit_code == 0, other_task.output  # the same seed of another task is another episode


def test_dataset_rejects_bad_episodes_and_missing_store(tmp_path):
    data = ReplayDataset(tmp_path / "d", mode="a", image_size=8)
    good = dict(images=np.zeros((3, 8, 8, 3), np.uint8), state=np.zeros((3, 4), np.float32),
                action=np.zeros((3, 4), np.float32))
    data.append_episode("reach-v3", "reach", 0, True, **good)
    with pytest.raises(InvalidInputError, match=r"append_episode images: expected shape \(3, 16, 16, 3\)"):
        ReplayDataset(tmp_path / "e", mode="a", image_size=16).append_episode("reach-v3", "reach", 0, True, **good)
    with pytest.raises(InvalidInputError, match=r"append_episode action: expected shape \(3, 4\) float32"):
        data.append_episode("reach-v3", "reach", 0, True, **{**good, "action": np.zeros((3, 4))})
    with pytest.raises(InvalidInputError, match="expected 8px images"):
        ReplayDataset(tmp_path / "d", mode="a", image_size=84)
    with pytest.raises(InvalidInputError, match="no auras dataset at"):
        ReplayDataset(tmp_path / "missing")
    assert ReplayDataset(tmp_path / "d").num_episodes == 1  # failed appends left nothing behind
    with pytest.raises(IndexError, match="dataset has 1 episodes"):
        ReplayDataset(tmp_path / "d").episode(3)
