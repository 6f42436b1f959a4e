"""Collecting a test module changes nothing in the test process: no environment
variables set, no plugin registered (set-up belongs in fixtures)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = """
import os, sys
before = dict(os.environ)
import {module}
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
assert not changed, f"importing {module} changed the environment: {{changed}}"
assert "vllm_ssd.vllm_seam.plugin" not in sys.modules, "importing {module} registered the plugin"
"""


@pytest.mark.parametrize("module", ["tests.gpu.test_gpu"])
def test_importing_a_test_module_has_no_side_effects(module):
    run = subprocess.run([sys.executable, "-c", CHECK.format(module=module)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
