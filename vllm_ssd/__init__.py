"""vllm_ssd: speculative-speculative decoding (Saguaro) for vLLM.

``register`` is the ``vllm.general_plugins`` entry point: cheap and idempotent.
``SSDProposer`` is the class vLLM's ``custom_class`` speculative method loads
(imported lazily, so importing the package does not import vLLM). Everything that touches
vLLM lives in ``vllm_ssd.vllm_seam`` (its README lists each hook).
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["SSDProposer", "get_ssd_metrics", "register"]


def register() -> None:
    from vllm_ssd.vllm_seam.plugin import install, share_vllm_logging
    from vllm_ssd.vllm_seam.quiet_wait import install_quiet_wait

    share_vllm_logging()
    install()
    install_quiet_wait()


def __getattr__(name: str):
    if name == "SSDProposer":
        from vllm_ssd.vllm_seam.proposer import SSDProposer
        return SSDProposer
    if name == "get_ssd_metrics":
        from vllm_ssd.vllm_seam.metrics import get_ssd_metrics
        return get_ssd_metrics
    raise AttributeError(f"module 'vllm_ssd' has no attribute {name!r}")
