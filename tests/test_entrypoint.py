"""`insurance-mlserver` (runtime/main.py) and MLServer's pandas codec loaded on first use
(runtime/lazy_pandas.py).

The codec checks run in child interpreters: they must start before anything imports MLServer, and
MLServer's gRPC protos cannot share this test process with tritonclient's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from runtime.serve import MLSERVER, SERVER

from .conftest import copy_repository, shipped_bundle, start_server, stop_server

PRELUDE = """
import sys
from runtime import patches
patches.install_early()
assert patches.STATE == {"lazy-pandas-codec": True}, patches.STATE
"""


def run_child(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_mlserver_imports_without_pandas():
    out = run_child("""
        import mlserver, mlserver.codecs, mlserver.server
        from mlserver.codecs.base import find_request_codec
        assert "pandas" not in sys.modules
        assert find_request_codec("pd").ContentType == "pd"
        print("ok")
    """)
    assert out.strip() == "ok"


def test_stand_in_does_not_claim_other_payloads_or_load_pandas():
    run_child("""
        import numpy as np
        from mlserver.codecs import NumpyRequestCodec
        from mlserver.codecs.base import find_request_codec_by_payload
        assert find_request_codec_by_payload(np.zeros((2, 2))) is NumpyRequestCodec
        assert "pandas" not in sys.modules
    """)


def test_pd_requests_round_trip_through_mlservers_codec():
    run_child("""
        import mlserver.codecs.pandas as stand_in_module
        import pandas as pd
        from mlserver.codecs import PandasCodec
        from mlserver.codecs.base import find_request_codec, find_request_codec_by_payload
        assert getattr(stand_in_module, "_insurance_stand_in", False)
        frame = pd.DataFrame({"a": [1.5, 2.5], "b": [3, 4]})
        request = find_request_codec("pd").encode_request(frame)
        assert request.parameters.content_type == "pd"
        pd.testing.assert_frame_equal(find_request_codec("pd").decode_request(request), frame)
        # the real module now stands where the stand-in stood, and its codec is the registered one
        real = sys.modules["mlserver.codecs.pandas"]
        assert not getattr(real, "_insurance_stand_in", False)
        assert find_request_codec("pd") is real.PandasCodec
        assert find_request_codec_by_payload(frame) is real.PandasCodec
        pd.testing.assert_frame_equal(PandasCodec.decode_request(request), frame)  # the old name delegates
    """)


def test_type_hinted_custom_runtime_finds_the_pandas_codec():
    run_child("""
        import asyncio
        import mlserver
        import pandas as pd  # after MLServer, as a custom runtime's module would
        from mlserver import MLModel
        from mlserver.codecs import PandasCodec, decode_args
        from mlserver.settings import ModelSettings

        class Doubler(MLModel):
            @decode_args
            async def predict(self, payload: pd.DataFrame) -> pd.DataFrame:
                return payload * 2

        model = Doubler(ModelSettings(name="doubler", implementation=Doubler))
        request = PandasCodec.encode_request(pd.DataFrame({"a": [1.0, 2.0]}))
        response = asyncio.run(model.predict(request))
        assert response.outputs[0].data.root == [2.0, 4.0], response
    """)


def test_install_early_leaves_an_already_imported_mlserver_alone():
    result = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import mlserver.codecs, sys
        from runtime import patches
        patches.install_early()
        assert patches.STATE == {"lazy-pandas-codec": False}, patches.STATE
        assert not getattr(sys.modules["mlserver.codecs.pandas"], "_insurance_stand_in", False)
    """)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_other_commands_go_to_mlservers_cli():
    ours = subprocess.run([str(SERVER), "--version"], capture_output=True, text=True, timeout=60)
    stock = subprocess.run([str(MLSERVER), "--version"], capture_output=True, text=True, timeout=60)
    assert ours.returncode == 0 and ours.stdout.split()[-1] == stock.stdout.split()[-1] == "1.7.1"


def test_start_without_a_folder_names_the_argument():
    result = subprocess.run([str(SERVER), "start"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "folder" in result.stderr


# ---- a real server started by the entry point ------------------------------------------------

def mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
def test_lead_scoring_server_maps_no_pandas_sklearn_or_llvm(tmp_path):
    """The shipped entry point serving `auto` with compiled trees (a fresh cache: compiled in the
    background while LightGBM serves): the swap is in the server log, the answers stay LightGBM's
    within 1e-9, and the process never maps pandas, scikit-learn, SciPy or LLVM."""
    from predictors import examples, load_predictor

    repo = copy_repository(tmp_path / "repo", ["auto"])
    env = {"INSURANCE_COMPILED_TREES": "true", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    server = start_server(repo, tmp_path, ["/v2/models/auto/ready"], env=env)
    try:
        deadline = time.monotonic() + 120
        while "scoring with compiled trees" not in server.log_text():
            assert "compiled trees unavailable" not in server.log_text(), server.log_text()[-3000:]
            assert time.monotonic() < deadline, server.log_text()[-3000:]
            time.sleep(0.5)
        request = examples.v2_request("auto")
        answer = urllib.request.urlopen(urllib.request.Request(
            f"{server.http}/v2/models/auto/infer", json.dumps(request).encode(), {"Content-Type": "application/json"}),
            timeout=10)
        scores = next(o["data"] for o in json.loads(answer.read())["outputs"] if o["name"] == "score")
        raw = {i["name"]: i["data"] for i in request["inputs"]}
        expected = load_predictor(shipped_bundle("auto")).predict(raw).outputs["score"]
        assert np.max(np.abs(np.array(scores) - expected)) <= 1e-9
        maps = mapped(server.process.pid)
        for library in ("/pandas/", "/sklearn/", "/scipy/", "/llvmlite/", "/pyarrow/"):
            assert library not in maps, f"{library} mapped by the serving process"
    finally:
        stop_server(server)
