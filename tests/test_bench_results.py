"""The typed results model: it mirrors results.schema.json, refuses malformed documents clearly, and is
what report, compare and plots read."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from auras.bench import results as model
from auras.bench.results import fmt, load_results, parse_results
from auras.errors import InvalidInputError
from tests.results_documents import results_cell, results_document


def _schema() -> dict:
    return json.loads(resources.files("auras.bench").joinpath("results.schema.json").read_text())


def _required(cls) -> set[str]:
    return {name for name, field in cls.model_fields.items() if field.is_required()}


def test_the_models_require_exactly_what_the_schema_requires():
    schema = _schema()
    cell = schema["properties"]["results"]["items"]
    pairs = {
        model.Results: schema,
        model.Cell: cell,
        model.Metrics: cell["properties"]["metrics"],
        model.Settings: cell["properties"]["settings"],
        model.Samples: cell["properties"]["samples"],
        model.Episode: cell["properties"]["episodes"]["items"],
        model.Machine: schema["properties"]["machine"],
        model.Percentiles: schema["$defs"]["percentiles"],
        model.StalenessFrames: cell["properties"]["metrics"]["properties"]["staleness_frames"],
    }
    for cls, node in pairs.items():
        assert _required(cls) == set(node["required"]), cls.__name__


def test_a_document_that_fits_the_schema_parses_and_keeps_its_values():
    document = results_document([results_cell("sequential", hz=20.0), results_cell("auras", pp=(1, 5), hz=45.0)])
    jsonschema.validate(document, _schema())
    results = parse_results(document)
    assert [c.metrics.throughput_hz for c in results.cells] == [20.0, 45.0]
    assert results.cells[1].settings.pp_generation == 5 and results.cells[1].key[2] == "auras"
    assert results.machine.cpu_count == 16
    document["results"][0]["metrics"]["a_newer_metric"] = 1.5  # a newer writer's field passes through
    assert parse_results(document).cells[0].metrics.model_dump()["a_newer_metric"] == 1.5


@pytest.mark.parametrize(
    ("spoil", "match"),
    [
        (lambda d: d["results"][0]["metrics"].pop("throughput_hz"), r"field results\.0\.metrics\.throughput_hz: "
                                                                      r"Field required"),
        (lambda d: d["results"][1]["settings"].update(pp_generation="five"), r"results\.1\.settings\.pp_generation.*"
                                                                              r"got 'five'"),
        (lambda d: d.update(schema_version=1), r"schema_version 1, expected 2"),
        (lambda d: d["results"][0]["metrics"].update(success_rate=1.5), r"success_rate: Input should be less than or "
                                                                         r"equal to 1"),
    ],
)
def test_a_malformed_document_is_refused_naming_the_field(spoil, match):
    document = results_document([results_cell("sequential"), results_cell("auras")])
    spoil(document)
    with pytest.raises(InvalidInputError, match=match):
        parse_results(document)
    with pytest.raises(jsonschema.ValidationError):  # the schema refuses it too
        jsonschema.validate(document, _schema())


def test_load_results(tmp_path: Path):
    good = tmp_path / "results.json"
    good.write_text(json.dumps(results_document([results_cell("sequential")])))
    assert load_results(good).schema_version == 2
    assert load_results(tmp_path).clock == "virtual"  # a directory holding results.json
    with pytest.raises(InvalidInputError, match="not found"):
        load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_results(bad)
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps({"schema_version": 2, "results": []}))
    with pytest.raises(InvalidInputError, match=r"field created: Field required, .* \(and \d+ more\)"):
        load_results(shape)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(InvalidInputError, match="not an object"):
        load_results(listed)


def test_the_digest_of_a_cell_changes_with_any_episodes_actions():
    document = results_document([results_cell("auras")])
    document["results"][0]["episodes"] = [
        {"seed": 100000 + i, "success": True, "steps": 50, "actions_sha": f"{i:040x}"} for i in range(3)
    ]
    changed = copy.deepcopy(document)
    changed["results"][0]["episodes"][2]["actions_sha"] = "f" * 40
    first, again = parse_results(document).cells[0], parse_results(copy.deepcopy(document)).cells[0]
    assert first.actions_digest == again.actions_digest is not None
    assert parse_results(changed).cells[0].actions_digest != first.actions_digest
    assert parse_results(results_document([results_cell("auras")])).cells[0].actions_digest is None


def test_fmt_is_the_one_way_a_figure_becomes_text():
    assert fmt(None) == "-" and fmt(None, missing="n/a") == "n/a"
    assert fmt(12.345, ".1f") == "12.3" and fmt(3.0, ".2f", signed=True) == "+3.00"
    assert fmt(1234567) == "1,234,567" and fmt(12345.6) == "12,346" and fmt(0.0123456) == "0.01235"
    assert fmt(-2, signed=True) == "-2" and fmt("abc") == "abc" and fmt(True) == "True"


def test_the_markdown_script_reads_documents_through_the_model(tmp_path: Path):
    import subprocess
    import sys

    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_document([results_cell("sequential", hz=19.25, success=0.5)])))
    script = Path(__file__).resolve().parents[1] / "scripts" / "results_markdown.py"
    for flag in ("--rows", "--modes"):
        run = subprocess.run([sys.executable, str(script), flag, str(path)], capture_output=True, text=True, check=True)
        assert "| tiny-dp |" in run.stdout and "19.2" in run.stdout and "50% (5/10" in run.stdout, run.stdout
    path.write_text(json.dumps({"schema_version": 1}))
    refused = subprocess.run([sys.executable, str(script), "--rows", str(path)], capture_output=True, text=True)
    assert refused.returncode != 0 and "schema_version 1, expected 2" in refused.stderr
