"""Benchmark provenance: the CPU's ISA label from its flags, and the record's fields."""
import pytest

from benchmarks.provenance import cpu_info, cpu_isa, provenance


@pytest.mark.parametrize("flags,isa", [
    ({"avx2", "fma"}, "avx2"),
    ({"avx2", "avx512f", "avx512bw"}, "avx512"),
    ({"avx2", "avx512f", "amx_tile", "amx_int8"}, "amx"),
    ({"sse4_2"}, "avx2"),
])
def test_cpu_isa_from_flags(flags, isa):
    assert cpu_isa(flags) == isa


def test_cpu_info_reads_model_and_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx avx2 fma\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx avx2 fma\n")
    info = cpu_info(str(cpuinfo))
    assert (info["cpu_model"], info["cpu_isa"]) == ("AMD EPYC 7B13", "avx2")


def test_record_names_code_software_machine_and_settings():
    record = provenance({"batch_sizes": [1, 8]})
    assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool)
    assert record["vllm"] and record["torch"] and record["python"]
    assert record["cpu_isa"] in ("avx2", "avx512", "amx")
    assert record["device"] == "cpu" and record["device_name"] == record["cpu_model"]
    assert record["settings"] == {"batch_sizes": [1, 8]}


def test_a_copied_tree_records_no_commit_and_says_why(tmp_path):
    """Inside another repository a copied tree must not report that repository's commit."""
    from benchmarks.provenance import git_state

    copy = tmp_path / "copy"
    copy.mkdir()
    state = git_state(copy)
    assert state["commit"] is None and state["dirty"] is None
    assert "not a git checkout" in state["commit_note"]


def test_a_copied_tree_records_the_commit_its_sender_stated(tmp_path, monkeypatch):
    from benchmarks.provenance import SOURCE_COMMIT_VARIABLE, git_state

    monkeypatch.setenv(SOURCE_COMMIT_VARIABLE, "8ebdf4e" + "0" * 33 + "+dirty")
    state = git_state(tmp_path)
    assert state["commit"] == "8ebdf4e" + "0" * 33 and state["dirty"] is True
    assert SOURCE_COMMIT_VARIABLE in state["commit_note"]
    monkeypatch.setenv(SOURCE_COMMIT_VARIABLE, "8ebdf4e")
    assert git_state(tmp_path)["dirty"] is False


def test_a_cuda_run_names_the_gpu_not_the_cpu(monkeypatch):
    from benchmarks import provenance as module

    monkeypatch.setattr(module, "gpu_names", lambda import_torch=False:
                        ["NVIDIA H200"] if import_torch else [])
    assert module.provenance({}, "cuda:0")["device_name"] == "NVIDIA H200"
