# Developer verbs. `just setup` first on a fresh machine (or use the README's one-liners).
set shell := ["bash", "-euo", "pipefail", "-c"]

bin := ".venv/bin"

default:
    @just --list

# Create .venv and install Hoomi with its development tools.
setup:
    python3 -m venv .venv
    {{bin}}/python -m pip install -q --upgrade pip
    {{bin}}/python -m pip install -q -e '.[dev]'

# Run a development server: SQLite, in-process fan-out, a throwaway token secret.
serve *args:
    {{bin}}/hoomi serve --dev {{args}}

# ruff (lint + format check) and mypy --strict.
lint:
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/mypy

# Lint, check that generated docs are fresh, run the whole test suite (two workers: most
# tests wait on sockets and timers, so two share the 2 cores well; `just test -n 0` for one).
test *args: lint
    {{bin}}/python tools/gendocs.py --check
    {{bin}}/python tools/tracegen.py --check
    {{bin}}/python tools/genjs.py --check
    {{bin}}/python -m pytest -n 2 {{args}}

# Regenerate docs/protocol.md and docs/state-machine.mmd from spec/, docs/traceability.md,
# and the browser client's spec data (src/hoomi/web/client-state-machine.js).
docs:
    {{bin}}/python tools/gendocs.py
    {{bin}}/python tools/tracegen.py
    {{bin}}/python tools/genjs.py

# Install what the benchmarks need beyond dev: the Python peers, uvloop, matplotlib, py-spy,
# and the Node peers (ws, socket.io) from bench/peers/node/package-lock.json.
bench-setup:
    {{bin}}/python -m pip install -q -e '.[dev,bench]'
    cd bench/peers/node && npm ci --no-audit --no-fund

# Benchmarks (never part of the test suite): the codec, the store's writes and the client
# SDK, then Hoomi
# against its peers in one run (`just bench fanout --quick`, `just bench --servers hoomi
# node-ws`; see `python -m bench --help`; `--quick` shortens the micro-benchmarks too).
# Results land in bench/results/; docs/benchmarks.md is rebuilt.
bench *args:
    mkdir -p bench/results
    {{bin}}/python bench/bench_codec.py --json bench/results/codec.json {{ if args =~ '(^| )--quick( |$)' { '--quick' } else { '' } }}
    {{bin}}/python bench/bench_writer.py --json bench/results/writer.json {{ if args =~ '(^| )--quick( |$)' { '--quick' } else { '' } }}
    {{bin}}/python bench/bench_client.py --json bench/results/client.json {{ if args =~ '(^| )--quick( |$)' { '--quick' } else { '' } }}
    {{bin}}/python -m bench {{args}}
    {{bin}}/python -m bench.report

# Format the code.
fmt:
    {{bin}}/ruff check --fix .
    {{bin}}/ruff format .

# Planted bugs (tests/mutants/*.patch), each applied to a scratch copy of the repo: prints
# whether the tests it names catch it; exits 1 if any survives or no longer applies.
mutants *args:
    {{bin}}/python tools/mutants.py {{args}}
