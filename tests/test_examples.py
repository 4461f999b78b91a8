"""predictors/examples/: the one set of example rows, and the chart's generated copies of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from predictors import examples
from predictors.spec import NUMERIC

from .conftest import ROOT

CHART_EXAMPLES = ROOT / "helm" / "insurance-serving" / "files" / "examples"


def test_chart_examples_are_generated_from_the_example_rows():
    committed = {p.name: p.read_text(encoding="utf-8") for p in CHART_EXAMPLES.glob("*.json")}
    assert committed == examples.chart_files(), "stale chart examples: run `make examples`"


def test_check_fails_on_a_stale_or_extra_file_and_passes_after_writing(tmp_path):
    cli = [sys.executable, "-m", "predictors.examples", "--out", str(tmp_path)]
    assert subprocess.run(cli, capture_output=True, timeout=60).returncode == 0
    assert subprocess.run([*cli, "--check"], capture_output=True, timeout=60).returncode == 0
    (tmp_path / "auto.json").write_text("{}")
    stale = subprocess.run([*cli, "--check"], capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "auto.json" in stale.stderr and "make examples" in stale.stderr
    subprocess.run(cli, capture_output=True, timeout=60)
    (tmp_path / "boat.json").write_text("{}")
    assert subprocess.run([*cli, "--check"], capture_output=True, timeout=60).returncode == 1


@pytest.mark.parametrize("name", ["auto", "home", "health", "life", "claims"])
def test_v2_request_is_the_first_complete_rows(config, name):
    spec = config.vertical(name)
    rows = examples.load(name)["rows"]
    complete = [r for r in rows if all(r.get(f.name) not in (None, "") for f in spec.features)]
    request = examples.v2_request(name, rows=3, config=config)
    assert [i["name"] for i in request["inputs"]] == list(spec.feature_names)
    for inp, feature in zip(request["inputs"], spec.features):
        assert inp["shape"] == [3]
        assert inp["data"] == [r[feature.name] for r in complete[:3]]
        assert (inp["datatype"] == "BYTES") == (feature.kind != NUMERIC)
    assert request["parameters"] == {"quote_time": examples.load(name)["quote_time"]}


def test_too_few_complete_rows_and_an_unknown_vertical_are_named():
    with pytest.raises(ValueError, match="rows with every feature; 1000 asked"):
        examples.v2_request("auto", rows=1000)
    with pytest.raises(KeyError, match="no example rows for vertical 'boat'.*auto"):
        examples.load("boat")
