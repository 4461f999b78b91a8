"""Writing bundles: model file + manifest.json + model-settings.json in <out>/<vertical>/<version>/."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from predictors.bundle import MANIFEST, MODEL_FILES, sha256_file
from predictors.spec import Vertical

from .train import TrainResult

BUNDLE_FORMAT = 1
RUNTIME_IMPLEMENTATION = "runtime.InsuranceModel"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def canonical_skops(data: bytes) -> bytes:
    """Make a skops archive byte-reproducible.

    skops names its arrays and tags shared objects by memory address and stamps zip entries
    with the current time; renumber the ids in order of appearance and fix the timestamps.
    """
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = src.read("schema.json").decode("utf-8")
    ids: dict[str, str] = {}

    def renumber(m: re.Match) -> str:
        return m.group(0).replace(m.group(1), ids.setdefault(m.group(1), str(len(ids) + 1)))

    schema = re.sub(r'"__id__": (\d+)', renumber, schema)
    schema = re.sub(r'"(\d+)\.npy"', renumber, schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        names = sorted(n for n in src.namelist() if n != "schema.json")
        for name in names:
            stem = name[:-4] if name.endswith(".npy") else None
            new = f"{ids[stem]}.npy" if stem in ids else name
            dst.writestr(zipfile.ZipInfo(new, _ZIP_EPOCH), src.read(name))
        dst.writestr(zipfile.ZipInfo("schema.json", _ZIP_EPOCH), schema)
    # Entries are written in a fixed order: sort renamed npy entries by their new names.
    return _sorted_zip(out.getvalue())


def _sorted_zip(data: bytes) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(src.namelist()):
            dst.writestr(zipfile.ZipInfo(name, _ZIP_EPOCH), src.read(name))
    return out.getvalue()


def model_bytes(result: TrainResult, framework: str) -> bytes:
    if framework == "lightgbm":
        return result.model.model_to_string().encode("utf-8")
    import skops.io

    # HashingVectorizer caches id(stop_words) after transform: a memory address, not model state.
    for _, step, _ in result.model.named_steps["preprocess"].transformers_:
        if hasattr(step, "_stop_words_id"):
            del step._stop_words_id
    return canonical_skops(skops.io.dumps(result.model))


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_bundle(out: str | Path, vertical: Vertical, version: str, result: TrainResult,
                 training: dict[str, Any], force: bool = False) -> Path:
    """Write the bundle atomically (temp folder, then rename) and return its folder."""
    if not SEMVER.match(version):
        raise ValueError(f"version {version!r} is not semver (MAJOR.MINOR.PATCH)")
    folder = Path(out) / vertical.name / version
    if folder.exists() and not force:
        raise FileExistsError(f"{folder} exists; bundles are immutable (pass --force to overwrite)")
    model_file = MODEL_FILES[vertical.framework]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=folder.parent))
    tmp.chmod(0o755)
    try:
        (tmp / model_file).write_bytes(model_bytes(result, vertical.framework))
        created = os.environ.get("SOURCE_DATE_EPOCH")
        manifest = {
            "bundle_format": BUNDLE_FORMAT,
            "name": vertical.name,
            "vertical": vertical.name,
            "version": version,
            "task": vertical.task,
            "framework": vertical.framework,
            "description": vertical.description,
            "created": (datetime.fromtimestamp(int(created), timezone.utc) if created
                        else datetime.now(timezone.utc)).replace(microsecond=0).isoformat(),
            "model_file": model_file,
            "files": {model_file: sha256_file(tmp / model_file)},
            "feature_spec": vertical.feature_spec(),
            "target": vertical.target,
            "encoding": result.encoding,
            "training": {**training, "git_commit": git_commit(), "params": result.params,
                         "n_train": result.n_train, "n_test": result.n_test},
            "metrics": result.metrics,
            "reference": result.reference,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        settings = {"name": vertical.name, "implementation": RUNTIME_IMPLEMENTATION,
                    "parameters": {"version": version, "uri": "./"}}
        (tmp / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder
