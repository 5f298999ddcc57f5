"""Test-wide setup: 8 forced host devices, float32 matmuls, shared-data lookup.

The XLA flag must be set before JAX initialises its backend, which is why it
lives here (imported by pytest before any test module).
"""

from __future__ import annotations

import os
import pathlib

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

# Reference comparisons are made in full float32 precision.
jax.config.update("jax_default_matmul_precision", "highest")

try:  # hypothesis is part of the `test` extra; keep its runs short and deterministic.
    from hypothesis import settings

    settings.register_profile("vosjax", max_examples=25, deadline=None, derandomize=True)
    settings.load_profile("vosjax")
except ImportError:  # pragma: no cover
    pass

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DAVIS_DEMO = SHARED_DATA / "davis_demo"


@pytest.fixture(scope="session")
def davis_demo() -> pathlib.Path:
    """Path to the real DAVIS-layout demo sequences; skips where they are absent."""
    if not (DAVIS_DEMO / "JPEGImages").is_dir():
        pytest.skip(
            f"real DAVIS demo data not found at {DAVIS_DEMO} (it ships beside the project in "
            "CI as ../shared/data/davis_demo; a plain clone does not have it)"
        )
    return DAVIS_DEMO
