"""compare_documents / format_comparison / load_results on small synthetic results documents."""

from __future__ import annotations

import copy

import pytest
from rich.table import Table

from auras.bench.compare import compare_documents, format_comparison
from tests.results_documents import results_cell, results_document


def _doc() -> dict:
    return results_document([results_cell("sequential", label="sequential", hz=20.0, success=0.9),
                             results_cell("auras", label="auras 1x5", hz=45.0, success=0.9)])


def _pair() -> tuple[dict, dict]:
    a = _doc()
    b = copy.deepcopy(a)
    b["results"][1]["metrics"]["throughput_hz"] = 54.0
    b["versions"]["torch"] = "2.5.0"
    b["results"].append(results_cell("pipeline", label="pipeline 1x5", hz=40.0, success=0.9))
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
        row["episodes"] = [{"seed": 100000 + i, "success": True, "steps": 50, "actions_sha": f"{i:040x}"}
                           for i in range(3)]
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
