"""LightGBM's C library through ctypes: scoring a text model without the ``lightgbm`` package.

``import lightgbm`` costs the serving process about 13.5 MB resident and 0.13 s (it imports
``scipy.sparse``, and scikit-learn when installed) for nothing a Booster loaded from a text model
needs. :class:`Booster` calls the same ``lib_lightgbm.so`` the package ships (found with
``importlib.util.find_spec``, which does not run ``lightgbm/__init__``), with the same functions
and parameters as ``lightgbm.Booster.predict``: the same numbers.

The one seam is :func:`load_booster`: if the library cannot be found or loaded, it warns once and
returns a ``lightgbm.Booster`` instead (same methods for what predictors/ uses).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import platform
import threading
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("predictors.lgbm")

# c_api.h
DTYPE_FLOAT32, DTYPE_FLOAT64 = 0, 1
PREDICT_NORMAL, PREDICT_RAW_SCORE, PREDICT_CONTRIB = 0, 1, 3
_ROW_MAJOR = 1
_MAX_ROWS = 2**31 - 1


class LightGBMError(RuntimeError):
    """A LightGBM C API call failed: the message is LightGBM's own (LGBM_GetLastError)."""


class LibraryUnavailable(RuntimeError):
    """lib_lightgbm cannot be found or loaded (the message says where it was looked for)."""


def library_candidates() -> list[Path]:
    """Where lightgbm/libpath.py looks for the library, from the package's folder (not imported)."""
    spec = importlib.util.find_spec("lightgbm")
    if spec is None or not spec.submodule_search_locations:
        raise LibraryUnavailable("the lightgbm package is not installed (importlib.util.find_spec found nothing)")
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    system = platform.system()
    name = ("lib_lightgbm.dll" if system in ("Windows", "Microsoft")
            else "lib_lightgbm.dylib" if system == "Darwin" else "lib_lightgbm.so")
    return [folder / name for folder in (package.parent, package / "bin", package / "lib")]


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _log_native(message: bytes) -> None:
    text = message.decode("utf-8", "replace").strip()
    if text:
        logger.info("%s", text)


_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(_log_native)  # kept alive: LightGBM holds it


def library() -> ctypes.CDLL:
    """lib_lightgbm loaded once, with the prototypes of the functions used here."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        candidates = library_candidates()
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise LibraryUnavailable("lib_lightgbm not found; looked for " + ", ".join(map(str, candidates)))
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise LibraryUnavailable(f"cannot load {path}: {e}") from e
        lib.LGBM_GetLastError.restype = ctypes.c_char_p
        lib.LGBM_GetLastError.argtypes = []
        handle, i32, i64, cint, vp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
        prototypes = {
            "LGBM_RegisterLogCallback": [vp],
            "LGBM_BoosterLoadModelFromString": [ctypes.c_char_p, ctypes.POINTER(cint), ctypes.POINTER(handle)],
            "LGBM_BoosterFree": [handle],
            "LGBM_BoosterGetNumFeature": [handle, ctypes.POINTER(cint)],
            "LGBM_BoosterGetNumClasses": [handle, ctypes.POINTER(cint)],
            "LGBM_BoosterCalcNumPredict": [handle, cint, cint, cint, cint, ctypes.POINTER(i64)],
            "LGBM_BoosterPredictForMat": [handle, vp, cint, i32, i32, cint, cint, cint, cint, ctypes.c_char_p,
                                          ctypes.POINTER(i64), vp],
            "LGBM_BoosterDumpModel": [handle, cint, cint, cint, i64, ctypes.POINTER(i64), vp],
            "LGBM_BoosterPredictForMatSingleRowFastInit": [handle, cint, cint, cint, cint, i32, ctypes.c_char_p,
                                                           ctypes.POINTER(handle)],
            "LGBM_BoosterPredictForMatSingleRowFast": [handle, vp, ctypes.POINTER(i64), vp],
            "LGBM_FastConfigFree": [handle],
        }
        try:
            for name, argtypes in prototypes.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, ctypes.c_int
        except AttributeError as e:
            raise LibraryUnavailable(f"{path} lacks a function this binding calls: {e}") from e
        lib.LGBM_RegisterLogCallback(ctypes.cast(_LOG_CALLBACK, ctypes.c_void_p))
        _lib = lib
        return lib


def check(lib: ctypes.CDLL, ret: int, what: str) -> None:
    """Raise LightGBMError with LightGBM's last error when a call returned non-zero."""
    if ret != 0:
        raise LightGBMError(f"{what}: {lib.LGBM_GetLastError().decode('utf-8', 'replace')}")


def _pandas_categorical(model_str: str) -> Any:
    """The model's ``pandas_categorical`` line (as lightgbm.basic._load_pandas_categorical reads it)."""
    key = "pandas_categorical:"
    last = model_str[model_str.rfind("\n", 0, -len(key)):].strip()
    return json.loads(last[len(key):]) if last.startswith(key) else None


class Booster:
    """A LightGBM model loaded from its text format: the part of ``lightgbm.Booster`` that serving
    uses (num_feature, predict, dump_model), on the library directly."""

    def __init__(self, model_str: str | None = None, model_file: str | Path | None = None):
        if (model_str is None) == (model_file is None):
            raise ValueError("give one of model_str or model_file")
        if model_file is not None:
            model_str = Path(model_file).read_text(encoding="utf-8")
        self._lib = library()
        self._handle = ctypes.c_void_p()
        iterations = ctypes.c_int()
        check(self._lib, self._lib.LGBM_BoosterLoadModelFromString(
            model_str.encode("utf-8"), ctypes.byref(iterations), ctypes.byref(self._handle)), "cannot load the model")
        self.pandas_categorical = _pandas_categorical(model_str)
        out = ctypes.c_int()
        check(self._lib, self._lib.LGBM_BoosterGetNumFeature(self._handle, ctypes.byref(out)), "num_feature")
        self._num_feature = out.value
        check(self._lib, self._lib.LGBM_BoosterGetNumClasses(self._handle, ctypes.byref(out)), "num_class")
        self.num_class = out.value

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            try:
                self._lib.LGBM_BoosterFree(handle)
            except Exception:  # noqa: BLE001 (interpreter shutdown)
                pass
            self._handle = None

    @property
    def handle(self) -> ctypes.c_void_p:
        return self._handle

    def num_feature(self) -> int:
        return self._num_feature

    def matrix(self, x: Any) -> np.ndarray:
        """x as a C-contiguous float64 (or float32) matrix of num_feature() columns; ValueError naming
        the expected and given shapes otherwise."""
        x = np.asarray(x)
        if x.dtype != np.float32 and x.dtype != np.float64:
            x = x.astype(np.float64)
        if x.ndim != 2 or x.shape[1] != self._num_feature:
            raise ValueError(f"expected a matrix of shape (rows, {self._num_feature}) (the model's features), "
                             f"got shape {x.shape}")
        if x.shape[0] > _MAX_ROWS:
            raise ValueError(f"at most {_MAX_ROWS} rows per call, got {x.shape[0]}")
        return np.ascontiguousarray(x)

    def predict(self, x: Any, raw_score: bool = False, pred_contrib: bool = False, num_threads: int = 1,
                start_iteration: int = 0, num_iteration: int = -1) -> np.ndarray:
        """``lightgbm.Booster.predict`` for a dense matrix: probabilities, raw scores (log-odds) or
        per-feature contributions (last column: the expected value); (rows,) or (rows, k)."""
        if raw_score and pred_contrib:
            raise ValueError("raw_score and pred_contrib: choose one")
        x = self.matrix(x)
        kind = PREDICT_CONTRIB if pred_contrib else PREDICT_RAW_SCORE if raw_score else PREDICT_NORMAL
        n = x.shape[0]
        size = ctypes.c_int64()
        check(self._lib, self._lib.LGBM_BoosterCalcNumPredict(
            self._handle, n, kind, start_iteration, num_iteration, ctypes.byref(size)), "predict")
        out = np.empty(size.value, dtype=np.float64)
        got = ctypes.c_int64()
        check(self._lib, self._lib.LGBM_BoosterPredictForMat(
            self._handle, x.ctypes.data, DTYPE_FLOAT32 if x.dtype == np.float32 else DTYPE_FLOAT64, n, x.shape[1],
            _ROW_MAJOR, kind, start_iteration, num_iteration, f"num_threads={int(num_threads)}".encode(),
            ctypes.byref(got), out.ctypes.data), "predict")
        if got.value != size.value:
            raise LightGBMError(f"predict: LightGBM wrote {got.value} values, {size.value} expected")
        if n and out.size != n:
            out = out.reshape(n, -1)
        return out

    def dump_model(self, num_iteration: int = -1, start_iteration: int = 0) -> dict[str, Any]:
        """The model as JSON (``lightgbm.Booster.dump_model``, split importance)."""
        size = 1 << 20
        needed = ctypes.c_int64()
        for _ in range(2):
            buffer = ctypes.create_string_buffer(size)
            check(self._lib, self._lib.LGBM_BoosterDumpModel(
                self._handle, start_iteration, num_iteration, 0, size, ctypes.byref(needed),
                ctypes.addressof(buffer)), "dump_model")
            if needed.value <= size:
                break
            size = needed.value
        out = json.loads(buffer.value.decode("utf-8"))
        out["pandas_categorical"] = self.pandas_categorical
        return out

    def single_row(self, num_threads: int = 1) -> "SingleRow":
        return SingleRow(self, num_threads)


class SingleRow:
    """LightGBM's single-row fast path (``LGBM_BoosterPredictForMatSingleRowFast``): the prediction
    configuration parsed once, not per call. Holds buffers: one call at a time (callers lock)."""

    def __init__(self, booster: Booster, num_threads: int = 1):
        self.booster = booster  # the booster outlives its fast config
        self._lib = booster._lib
        self._config = ctypes.c_void_p()
        check(self._lib, self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster.handle, PREDICT_NORMAL, 0, -1, DTYPE_FLOAT64, booster.num_feature(),
            f"num_threads={int(num_threads)}".encode(), ctypes.byref(self._config)), "single-row fast config")
        self._out_len = ctypes.c_int64()
        self._out_len_ref = ctypes.byref(self._out_len)
        # a prototype without argtypes conversions: raw addresses pass as plain ints
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        self._call = proto(ctypes.cast(self._lib.LGBM_BoosterPredictForMatSingleRowFast, ctypes.c_void_p).value)

    def __call__(self, row_address: int, out_address: int) -> None:
        """Score one float64 row of num_feature() values at row_address into one double at out_address."""
        if self._call(self._config, row_address, self._out_len_ref, out_address) != 0:
            check(self._lib, -1, "predict (single row)")
        if self._out_len.value != 1:
            raise LightGBMError(f"predict (single row): LightGBM wrote {self._out_len.value} values, 1 expected")

    def __del__(self):
        config = getattr(self, "_config", None)
        if config is not None and config.value:
            try:
                self._lib.LGBM_FastConfigFree(config)
            except Exception:  # noqa: BLE001 (interpreter shutdown)
                pass
            self._config = None


_warned = False


def load_booster(model_str: str) -> Any:
    """A :class:`Booster` for a text model; a ``lightgbm.Booster`` (with a warning, once) when the
    library cannot be used directly."""
    global _warned
    try:
        library()
    except LibraryUnavailable as e:
        if not _warned:
            logger.warning("LightGBM's library cannot be used directly (%s); importing the lightgbm package", e)
            _warned = True
        from .scoring import import_lightgbm

        return import_lightgbm().Booster(model_str=model_str)
    return Booster(model_str=model_str)
