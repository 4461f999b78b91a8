"""MLServer's pandas codec, imported on first use instead of at ``import mlserver``.

``mlserver.codecs`` imports ``mlserver.codecs.pandas``, which imports pandas (~40 MB resident and
~0.2 s per process) although this runtime never decodes a DataFrame. ``install()`` (run by the
entry point, runtime/main.py, before anything imports MLServer) puts a stand-in ``PandasCodec``
in that module's place: registered under the same content type ("pd"), answering
``can_encode`` without pandas while pandas is not imported, and loading MLServer's own module (which
then registers the real codec) the first time anything else is asked of it. So a "pd" request or
a runtime that imports pandas gets MLServer's codec, unchanged.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from typing import Any

MODULE = "mlserver.codecs.pandas"

_lock = threading.RLock()
_real_spec: importlib.machinery.ModuleSpec | None = None


def real_codec() -> Any:
    """MLServer's own PandasCodec (its module is executed now if it was not yet)."""
    with _lock:
        module = sys.modules.get(MODULE)
        if module is None or getattr(module, "_insurance_stand_in", False):
            if _real_spec is None:  # never stood in: a plain import
                return importlib.import_module(MODULE).PandasCodec
            real = importlib.util.module_from_spec(_real_spec)
            sys.modules[MODULE] = real
            try:
                _real_spec.loader.exec_module(real)  # registers the real codec for "pd"
            except BaseException:
                sys.modules[MODULE] = module
                raise
            setattr(sys.modules["mlserver.codecs"], "pandas", real)
            module = real
        return module.PandasCodec


class _StandInMeta(type):
    @property
    def TypeHint(cls) -> Any:  # noqa: N802 (MLServer's name)
        # pd.DataFrame once pandas is imported (only then can a type hint name it), else no match
        return real_codec().TypeHint if "pandas" in sys.modules else _NotADataFrame


class _NotADataFrame:
    """The stand-in's type hint while pandas is not imported: no annotation is this class."""


def _stand_in_class(request_codec: type) -> type:
    def delegate(name: str):
        def method(cls, *args, **kwargs):
            return getattr(real_codec(), name)(*args, **kwargs)

        method.__name__ = name
        return classmethod(method)

    body: dict[str, Any] = {
        "__doc__": "Stand-in for mlserver.codecs.PandasCodec: loads and calls the real one on first use.",
        "ContentType": "pd",
        "JsonContentType": "pd_json",
        # a payload can be a DataFrame only if pandas is imported
        "can_encode": classmethod(lambda cls, payload: "pandas" in sys.modules and real_codec().can_encode(payload)),
    }
    for name in ("encode", "encode_response", "decode_response", "encode_request", "decode", "decode_request"):
        body[name] = delegate(name)
    meta = type("_PandasCodecMeta", (_StandInMeta, type(request_codec)), {})
    return meta("PandasCodec", (request_codec,), body)


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        from mlserver.codecs.base import RequestCodec, register_request_codec

        module._insurance_stand_in = True
        module.PandasCodec = register_request_codec(_stand_in_class(RequestCodec))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        global _real_spec
        if fullname != MODULE or "pandas" in sys.modules:  # pandas already paid for: the real module
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        _real_spec = spec
        return importlib.util.spec_from_loader(fullname, _Loader(), origin=spec.origin)


def install() -> bool:
    """Stand in for MLServer's pandas codec; False (stock import) if MLServer is already imported."""
    if "mlserver.codecs" in sys.modules or "mlserver.codecs.pandas" in sys.modules:
        return False
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    return True
