"""The browser adapter serving a broken copy of hoomi-client.js, for the kit's tests:
``python tests/broken_browser_adapter.py VARIANT [--host PATH]``. Each variant breaks one
rule of the spec the way a client author might (as tests/broken_adapter.py does to the SDK);
the kit must fail it on exactly that rule's requirement ids. The patch is checked to apply,
so that a change to the client cannot quietly turn a variant into the real thing."""

from __future__ import annotations

import sys
from collections.abc import Callable

from hoomi.web import adapter

STREAMS = "hoomi-streams.js"


def _patch(old: str, new: str, file: str = STREAMS) -> Callable[[str, str], str]:
    def transform(name: str, text: str) -> str:
        if name != file:
            return text
        if text.count(old) != 1:
            raise SystemExit(f"the broken variant no longer applies to {file}: {old!r}")
        return text.replace(old, new)

    return transform


VARIANTS: dict[str, Callable[[str, str], str]] = {
    # Messages at or below the stream's position are handed over again (HOOMI-CLIENT-2).
    "no-dedupe": _patch(
        "if (message.seq <= stream.position) {\n      this.duplicates += 1;\n",
        "if (message.seq <= stream.position) {\n      out.deliver.push(message);\n",
    ),
    # Not a broken rule: a page that logs a console error and throws an uncaught one, which
    # the adapter must report on stderr at level error (the tests' error net reads it).
    "page-errors": _patch(
        '      case "connect":\n',
        '      case "connect":\n'
        '        console.error("planted console error");\n'
        '        setTimeout(() => { throw new Error("planted uncaught error"); });\n',
        "kit-adapter.js",
    ),
}

if __name__ == "__main__":
    adapter.run(VARIANTS[sys.argv[1]], sys.argv[2:])
