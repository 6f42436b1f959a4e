"""Every ``VLLM_SSD_*`` environment variable the project reads, in one place.

Settings variables map one-to-one onto the user-facing fields of ``SSDSettings`` (the
variable name is ``VLLM_SSD_`` + the field name in upper case; the list comes from the
model itself). A ``VLLM_SSD_*`` variable
that is neither a setting nor listed below is an error, so typos do not pass
silently.
"""
from __future__ import annotations

import os

PREFIX = "VLLM_SSD_"

# Not settings:
CONFIG_FILE = "VLLM_SSD_CONFIG"  # path of a JSON file of SSD settings
MODELS_DIR = "VLLM_SSD_MODELS"  # where examples/benchmarks build the offline Qwen pair
QUIET_WAIT = "VLLM_SSD_QUIET_WAIT"  # "1": set by the front end for a CPU target, read by
# the vLLM processes it starts (``vllm_seam.quiet_wait``)
OTHER_VARIABLES = (CONFIG_FILE, MODELS_DIR, QUIET_WAIT)



def env_name(field: str) -> str:
    return PREFIX + field.upper()


def setting_variables(fields: list[str],
                      environ: dict[str, str] | None = None) -> dict[str, str]:
    """Settings given through the environment (one variable per name in ``fields``, the
    user-facing fields of ``SSDSettings``): field name -> raw string value.

    Raises ``KeyError`` naming the first unknown ``VLLM_SSD_*`` variable.
    """
    environ = os.environ if environ is None else environ
    known = {env_name(field): field for field in fields}
    found = {}
    for name, value in environ.items():
        if not name.startswith(PREFIX) or name in OTHER_VARIABLES:
            continue
        if name not in known:
            raise KeyError(name)
        found[known[name]] = value
    return found


def quiet_wait(environ: dict[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(QUIET_WAIT) == "1"


def config_file(environ: dict[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    return environ.get(CONFIG_FILE) or None


def models_dir(environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(MODELS_DIR) or os.path.expanduser("~/.cache/vllm-ssd-models")
