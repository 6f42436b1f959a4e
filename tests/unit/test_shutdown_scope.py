"""Closing one engine removes its own draft-server files only: another engine's socket and
address file in the same process stay (it goes on speculating and its metrics stay
readable); the process root goes once it is empty."""
import os
import tempfile

from vllm_ssd.client.runtime_files import process_root
from vllm_ssd.settings import SSDSettings
from vllm_ssd.vllm_seam.proposer import _shutdown


class ClosingClient:
    """Removes its own files on close, as ServerConnection does."""

    def __init__(self, files: list[str]):
        self.files = files

    def close(self) -> None:
        for path in self.files:
            os.unlink(path)


def test_closing_one_engine_keeps_the_other_engines_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a root no earlier test has used
    root = process_root()
    os.makedirs(root, mode=0o700, exist_ok=True)
    mine = [os.path.join(root, "draft-mine.addr")]
    other = [os.path.join(root, name) for name in ("draft-other.addr", "draft-other.sock")]
    for path in mine + other:
        open(path, "w").close()
    _shutdown(ClosingClient(mine), SSDSettings())
    assert all(os.path.exists(path) for path in other)
    _shutdown(ClosingClient(other), SSDSettings())
    assert not os.path.exists(root)
