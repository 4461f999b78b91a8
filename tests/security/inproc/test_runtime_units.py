"""In-process unit tests of runtime/limits.py, runtime/hardening.py, runtime/loading.py and
the runtime's bundle-signature check (run in a fresh interpreter by tests/security/test_inproc.py)."""

from __future__ import annotations

import asyncio
import shutil
import tracemalloc
import types

import pytest
from mlserver.errors import MLServerError
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest

from predictors import InputError
from predictors.signing import generate_keypair, load_private_key, sign_bundle
from runtime import codec, hardening, limits, loading
from runtime.model import InsuranceModel, ModelLoadError

from ...conftest import shipped_bundle


def _request(**tensor) -> InferenceRequest:
    return InferenceRequest(inputs=[{"name": "age", "shape": [1], "datatype": "INT64", "data": [30], **tensor}])


# ---- a declared shape never sizes an allocation ------------------------------------------------

def test_shape_2147483648_is_refused_before_anything_is_allocated():
    import json

    from predictors.predictor import features_from_spec

    manifest = json.loads((shipped_bundle("auto") / "manifest.json").read_text())
    features = features_from_spec(manifest["feature_spec"])
    request = _request(shape=[2147483648], data=[30])
    tracemalloc.start()
    try:
        for max_rows in (10_000, 2 ** 40):  # with the default limit, and with no effective limit at all
            with pytest.raises(InputError) as e:
                codec.decode(request.inputs, features, max_rows)
            assert "2147483648" in str(e.value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"peak {peak} bytes: something was sized from the shape"
    with pytest.raises(InputError, match="shape says 2147483648 rows but data holds 1 elements"):
        codec.decode(request.inputs, features, 2 ** 40)


# ---- request limits ----------------------------------------------------------------------------

def test_max_string_bytes_names_input_and_row():
    req = InferenceRequest(inputs=[{"name": "occupation", "shape": [3], "datatype": "BYTES",
                                    "data": ["ok", "ok", "é" * 9]}])
    limits.check_strings(req, 18)  # 18 bytes exactly: allowed
    with pytest.raises(InputError, match=r"input 'occupation': row 2 is 18 bytes, over the limit of 17 bytes"):
        limits.check_strings(req, 17)
    nested = InferenceRequest(inputs=[{"name": "location", "shape": [2, 1], "datatype": "BYTES",
                                       "data": [[b"a"], [b"x" * 100]]}])
    with pytest.raises(InputError, match="input 'location': row 1 is 100 bytes"):
        limits.check_strings(nested, 99)
    limits.check_strings(_request(data=[10 ** 30]), 1)  # numeric inputs are the codec's business


@pytest.mark.parametrize("rid, ok", [("example-auto", True), ("", True), (None, True), ("x" * 256, True),
                                     ("x" * 257, False), ("a\r\nb", False), ("\x00", False), ("é", False),
                                     ("請求", False)])
def test_request_id_is_safe_to_echo_in_headers(rid, ok):
    req = _request()
    req.id = rid
    if ok:
        limits.check_request_id(req)
    else:
        with pytest.raises(InputError, match="request id"):
            limits.check_request_id(req)


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "x" * 100_000, {"a": 1}])
def test_quote_time_out_of_range_is_a_400_with_a_short_message(value):
    from mlserver.types import Parameters

    req = _request()
    req.parameters = Parameters(quote_time=value)
    with pytest.raises(InputError) as e:
        codec.quote_time_of(req.parameters.model_extra)
    assert len(str(e.value)) < 200


# ---- MLServer gRPC fixes -----------------------------------------------------------------------

def test_grpc_status_mapping_has_unauthenticated():
    import grpc
    from mlserver.grpc.utils import _grpc_status_code

    hardening.install()
    assert _grpc_status_code(MLServerError("x", 401)) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_status_code(MLServerError("x", 403)) == grpc.StatusCode.PERMISSION_DENIED
    assert _grpc_status_code(MLServerError("x", 400)) == grpc.StatusCode.INVALID_ARGUMENT


def test_malformed_raw_contents_are_client_errors():
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc.converters import ModelInferRequestConverter

    hardening.install()
    T = pb.ModelInferRequest.InferInputTensor
    for tensor, raw in ((T(name="age", datatype="INT64", shape=[4]), b"\x01" * 9),
                        (T(name="age", datatype="INT64", shape=[2147483648]), b"\x01" * 8),
                        (T(name="occupation", datatype="BYTES", shape=[1]), b"\xff\xff\xff\x7fabc"),
                        (T(name="age", datatype="BF16", shape=[1]), b"\x00\x00")):
        tracemalloc.start()
        try:
            with pytest.raises(hardening.InvalidRequest) as e:
                ModelInferRequestConverter.to_types(pb.ModelInferRequest(model_name="auto", inputs=[tensor],
                                                                         raw_input_contents=[raw]))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert e.value.status_code == 400 and "malformed request" in str(e.value)
        assert peak < 1 << 20


def test_bytes_outputs_convert_for_typed_grpc_responses():
    from mlserver.grpc.converters import ModelInferResponseConverter
    from mlserver.types import InferenceResponse

    hardening.install()
    response = InferenceResponse(model_name="auto", outputs=[
        {"name": "decision", "shape": [2], "datatype": "BYTES", "data": ["accept", "réject"]},
        {"name": "score", "shape": [2], "datatype": "FP64", "data": [0.1, 0.9]}])
    pb = ModelInferResponseConverter.from_types(response, use_raw=False)
    assert list(pb.outputs[0].contents.bytes_contents) == [b"accept", "réject".encode()]
    assert list(pb.outputs[1].contents.fp64_contents) == [0.1, 0.9]


# ---- load failures -----------------------------------------------------------------------------

def _model(folder, name="auto", version="1.0.0", **extra) -> InsuranceModel:
    params = ModelParameters(uri=str(folder), version=version, extra=extra)
    return InsuranceModel(ModelSettings(name=name, implementation=InsuranceModel, parameters=params))


@pytest.fixture()
def bundle(tmp_path):
    dest = tmp_path / "auto" / "1.0.0"
    shutil.copytree(shipped_bundle("auto"), dest)
    return dest


def test_a_broken_bundle_is_not_ready_with_the_reason(bundle):
    (bundle / "model.txt").write_text("corrupt")
    m = _model(bundle)
    assert asyncio.run(m.load()) is False
    assert "sha256" in m.load_error and "model.txt" in m.load_error
    meta = asyncio.run(m.metadata())
    assert loading.load_error_of(meta) == m.load_error


def test_policy_error_raises(bundle):
    (bundle / "model.txt").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        asyncio.run(_model(bundle, load_failure="error").load())


def test_a_failing_reload_never_replaces_a_serving_model(bundle, tmp_path):
    serving = _model(bundle)
    assert asyncio.run(serving.load()) is True
    serving.ready = True  # as MLServer's registry sets it
    (bundle / "model.txt").write_text("corrupt")
    with pytest.raises(ModelLoadError):  # raise: MLServer keeps the serving instance
        asyncio.run(_model(bundle).load())
    serving.ready = False  # unloaded: a later failure is soft again
    assert asyncio.run(_model(bundle).load()) is False


def test_parallel_model_load_reports_the_workers_readiness():
    from mlserver.parallel.model import ParallelModel

    loading.install()
    model = types.SimpleNamespace(_model=InsuranceModel.__new__(InsuranceModel), name="auto", version="1.0.0")

    async def send(name, *a):
        assert name == "metadata"
        return types.SimpleNamespace(parameters=types.SimpleNamespace(model_extra={"load_error": "bad file"}))

    model._send = send
    assert asyncio.run(ParallelModel.load(model)) is False

    async def ok(name, *a):
        return types.SimpleNamespace(parameters=None)

    model._send = ok
    assert asyncio.run(ParallelModel.load(model)) is True


# ---- bundle signatures in the runtime ----------------------------------------------------------

def test_runtime_refuses_unsigned_or_badly_signed_bundles_when_a_key_is_set(bundle, tmp_path):
    private_pem, public_pem = generate_keypair()
    pub = tmp_path / "bundle.pub"
    pub.write_bytes(public_pem)
    unsigned = _model(bundle, bundle_public_key_file=str(pub))
    assert asyncio.run(unsigned.load()) is False and "manifest.sig: missing" in unsigned.load_error
    sign_bundle(bundle, load_private_key(private_pem))
    signed = _model(bundle, bundle_public_key_file=str(pub))
    assert asyncio.run(signed.load()) is True
    other_private, _ = generate_keypair()
    sign_bundle(bundle, load_private_key(other_private))
    wrong = _model(bundle, bundle_public_key_file=str(pub))
    assert asyncio.run(wrong.load()) is False and "does not verify" in wrong.load_error
    assert asyncio.run(_model(bundle).load()) is True, "no key configured: signatures are not required"
