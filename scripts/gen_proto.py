"""Generate the Python stubs in calcmq/proto/ from protos/calculator.proto.

The one command for generated code (`make proto`); `--check` regenerates into
a scratch folder and fails when the committed stubs differ, so CI catches a
proto edited without regenerating. The `calcmq/proto=protos` include mapping
makes protoc write package-absolute imports (`from calcmq.proto import ...`).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = "calcmq/proto/calculator.proto"
OUTPUTS = ("calculator_pb2.py", "calculator_pb2.pyi", "calculator_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    args = [
        "protoc",
        f"-Icalcmq/proto={ROOT / 'protos'}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO,
    ]
    if protoc.main(args) != 0:
        sys.exit("error: protoc failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs drifted")
    check = parser.parse_args().check
    if not check:
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        drifted = [
            name
            for name in OUTPUTS
            if not filecmp.cmp(Path(tmp, "calcmq/proto", name), ROOT / "calcmq/proto" / name, shallow=False)
        ]
    if drifted:
        print(f"error: generated stubs drifted from protos/: {', '.join(drifted)}; run `make proto`", file=sys.stderr)
        return 1
    print("generated stubs match protos/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
