"""`insurance-mlserver` (runtime/main.py) and MLServer's pandas codec loaded on first use
(runtime/lazy_pandas.py).

The codec checks run in child interpreters: they must start before anything imports MLServer, and
MLServer's gRPC protos cannot share this test process with tritonclient's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from runtime.serve import MLSERVER, SERVER

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
