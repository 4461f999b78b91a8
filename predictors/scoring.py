"""Tree scoring for the LightGBM lead-scoring models: the booster's own numbers, less overhead.

``BoosterScorer`` calls LightGBM's C API directly (the single-row fast path for one row,
``LGBM_BoosterPredictForMat`` for a batch) instead of ``Booster.predict``, whose per-call Python
work (argument checks, parameter strings, array conversions) costs more than scoring one row.
Same library, same function, same numbers; if the C API is not usable it falls back to
``Booster.predict``.

``CompiledScorer`` runs the trees compiled to machine code by lleaves (optional dependency,
``llvmlite<0.44``). It is compiled on the serving machine from the bundle's text model into a
cache directory outside the bundle (never shipped: the object code is specific to this CPU and
these library versions, which the cache key holds), and used only after its outputs matched
LightGBM's within 1e-9 on probe rows built from the model's own split thresholds.
``python -m predictors.scoring compile MODEL.txt OUT.o`` compiles one model (the runtime runs it in
a subprocess so that serving is not slowed while LLVM works).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

logger = logging.getLogger("predictors.scoring")

#: Largest |compiled - LightGBM| accepted on the probe rows.
TOLERANCE = 1e-9
PROBE_ROWS = 2048

_C_API_DTYPE_FLOAT64 = 1
_C_API_PREDICT_NORMAL = 0


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


def booster_from_string(text: str) -> Any:
    """A LightGBM booster from a text model (the one place predictors/ builds one from text)."""
    return import_lightgbm().Booster(model_str=text)


class BoosterScorer:
    """``booster.predict(x, num_threads=1)`` through LightGBM's C API."""

    name = "lightgbm"

    def __init__(self, booster: Any):
        self.booster = booster
        self.num_feature = booster.num_feature()
        self._lock = threading.Lock()  # the single-row fast config holds buffers: one call at a time
        self._fast = None
        self._lib = None
        try:
            import_lightgbm()
            from lightgbm.basic import _LIB, _safe_call

            fast = ctypes.c_void_p()
            _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle, ctypes.c_int(_C_API_PREDICT_NORMAL), ctypes.c_int(0), ctypes.c_int(-1),
                ctypes.c_int(_C_API_DTYPE_FLOAT64), ctypes.c_int32(self.num_feature),
                ctypes.c_char_p(b"num_threads=1"), ctypes.byref(fast)))
            self._lib, self._check, self._fast = _LIB, _safe_call, fast
            self._params = ctypes.c_char_p(b"num_threads=1")
            self._out_len = ctypes.c_int64()
            # the single-row call through our own prototype: raw addresses pass as plain ints
            single = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64),
                                      ctypes.c_void_p)
            self._single = single(ctypes.cast(_LIB.LGBM_BoosterPredictForMatSingleRowFast, ctypes.c_void_p).value)
            self._out_len_ref = ctypes.byref(self._out_len)
        except Exception as e:  # noqa: BLE001 (any trouble: the plain Python API)
            logger.warning("LightGBM C API fast path unavailable (%s); using Booster.predict", e)

    def __del__(self):
        if self._fast is not None and self._lib is not None:
            try:
                self._lib.LGBM_FastConfigFree(self._fast)
            except Exception:  # noqa: BLE001
                pass

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._fast is None:
            return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)
        x = _as_matrix(x)
        n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        with self._lock:
            if n == 1 and x.shape[1] == self.num_feature:
                if self._single(self._fast, _address(x), self._out_len_ref, _address(out)) != 0:
                    self._check(-1)  # raises LightGBMError with LightGBM's last error message
            else:
                out_ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
                self._check(self._lib.LGBM_BoosterPredictForMat(
                    self.booster._handle, x.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(_C_API_DTYPE_FLOAT64),
                    ctypes.c_int32(n), ctypes.c_int32(x.shape[1]), ctypes.c_int(1),
                    ctypes.c_int(_C_API_PREDICT_NORMAL), ctypes.c_int(0), ctypes.c_int(-1), self._params,
                    self._out_len_ref, out_ptr))
            if self._out_len.value != n:
                raise RuntimeError(f"LightGBM returned {self._out_len.value} scores for {n} rows")
        return out


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

def lleaves_available() -> bool:
    try:
        import lleaves  # noqa: F401
        import llvmlite  # noqa: F401
    except ImportError:
        return False
    return True


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


def object_path(model_file: str | Path, cache_dir: str | Path) -> Path:
    """Cache file of a model's compiled trees: keyed by the model text, the compiler's versions and
    this CPU, since the object code is valid only for those."""
    import lleaves
    import llvmlite
    import llvmlite.binding as llvm

    h = hashlib.sha256(Path(model_file).read_bytes())
    h.update(f"lleaves={getattr(lleaves, '__version__', '?')};llvmlite={llvmlite.__version__};".encode())
    h.update(f"cpu={llvm.get_host_cpu_name()};{llvm.get_host_cpu_features().flatten()}".encode())
    return Path(cache_dir) / f"{Path(model_file).stem}-{h.hexdigest()[:24]}.o"


def compile_to(model_file: str | Path, object_file: str | Path) -> Path:
    """Compile a model into object_file atomically (a concurrent reader never sees half a file)."""
    import lleaves

    object_file = Path(object_file)
    object_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=object_file.name + ".", suffix=".tmp", dir=object_file.parent)
    os.close(fd)
    os.unlink(tmp)  # lleaves writes the cache only to a path that does not exist
    try:
        lleaves.Model(model_file=str(model_file)).compile(cache=tmp)
        os.replace(tmp, object_file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return object_file


def compile_in_subprocess(model_file: str | Path, object_file: str | Path, timeout: float = 600.0) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "predictors.scoring", "compile", str(model_file), str(object_file)],
                   check=True, timeout=timeout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "compile":
        print("usage: python -m predictors.scoring compile MODEL.txt OUT.o", file=sys.stderr)
        return 2
    compile_to(args[1], args[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
