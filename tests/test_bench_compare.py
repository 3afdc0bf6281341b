"""compare_documents / format_comparison / load_results on small synthetic results documents."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rich.table import Table

from auras.bench.compare import compare_documents, format_comparison, load_results
from auras.errors import InvalidInputError


def _row(mode: str, label: str, hz: float) -> dict:
    return {
        "task": "button-press-v3",
        "policy": "tiny-dp",
        "mode": mode,
        "label": label,
        "metrics": {
            "episodes": 20,
            "success_rate": 0.9,
            "success_ci95": [0.7, 0.97],
            "throughput_hz": hz,
            "speedup": None,
            "latency_ms": {"p50": 10.0, "p90": 12.0, "p99": None},
            "staleness_frames": {"mean": 2.0, "max": 6},
        },
        "samples": {"intervals_ms": [1.0, 2.0]},
    }


def _doc() -> dict:
    return {
        "schema_version": 1,
        "config_hash": "abc",
        "clock": "virtual",
        "episodes": 20,
        "versions": {"auras": "0.1.0", "torch": "2.4.0"},
        "machine": {"cpu_model": "X", "cpu_count": 16},
        "results": [_row("sequential", "sequential", 20.0), _row("auras", "auras 1x5", 45.0)],
    }


def _pair() -> tuple[dict, dict]:
    a = _doc()
    b = copy.deepcopy(a)
    b["results"][1]["metrics"]["throughput_hz"] = 54.0
    b["versions"]["torch"] = "2.5.0"
    b["results"].append(_row("pipeline", "pipeline 1x5", 40.0))
    return a, b


def test_compare_documents_reports_changes():
    a, b = _pair()
    diffs = compare_documents(a, b)

    run = [d for d in diffs if d["row"] == "(run)"]
    assert run == [
        {"row": "(run)", "field": "versions.torch", "a": "2.4.0", "b": "2.5.0", "delta": None, "ratio": None}
    ]

    changed = [d for d in diffs if d["row"] != "(run)" and "only_in" not in d and d["a"] != d["b"]]
    assert len(changed) == 1
    (hz,) = changed
    assert hz["row"] == "tiny-dp button-press-v3 auras 1x5"
    assert hz["field"] == "throughput_hz"
    assert (hz["a"], hz["b"]) == (45.0, 54.0)
    assert hz["delta"] == pytest.approx(9.0)
    assert hz["ratio"] == pytest.approx(1.2)

    only = [d for d in diffs if "only_in" in d]
    assert len(only) == 1 and only[0]["only_in"] == "B"
    assert only[0]["row"] == "tiny-dp button-press-v3 pipeline 1x5"

    fields = {d["field"] for d in diffs if d["row"] == "tiny-dp button-press-v3 sequential"}
    assert {"latency_ms.p50", "latency_ms.p90", "staleness_frames.max", "throughput_hz"} <= fields
    assert not fields & {"speedup", "latency_ms.p99", "success_ci95"}  # None on both sides / lists are skipped


def test_identical_documents_have_no_changes():
    diffs = compare_documents(_doc(), _doc())
    assert all(d["a"] == d["b"] for d in diffs)
    assert format_comparison(diffs, "a", "b").row_count == 0


def test_a_single_changed_action_changes_the_rows_actions_digest():
    a = _doc()
    for row in a["results"]:
        row["episodes"] = [{"seed": 100000 + i, "success": True, "actions_sha": f"{i:040x}"} for i in range(3)]
    same, changed = copy.deepcopy(a), copy.deepcopy(a)
    changed["results"][1]["episodes"][2]["actions_sha"] = "f" * 40  # one episode acted differently

    assert [d for d in compare_documents(a, same) if d["field"] == "actions_sha" and d["a"] != d["b"]] == []
    (diff,) = [d for d in compare_documents(a, changed) if d["field"] == "actions_sha" and d["a"] != d["b"]]
    assert diff["row"] == "tiny-dp button-press-v3 auras 1x5"
    assert format_comparison([diff], "before", "after").row_count == 1


def test_format_comparison_table():
    a, b = _pair()
    diffs = compare_documents(a, b)
    table = format_comparison(diffs, "old", "new")
    assert isinstance(table, Table)
    assert len(table.columns) == 6
    assert table.row_count == 3  # versions.torch, throughput_hz, the row only in B
    assert format_comparison(diffs, "old", "new", only_changed=False).row_count == len(diffs)


def test_load_results(tmp_path: Path):
    good = tmp_path / "results.json"
    good.write_text(json.dumps(_doc()))
    assert load_results(good)["schema_version"] == 1
    assert load_results(tmp_path)["clock"] == "virtual"  # a directory holding results.json

    with pytest.raises(InvalidInputError, match="not found"):
        load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_results(bad)
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps({"results": []}))
    with pytest.raises(InvalidInputError, match="lacks 'schema_version'"):
        load_results(shape)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(InvalidInputError, match="not an object"):
        load_results(listed)
