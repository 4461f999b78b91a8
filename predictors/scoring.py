"""Tree scoring for the LightGBM lead-scoring models: the booster's own numbers, less overhead.

``BoosterScorer`` scores through predictors/lgbm.py (LightGBM's C library without the ``lightgbm``
package): LightGBM's single-row fast path for one row, ``LGBM_BoosterPredictForMat`` for a batch.

Compiled trees (lleaves, optional: ``llvmlite<0.44``) are compiled on the serving machine in a
subprocess (``python -m predictors.scoring compile MODEL.txt OUT.so``) into a cache folder outside
the bundle, keyed by model, compiler versions and CPU. The child links lleaves' object file into a
shared library and checks it against LightGBM on probe rows built from the model's own split
thresholds, which it stores with LightGBM's outputs next to the library. ``SharedLibraryScorer``
loads it with ctypes (no LLVM in the server), used only once it reproduces the stored outputs and
this process's own LightGBM within 1e-9. Without a linker, ``CompiledScorer`` runs the object file
in-process through llvmlite (MCJIT), which keeps LLVM resident in the server.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

logger = logging.getLogger("predictors.scoring")

#: Largest |compiled - LightGBM| accepted on the probe rows.
TOLERANCE = 1e-9
PROBE_ROWS = 2048

def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _as_matrix(x: np.ndarray) -> np.ndarray:
    if x.dtype != np.float64 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float64)
    return x


def import_lightgbm() -> Any:
    """``import lightgbm`` without its optional scikit-learn API.

    LightGBM imports scikit-learn (and with it most of SciPy) at import time when it is installed,
    for ``LGBMClassifier`` & co., which a Booster loaded from a text model never uses (LightGBM itself
    needs only ``scipy.sparse``).
    The one seam: scikit-learn is made unimportable for the duration of LightGBM's first import, so
    LightGBM's own ``try: import sklearn except ImportError`` takes its no-sklearn branch; then
    scikit-learn is importable again (the claims pipeline loads it normally). If scikit-learn (or
    lightgbm) is already imported, this is a plain import.
    """
    if "lightgbm" in sys.modules or "sklearn" in sys.modules:
        import lightgbm

        return lightgbm
    blocked = ("sklearn",)
    saved = {name: sys.modules.get(name, _ABSENT) for name in blocked}
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # import name -> ImportError
    try:
        import lightgbm
    finally:
        for name, value in saved.items():
            if value is _ABSENT:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    return lightgbm


_ABSENT = object()


class BoosterScorer:
    """``booster.predict(x, num_threads=1)``, with LightGBM's single-row fast path for one row."""

    name = "lightgbm"

    def __init__(self, booster: Any):
        self.booster = booster
        self.num_feature = booster.num_feature()
        self._lock = threading.Lock()  # the single-row fast config holds buffers: one call at a time
        self._single = None
        if hasattr(booster, "single_row"):  # predictors.lgbm.Booster (not the lightgbm package's fallback)
            try:
                self._single = booster.single_row(num_threads=1)
            except Exception as e:  # noqa: BLE001 (any trouble: the batch call for every size)
                logger.warning("LightGBM single-row fast path unavailable (%s); using predict", e)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _as_matrix(x)
        if self._single is not None and x.shape == (1, self.num_feature):
            out = np.empty(1, dtype=np.float64)
            with self._lock:
                self._single(_address(x), _address(out))
            return out
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)


class CompiledScorer:
    """The trees compiled by lleaves, called directly (one thread, no per-call conversions)."""

    name = "lleaves"

    def __init__(self, model_file: str | Path, object_file: str | Path):
        import lleaves

        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(object_file))
        if model._n_classes != 1:
            raise ValueError("only single-output (binary) models are supported")
        self.model = model
        self.num_feature = model.num_feature()
        self._entry = None
        engine = getattr(model, "_execution_engine", None)
        if engine is not None and model.use_fp64:  # the compiled entry point, with raw addresses as ints
            proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)
            self._entry = proto(engine.get_function_address("forest_root"))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _as_matrix(x)
        if self._entry is None:
            return np.asarray(self.model.predict(x, n_jobs=1), dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.num_feature:
            raise ValueError(f"expected (N, {self.num_feature}) features, got {x.shape}")
        n = x.shape[0]
        if n >= 2**31 - 1:
            raise ValueError("too many rows for one call")
        out = np.empty(n, dtype=np.float64)
        self._entry(_address(x), _address(out), 0, n)
        return out


class SharedLibraryScorer:
    """The trees compiled by lleaves, linked into a shared library and called through ctypes: no
    LLVM in this process."""

    name = "lleaves"

    def __init__(self, library_file: str | Path, num_feature: int):
        self.path = Path(library_file)
        self.num_feature = int(num_feature)
        self._lib = ctypes.CDLL(str(self.path))
        self._entry = self._lib.forest_root  # void forest_root(double *x, double *out, int32 start, int32 end)
        self._entry.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32]
        self._entry.restype = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _as_matrix(x)
        if x.ndim != 2 or x.shape[1] != self.num_feature:
            raise ValueError(f"expected a matrix of shape (rows, {self.num_feature}), got shape {x.shape}")
        n = x.shape[0]
        if n >= 2**31 - 1:
            raise ValueError(f"at most {2**31 - 2} rows per call, got {n}")
        out = np.empty(n, dtype=np.float64)
        self._entry(_address(x), _address(out), 0, n)
        return out


# ---- verification ------------------------------------------------------------------------------

def probe_matrix(booster: Any, rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows that take every branch of the model: per feature, each split threshold, its neighbours
    just below and above, categories used by splits (and one past them), zero and missing (NaN)."""
    dump = booster.dump_model()
    n_features = booster.num_feature()
    values: list[set[float]] = [{0.0, float("nan")} for _ in range(n_features)]

    def walk(node: dict) -> None:
        if "split_feature" not in node:
            return
        f = node["split_feature"]
        t = node["threshold"]
        if node.get("decision_type") == "==":
            cats = [float(c) for c in str(t).split("||") if c != ""]
            values[f].update(cats)
            values[f].add(max(cats, default=0.0) + 1.0)
        else:
            t = float(t)
            values[f].update((t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)))
        walk(node["left_child"])
        walk(node["right_child"])

    for tree in dump["tree_info"]:
        walk(tree["tree_structure"])
    rng = np.random.default_rng(seed)
    x = np.empty((rows, n_features), dtype=np.float64)
    for j, vals in enumerate(values):
        x[:, j] = rng.choice(np.array(sorted(vals, key=lambda v: (np.isnan(v), v))), size=rows)
    return x


def max_difference(a: Callable[[np.ndarray], np.ndarray], b: Callable[[np.ndarray], np.ndarray],
                   x: np.ndarray) -> float:
    """Largest |a - b| over the rows of x, scored as one batch and one row at a time (first 64)."""
    diff = float(np.max(np.abs(a(x) - b(x))))
    for i in range(min(64, len(x))):
        row = x[i:i + 1]
        diff = max(diff, float(np.abs(a(row) - b(row))[0]))
    return diff


def verified(candidate, reference, booster) -> bool:
    try:
        diff = max_difference(candidate, reference, probe_matrix(booster))
    except Exception as e:  # noqa: BLE001
        logger.warning("%s scorer failed on the probe rows (%s); not used", candidate.name, e)
        return False
    if not diff <= TOLERANCE:
        logger.warning("%s scorer differs from LightGBM by %.3g on the probe rows; not used", candidate.name, diff)
        return False
    return True


# ---- compile cache -----------------------------------------------------------------------------

class CacheRefused(RuntimeError):
    """A cached compiled library failed its checks (the message says which): LightGBM keeps scoring."""


def lleaves_available() -> bool:
    """Whether lleaves and llvmlite are installed (found, not imported: importing llvmlite costs MBs)."""
    return all(importlib.util.find_spec(name) is not None for name in ("lleaves", "llvmlite"))


def linker() -> list[str] | None:
    """The command that links lleaves' object file into a shared library: ``ld`` (binutils), else
    ``cc``; None when neither is on PATH."""
    ld = shutil.which("ld")
    if ld:
        return [ld, "-shared"]
    cc = shutil.which("cc")
    return [cc, "-shared"] if cc else None


def cpu_identity() -> str:
    """This CPU as the compiled code depends on it: /proc/cpuinfo's model and feature flags of the
    first processor, else the machine type."""
    keys = ("vendor_id", "cpu family", "model", "model name", "flags", "CPU implementer", "CPU architecture",
            "CPU variant", "CPU part", "Features")
    try:
        first = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split("\n\n", 1)[0]
    except OSError:
        first = ""
    fields = {}
    for line in first.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in keys:
            fields[key.strip()] = value.strip()
    return ";".join(f"{k}={fields[k]}" for k in keys if k in fields) or platform.machine()


def cache_key(model_file: str | Path) -> str:
    """sha256 of the model text, lleaves' and llvmlite's versions and this CPU: the compiled code is
    valid only for those (computed without importing the compiler)."""
    h = hashlib.sha256(Path(model_file).read_bytes())
    for dist in ("lleaves", "llvmlite"):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        h.update(f";{dist}={version}".encode())
    h.update(f";cpu={cpu_identity()}".encode())
    return h.hexdigest()[:24]


def object_path(model_file: str | Path, cache_dir: str | Path) -> Path:
    """Cache file of a model's compiled trees as an object file (run in-process by llvmlite)."""
    return Path(cache_dir) / f"{Path(model_file).stem}-{cache_key(model_file)}.o"


def library_path(model_file: str | Path, cache_dir: str | Path) -> Path:
    """Cache file of a model's compiled trees as a shared library; its probe rows and LightGBM's
    outputs on them sit next to it (:func:`expectations_path`)."""
    return Path(cache_dir) / f"{Path(model_file).stem}-{cache_key(model_file)}.so"


def compiled_path(model_file: str | Path, cache_dir: str | Path) -> Path:
    """The cache file a server looks for: the shared library where a linker exists, else the object."""
    return (library_path if linker() is not None else object_path)(model_file, cache_dir)


def expectations_path(library_file: str | Path) -> Path:
    return Path(library_file).with_suffix(".npz")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME (~/.cache) /insurance-serving/compiled when it can be written, else the same
    under the temporary folder (/tmp: the writable folder of a read-only container), so that a
    restart finds its compiled trees instead of compiling again."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for root in (Path(base), Path(tempfile.gettempdir())):
        folder = root / "insurance-serving" / "compiled"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    return Path(tempfile.gettempdir()) / "insurance-serving" / "compiled"


def _temporary(final: Path) -> str:
    fd, tmp = tempfile.mkstemp(prefix=final.name + ".", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return tmp


def compile_to(model_file: str | Path, out_file: str | Path) -> Path:
    """Compile a model with lleaves into out_file atomically (a concurrent reader never sees half a
    file): an object file (``.o``), or a shared library (``.so``: linked, checked against LightGBM
    on the probe rows, which are saved with LightGBM's outputs next to it)."""
    import lleaves

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    obj = _temporary(out_file)
    os.unlink(obj)  # lleaves writes the cache only to a path that does not exist
    tmp_so = tmp_npz = None
    try:
        lleaves.Model(model_file=str(model_file)).compile(cache=obj)
        if out_file.suffix != ".so":
            os.replace(obj, out_file)
            return out_file
        command = linker()
        if command is None:
            raise RuntimeError("no linker: neither ld nor cc is on PATH")
        tmp_so = _temporary(out_file)
        link = subprocess.run([*command, "-o", tmp_so, obj, "-l:libm.so.6"], capture_output=True, text=True)
        if link.returncode != 0:  # no libm to name: exp() then resolves in the process that loads it
            link = subprocess.run([*command, "-o", tmp_so, obj], capture_output=True, text=True)
        if link.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {link.stderr.strip()}")
        from .lgbm import load_booster

        booster = load_booster(Path(model_file).read_text(encoding="utf-8"))
        x = probe_matrix(booster)
        expected = np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)
        diff = max_difference(SharedLibraryScorer(tmp_so, booster.num_feature()), BoosterScorer(booster), x)
        if not diff <= TOLERANCE:
            raise RuntimeError(f"the compiled library differs from LightGBM by {diff:.3g} on the probe rows "
                               f"(at most {TOLERANCE} allowed)")
        tmp_npz = _temporary(out_file)
        with open(tmp_npz, "wb") as fh:
            np.savez(fh, x=x, expected=expected)
        os.replace(tmp_npz, expectations_path(out_file))  # first the expectations, then the library
        os.replace(tmp_so, out_file)
        return out_file
    finally:
        for tmp in (obj, tmp_so, tmp_npz):
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def load_verified_library(library_file: str | Path, reference: BoosterScorer, booster: Any) -> SharedLibraryScorer:
    """A cached compiled library, once it reproduces the LightGBM outputs stored next to it and this
    process's own LightGBM scores on this model's probe rows, within TOLERANCE; CacheRefused otherwise."""
    library_file = Path(library_file)
    stored = expectations_path(library_file)
    try:
        with np.load(stored, allow_pickle=False) as npz:
            x, expected = npz["x"], npz["expected"]
    except (OSError, KeyError, ValueError) as e:
        raise CacheRefused(f"{stored}: cannot read the stored probe rows and LightGBM outputs: {e}") from e
    if x.shape != (PROBE_ROWS, reference.num_feature) or expected.shape != (PROBE_ROWS,):
        raise CacheRefused(f"{stored}: probe rows of shape {x.shape} and outputs {expected.shape}; expected "
                           f"({PROBE_ROWS}, {reference.num_feature}) and ({PROBE_ROWS},)")
    if not np.array_equal(x, probe_matrix(booster), equal_nan=True):
        raise CacheRefused(f"{stored}: the stored probe rows are not this model's")
    try:
        scorer = SharedLibraryScorer(library_file, reference.num_feature)
        stored_diff = float(np.max(np.abs(scorer(x) - expected)))
        own_diff = max_difference(scorer, reference, x)
    except Exception as e:  # noqa: BLE001
        raise CacheRefused(f"{library_file}: cannot score the probe rows: {e}") from e
    if not (stored_diff <= TOLERANCE and own_diff <= TOLERANCE):
        raise CacheRefused(f"{library_file}: differs by {stored_diff:.3g} from the stored LightGBM outputs and by "
                           f"{own_diff:.3g} from this process's LightGBM (at most {TOLERANCE} allowed)")
    return scorer


def run_child(module: str, args: Sequence[Any], what: str, timeout: float = 600.0) -> None:
    """``python -m module args`` in a child interpreter (one OpenMP thread): the work that imports
    what serving should not hold. RuntimeError with the child's last stderr line when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        subprocess.run([sys.executable, "-m", module, *map(str, args)],
                       check=True, timeout=timeout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
        raise RuntimeError(f"{what} failed (exit {e.returncode}): {' '.join(tail)}") from e


def compile_in_subprocess(model_file: str | Path, out_file: str | Path, timeout: float = 600.0) -> None:
    run_child("predictors.scoring", ["compile", model_file, out_file], f"compiling {model_file}", timeout)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "compile":
        print("usage: python -m predictors.scoring compile MODEL.txt OUT.so|OUT.o", file=sys.stderr)
        return 2
    compile_to(args[1], args[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
