"""The service's benchmarks: every figure a ratio against a baseline measured in the same run.

Absolute times on a shared machine mean little; a ratio of two things measured side by side,
interleaved (A, B, B, A, ...) in one process or one run, survives the neighbours' noise much
better. ``python -m bench.run`` (``make bench``) runs them all and prints one table;
``make bench-check`` fails when a ratio is out of its bound.

Importing the package puts the shared layer, the function folders, ``tests/`` (for
``support``) and the project root (for ``local``) on ``sys.path``, as ``pytest.ini`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PATHS = (
    ROOT / "layers" / "shared",
    ROOT / "functions" / "score",
    ROOT / "functions" / "ingest",
    ROOT / "functions" / "retrain",
    ROOT / "tests",
    ROOT,
)
for _path in reversed(_PATHS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
