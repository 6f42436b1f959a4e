"""vLLM's message-queue readers nap instead of spinning where SSD's front end asked for it
(``vllm_seam.quiet_wait``), and not otherwise."""
import time

import pytest
import zmq
from vllm.distributed.device_communicators import shm_broadcast

from vllm_ssd import envs
from vllm_ssd.vllm_seam import quiet_wait


@pytest.fixture
def reader(monkeypatch, tmp_path):
    monkeypatch.setattr(shm_broadcast.SpinCondition, "wait", shm_broadcast.SpinCondition.wait)
    context = zmq.Context()
    condition = shm_broadcast.SpinCondition(is_reader=True, context=context,
                                            notify_address=f"ipc://{tmp_path}/notify")
    yield condition
    for name in ("local_notify_socket", "read_cancel_socket", "write_cancel_socket"):
        getattr(condition, name).close(linger=0)
    context.term()


def yields_counted(monkeypatch) -> list[int]:
    calls = []
    monkeypatch.setattr(shm_broadcast, "sched_yield", lambda: calls.append(1))
    return calls


def test_a_reader_naps_instead_of_yielding_once_asked(monkeypatch, reader):
    monkeypatch.delenv(envs.QUIET_WAIT, raising=False)
    quiet_wait.request_quiet_wait()
    assert envs.quiet_wait()
    assert quiet_wait.install_quiet_wait()
    yields = yields_counted(monkeypatch)
    reader.record_read()  # a message just came: the next one is expected soon
    start = time.perf_counter()
    reader.wait()
    assert time.perf_counter() - start >= quiet_wait.NAP_S
    assert yields == []


def test_without_the_request_vllms_wait_is_untouched(monkeypatch, reader):
    monkeypatch.setenv(envs.QUIET_WAIT, "0")
    quiet_wait.request_quiet_wait()  # an explicit 0 is kept
    assert not quiet_wait.install_quiet_wait()
    yields = yields_counted(monkeypatch)
    reader.record_read()
    reader.wait()
    assert yields == [1]


def test_the_naps_grow_while_no_message_comes_and_restart_after_a_read(monkeypatch, reader):
    monkeypatch.setenv(envs.QUIET_WAIT, "1")
    assert quiet_wait.install_quiet_wait()
    naps = []
    monkeypatch.setattr(quiet_wait.time, "sleep", naps.append)
    reader.record_read()
    for _ in range(8):
        reader.wait()
    reader.record_read()
    reader.wait()
    assert naps[0] == quiet_wait.NAP_S and naps[1] == 2 * quiet_wait.NAP_S
    assert naps[1:8] == sorted(naps[1:8]) and naps[7] == quiet_wait.NAP_MAX_S
    assert naps[8] == quiet_wait.NAP_S


def test_a_nap_is_bounded():
    assert quiet_wait.nap_seconds(0) == quiet_wait.NAP_S
    assert quiet_wait.nap_seconds(10 ** 6) == quiet_wait.NAP_MAX_S
