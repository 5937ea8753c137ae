"""The protocol core is Sans-I/O: no async framework, no sockets, no clock."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO

ASYNC_LIBRARIES = ("trio", "trio_websocket", "wsproto", "asyncio", "anyio")
# What protocol/ itself may not import: I/O, concurrency and the clock (time is passed in).
FORBIDDEN_IMPORTS = {*ASYNC_LIBRARIES, "socket", "ssl", "select", "threading", "time", "datetime"}


def test_importing_the_protocol_package_imports_no_async_library() -> None:
    probe = (
        "import sys, hoomi.protocol; "
        f"print(','.join(m for m in {ASYNC_LIBRARIES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"hoomi.protocol imported {result.stdout.strip()}"


def test_protocol_sources_import_no_io_or_clock() -> None:
    offenders = []
    for path in sorted((REPO / "src" / "hoomi" / "protocol").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IMPORTS
            ]
    assert offenders == []
