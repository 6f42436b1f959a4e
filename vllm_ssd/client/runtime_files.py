"""Where a draft server's files live, in one place: this process's runtime root and each
engine's private directory in it (0700, removed at exit), the socket path (a short
private directory when the runtime directory is too deep for a Unix socket), and the
0600 address file that tells metrics readers where the server is."""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
import uuid

from vllm_ssd.settings import SSDSettings

MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path holds 107 bytes


def process_root() -> str:
    """This process's runtime root: every engine's directory lies under it."""
    return os.path.join(tempfile.gettempdir(), f"vllm-ssd-{os.getpid()}")


def new_engine_dir() -> str:
    """A fresh private directory for one engine's draft servers; the root goes at exit."""
    path = os.path.join(process_root(), uuid.uuid4().hex[:8])
    os.makedirs(path, mode=0o700)
    os.chmod(process_root(), 0o700)
    atexit.register(shutil.rmtree, process_root(), True)
    return path


def runtime_dir(settings: SSDSettings) -> str:
    """The engine's directory (the plugin's ``runtime_dir``), else the process root."""
    path = settings.runtime_dir or process_root()
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def new_socket_path(settings: SSDSettings) -> tuple[str, str, str | None]:
    """(name stem in the runtime dir, socket path, private short directory or None)."""
    name = os.path.join(runtime_dir(settings), f"draft-{os.getpid()}-{secrets.token_hex(4)}")
    path, short_dir = name + ".sock", None
    if len(path) > MAX_SOCKET_PATH:
        short_dir = tempfile.mkdtemp(prefix="vllm-ssd-", dir="/tmp")
        path = os.path.join(short_dir, "draft.sock")
    return name, path, short_dir


def write_private(path: str, text: str) -> None:
    """Replaces ``path`` atomically by a 0600 file holding ``text``."""
    temporary = path + ".tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
