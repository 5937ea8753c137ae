"""Codec micro-benchmark: decode+validate and encode of a ~100-byte `send`.

Targets (issue 2): decode+validate <= 10 us and encode <= 5 us per message on the project
machine. The machine is noisy, so each figure is printed beside baselines timed in the same
run: orjson.loads alone (the floor: parsing without validation) and the stdlib json module
with the reference `jsonschema` validator (the obvious pure-Python way). Best of N repeats.

    python bench/bench_codec.py [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import timeit
from collections.abc import Callable
from typing import Any

import jsonschema
import orjson
import referencing

from hoomi.protocol import codec, decode_client, encode
from hoomi.protocol.spec import spec_dir

FRAME = (
    '{"type":"send","id":"r-000042","conversation_id":"c_team","client_msg_id":"m-7f3a",'
    '"text":"On my way"}'
)


def _reference_validator() -> jsonschema.Draft202012Validator:
    resources = []
    for path in sorted((spec_dir() / "schemas").rglob("*.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], referencing.Resource.from_contents(schema)))
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(resources)
    send = json.loads((spec_dir() / "schemas" / "client" / "send.json").read_text())
    return jsonschema.Draft202012Validator(send, registry=registry)


def _per_call_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def run(quick: bool) -> dict[str, Any]:
    number, repeat = (2_000, 3) if quick else (50_000, 7)
    codec.warm_up()
    message = decode_client(FRAME)
    as_dict = codec.to_dict(message)
    reference = _reference_validator()

    def reference_decode() -> object:
        obj = json.loads(FRAME)
        reference.validate(obj)
        return obj

    figures = {
        "hoomi decode+validate": _per_call_us(lambda: decode_client(FRAME), number, repeat),
        "hoomi encode": _per_call_us(lambda: encode(message), number, repeat),
        "baseline orjson.loads only": _per_call_us(lambda: orjson.loads(FRAME), number, repeat),
        "baseline json.loads+jsonschema": _per_call_us(reference_decode, number // 10, repeat),
        "baseline json.dumps(dict)": _per_call_us(lambda: json.dumps(as_dict), number, repeat),
    }
    return {
        "frame_bytes": len(FRAME.encode()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "us_per_message": figures,
        "ratios": {
            "decode+validate vs json+jsonschema (speed-up)": figures[
                "baseline json.loads+jsonschema"
            ]
            / figures["hoomi decode+validate"],
            "decode+validate vs orjson.loads alone (cost)": figures["hoomi decode+validate"]
            / figures["baseline orjson.loads only"],
            "encode vs json.dumps(dict) (speed-up)": figures["baseline json.dumps(dict)"]
            / figures["hoomi encode"],
        },
        "targets_us": {"hoomi decode+validate": 10.0, "hoomi encode": 5.0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    args = parser.parse_args()
    result = run(args.quick)
    print(f"codec, {result['frame_bytes']}-byte send frame, best of repeats (us/message)")
    for name, value in result["us_per_message"].items():
        target = result["targets_us"].get(name)
        verdict = (
            ""
            if target is None
            else f"  target <= {target:g}: " + ("met" if value <= target else "MISSED")
        )
        print(f"  {name:34} {value:8.2f}{verdict}")
    for name, ratio in result["ratios"].items():
        print(f"  {name:48} {ratio:6.1f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
