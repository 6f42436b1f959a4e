"""Where a draft server's files live: the private runtime directory (0700), the socket
path (a short private directory when the runtime directory is too deep for a Unix
socket), and the 0600 address file that tells metrics readers where the server is."""
from __future__ import annotations

import os
import secrets
import tempfile

from vllm_ssd.settings import SSDSettings

MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path holds 107 bytes


def runtime_dir(settings: SSDSettings) -> str:
    path = settings.runtime_dir or os.path.join(tempfile.gettempdir(), f"vllm-ssd-{os.getpid()}")
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
