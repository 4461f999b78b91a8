"""Model bundles: a folder with manifest.json, one model file and model-settings.json.

Only two model formats are loadable: LightGBM's native text format (``model.txt``) and
scikit-learn through skops (``model.skops``) with an explicit list of trusted types.
Pickle-family files are refused (by name before any byte of them is read, else by their first
bytes) by :func:`pickle_files`, used by the runtime and by the validation gate. Every file listed in the
manifest is checked against its sha256 before the model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MODEL_FILES = {"lightgbm": "model.txt", "sklearn": "model.skops"}
REFUSED_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle", ".dill", ".sav", ".npy", ".pt", ".pth")
#: First bytes of a pickle stream of protocol 2 to 5 (the PROTO opcode), whatever the file is called.
PICKLE_MAGIC = tuple(bytes((0x80, protocol)) for protocol in range(2, 6))
REQUIRED_KEYS = ("name", "vertical", "version", "task", "framework", "model_file", "files",
                 "feature_spec", "encoding", "training", "metrics", "reference")

# Types skops may instantiate when loading the claims pipeline: nothing outside this list.
SKOPS_TRUSTED_TYPES = [
    "sklearn.pipeline.Pipeline",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.feature_extraction.text.HashingVectorizer",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "numpy.dtype",
]


class BundleError(Exception):
    """A bundle cannot be loaded: the message says which file and why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pickle_files(folder: Path) -> list[str]:
    """Why each pickle-family file of a bundle folder is refused (empty: none). A refused suffix
    is refused without opening the file; any other file by its first bytes (a pickle renamed)."""
    problems = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.suffix.lower() in REFUSED_SUFFIXES:
            problems.append(f"{path.name}: {path.suffix} files can execute code when loaded")
            continue
        with open(path, "rb") as fh:
            if fh.read(2) in PICKLE_MAGIC:
                problems.append(f"{path.name}: a pickle stream under another name")
    return problems


def refuse_pickles(folder: Path) -> None:
    problems = pickle_files(folder)
    if problems:
        raise BundleError(f"{folder}: {'; '.join(problems)}; pickles are never loaded; allowed model files: "
                          f"{', '.join(MODEL_FILES.values())}")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BundleError(f"{folder}: no {MANIFEST}; a bundle needs one (see training/bundle.py)") from e
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: cannot read the manifest: {e}") from e
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{path}: manifest lacks {', '.join(missing)}")
    expected = MODEL_FILES.get(manifest["framework"])
    if expected is None:
        raise BundleError(f"{path}: framework {manifest['framework']!r} is not one of {', '.join(MODEL_FILES)}")
    if manifest["model_file"] != expected:
        raise BundleError(f"{path}: model_file {manifest['model_file']!r}; a {manifest['framework']} bundle holds {expected!r}")
    return manifest


def verify_files(folder: str | Path, manifest: dict[str, Any]) -> None:
    """Check every file the manifest lists against its sha256; refuse pickle-family files."""
    folder = Path(folder)
    refuse_pickles(folder)
    if manifest["model_file"] not in manifest["files"]:
        raise BundleError(f"{folder / MANIFEST}: the model file {manifest['model_file']} has no sha256 in 'files'")
    for name, expected in manifest["files"].items():
        path = folder / name
        if Path(name).name != name:
            raise BundleError(f"{folder / MANIFEST}: file entry {name!r} must be a plain file name")
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"{path}: sha256 {actual} does not match the manifest's {expected}; "
                              "the file was changed or corrupted after the bundle was written")


def load_model(folder: str | Path, manifest: dict[str, Any]) -> Any:
    """Load the (already verified) model file: a LightGBM booster (predictors/lgbm.py, without the
    lightgbm package) or a scikit-learn Pipeline."""
    path = Path(folder) / manifest["model_file"]
    try:
        if manifest["framework"] == "lightgbm":
            from .lgbm import load_booster

            return load_booster(path.read_text(encoding="utf-8"))
        import skops.io

        return skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)
    except BundleError:
        raise
    except Exception as e:
        raise BundleError(f"{path}: cannot load the {manifest['framework']} model: {e}") from e


def open_bundle(folder: str | Path) -> tuple[dict[str, Any], Any]:
    """Read, verify and load a bundle: (manifest, model)."""
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    return manifest, load_model(folder, manifest)
