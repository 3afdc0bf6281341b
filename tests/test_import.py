"""`import auras` stays cheap: no torch, ray, transformers or mujoco."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "ray", "transformers", "diffusers", "mujoco", "metaworld")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_import_auras_loads_no_heavy_module():
    assert _loaded_after("import auras") == []


def test_public_types_and_config_load_no_heavy_module():
    statement = "import auras; auras.Observation; auras.AurasConfig; auras.load_config('default')"
    assert _loaded_after(statement) == []


def test_public_api_is_listed():
    import auras

    for name in auras.__all__:
        assert getattr(auras, name) is not None
