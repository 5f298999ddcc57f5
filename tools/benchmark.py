"""vosjax benchmarks: `python tools/benchmark.py <suite> [options]`.

Each suite lives in ``tools/bench/<suite>.py`` and exposes ``main(argv)``.
Suites print medians of repeated runs and ratios against a baseline measured
in the same run (these machines are noisy; absolute times are only context).

Suites: readout, object_readout, learners, models, data, train, engine, evaluate, gpu
(accelerators).
"""

from __future__ import annotations

import importlib
import pathlib
import sys

SUITES = (
    "readout", "object_readout", "learners", "models", "data", "train", "engine", "evaluate", "gpu"
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    suite, rest = argv[0], argv[1:]
    if suite not in SUITES:
        print(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    try:
        module = importlib.import_module(f"bench.{suite}")
    except ModuleNotFoundError as e:
        if e.name == f"bench.{suite}":
            print(f"suite {suite!r} is not implemented yet (tools/bench/{suite}.py)", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
