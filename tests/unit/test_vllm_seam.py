"""The vLLM seam is one package: outside ``vllm_ssd/vllm_seam/`` only vLLM's compiled
kernels are imported (by the draft model, as a library)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "vllm_ssd"
KERNEL_MODULES = {"vllm._custom_ops", "vllm.vllm_flash_attn"}


def vllm_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "vllm"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.split(".")[0] == "vllm":
            found |= {f"{node.module}.{alias.name}" if node.module == "vllm" else node.module
                      for alias in node.names}
    return found


def test_only_the_seam_imports_vllm_internals():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if "vllm_seam" in path.parts:
            continue
        outside = {name for name in vllm_imports(path)
                   if not any(name == m or name.startswith(m + ".") for m in KERNEL_MODULES)}
        if outside:
            offenders[str(path.relative_to(PACKAGE))] = sorted(outside)
    assert not offenders


def test_the_check_sees_an_internal_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from vllm.engine.arg_utils import EngineArgs\nimport vllm._custom_ops\n"
                      "from vllm import _custom_ops as ops\n")
    assert vllm_imports(module) == {"vllm.engine.arg_utils", "vllm._custom_ops"}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_process_boundary_is_crossed_by_shared_modules_only():
    """The draft server never imports the proposer's side (client, validation, the seam),
    and the proposer's side never imports the server's modules."""
    proposer_side = ("vllm_ssd.client", "vllm_ssd.validation", "vllm_ssd.vllm_seam")
    for path in (PACKAGE / "server").rglob("*.py"):
        assert not any(m.startswith(proposer_side) for m in imported_modules(path)), path
    for path in [*(PACKAGE / "vllm_seam").rglob("*.py"), *(PACKAGE / "client").rglob("*.py"),
                 PACKAGE / "validation.py"]:
        assert not any(m.startswith("vllm_ssd.server") for m in imported_modules(path)), path
