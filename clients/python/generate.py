"""Generate (or check) insurance_client's V2 gRPC messages with grpcio-tools.

    python clients/python/generate.py           # write src/insurance_client/v2/grpc_predict_v2_pb2.py
    python clients/python/generate.py --check   # exit 1 if the committed file differs

Only the messages are generated (protoc's own "Generated ... DO NOT EDIT" header): the service
path is the protocol's ``inference.GRPCInferenceService``, called by name in _grpc.py, while the
messages live in the proto package ``insurance_client.v2``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"
PROTO = Path("insurance_client") / "v2" / "grpc_predict_v2.proto"
GENERATED = PROTO.with_name("grpc_predict_v2_pb2.py")


def generate(out: Path) -> Path:
    from grpc_tools import protoc

    code = protoc.main(["grpc_tools.protoc", f"-I{SRC}", f"--python_out={out}", str(SRC / PROTO)])
    if code != 0:
        raise RuntimeError(f"protoc failed on {SRC / PROTO} (exit {code})")
    return out / GENERATED


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the committed module is stale")
    args = p.parse_args(argv)
    if not args.check:
        print(f"wrote {generate(SRC)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp)).read_text(encoding="utf-8")
    committed = SRC / GENERATED
    if not committed.is_file() or committed.read_text(encoding="utf-8") != fresh:
        print(f"{committed} is stale: run `make client-stubs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
