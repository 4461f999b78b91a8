"""Example rows of each vertical: the one set behind the validation gate's golden examples, the
tests' requests, the chart's example requests and `make serve`'s curl line.

The rows live in ``predictors/examples/<vertical>.json`` (shipped with the package: ``rows``,
``quote_time``, ``about``). :func:`v2_request` turns the first complete rows into an Open Inference
Protocol V2 request. The chart cannot read outside its folder, so its copies are generated:

    python -m predictors.examples --out helm/insurance-serving/files/examples            # `make examples`
    python -m predictors.examples --out helm/insurance-serving/files/examples --check    # exit 1 if stale
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

from .spec import NUMERIC, Config, load_config


def load(vertical: str) -> dict[str, Any]:
    """The vertical's example file: ``rows`` (feature -> value; a missing optional feature is left
    out or null), ``quote_time`` and ``about``. KeyError naming the verticals that have one."""
    path = resources.files("predictors").joinpath("examples", f"{vertical}.json")
    if not path.is_file():
        have = sorted(p.name.removesuffix(".json") for p in resources.files("predictors").joinpath("examples").iterdir()
                      if p.name.endswith(".json"))
        raise KeyError(f"no example rows for vertical {vertical!r} (predictors/examples/); verticals: {', '.join(have)}")
    return json.loads(path.read_text(encoding="utf-8"))


def v2_request(vertical: str, rows: int = 3, config: Optional[Config] = None) -> dict[str, Any]:
    """The first `rows` example rows that carry every feature, as a V2 request (id ``example-<vertical>``,
    ``parameters.quote_time``): INT64 for whole numbers, FP64 for other numbers, BYTES for the rest."""
    spec = (config or load_config()).vertical(vertical)
    examples = load(vertical)
    complete = [r for r in examples["rows"] if all(r.get(f.name) not in (None, "") for f in spec.features)][:rows]
    if len(complete) < rows:
        raise ValueError(f"predictors/examples/{vertical}.json has {len(complete)} rows with every feature; {rows} asked")
    inputs = []
    for f in spec.features:
        data = [r[f.name] for r in complete]
        if f.kind != NUMERIC:
            datatype = "BYTES"
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in data):
            datatype = "INT64"
        else:
            datatype, data = "FP64", [float(v) for v in data]
        inputs.append({"name": f.name, "shape": [rows], "datatype": datatype, "data": data})
    return {"id": f"example-{vertical}", "parameters": {"quote_time": examples["quote_time"]}, "inputs": inputs}


#: Rows of the chart's example requests (helm test, the NOTES' curl line).
CHART_ROWS = 1


def chart_files(config: Optional[Config] = None) -> dict[str, str]:
    """File name -> content of the chart's files/examples/ (one V2 request per vertical)."""
    config = config or load_config()
    return {f"{name}.json": json.dumps(v2_request(name, CHART_ROWS, config), indent=2) + "\n"
            for name in sorted(config.verticals)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m predictors.examples", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder of the generated V2 requests")
    p.add_argument("--check", action="store_true", help="exit 1 if the folder differs from the generated files")
    args = p.parse_args(argv)
    files = chart_files()
    if args.check:
        present = {q.name for q in args.out.glob("*.json")} if args.out.is_dir() else set()
        stale = sorted(n for n, text in files.items()
                       if not (args.out / n).is_file() or (args.out / n).read_text(encoding="utf-8") != text)
        stale += sorted(present - set(files))
        if stale:
            print(f"stale example requests in {args.out}: {', '.join(stale)}; run `make examples`", file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
