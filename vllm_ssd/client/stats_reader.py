"""The one reader of draft servers' counters for ``/metrics`` and ``get_ssd_metrics``.

Each proposer's ``ServerConnection`` publishes an address file (``draft-*.addr``: the
server's socket, a read-only stats key, the restarts it counted). The reader is its own
short-lived IPC client because the counters are read where the engine config was built
(the API server process for ``vllm serve``), not in the engine-core process that holds
the connection; the server answers it between rounds, during builds and prefills too.
"""
from __future__ import annotations

import glob
import os

from vllm_ssd import protocol as P


def read_server_stats(runtime_dir: str, timeout_s: float = 2.0) -> dict[str, dict[str, float] | None]:
    """The stats of each draft-server client under ``runtime_dir``, by its address file;
    where no server answered (it is restarting) only the restarts its client counted (no
    reading reports fewer), or None."""
    import zmq

    readings: dict[str, dict[str, float] | None] = {}
    context = zmq.Context.instance()
    for address in sorted(glob.glob(os.path.join(runtime_dir, "**", "draft-*.addr"), recursive=True)):
        try:
            path, key, client_counts = _read_address_file(address)
        except OSError:  # the client is shutting down
            continue
        stats = _ask_server(context, path, key, timeout_s) if os.path.exists(path) else None
        readings[address] = _with_client_counts(stats, client_counts)
    return readings


def _with_client_counts(stats: dict[str, float] | None,
                        counts: dict[str, float]) -> dict[str, float] | None:
    """A server's reading with no counter below the client's own count of it; the
    client's counts alone where no server answered (None without any)."""
    if stats is None:
        return dict(counts) or None
    return {**stats, **{name: max(value, stats.get(name, 0.0)) for name, value in counts.items()}}


def _read_address_file(address: str) -> tuple[str, str, dict[str, float]]:
    """(socket path, stats key, counters the client keeps: ``name value`` lines) of an
    address file (see ``ServerConnection``); the path is "" while no server runs."""
    with open(address) as handle:
        lines = handle.read().split("\n")
    path, key = (lines + ["", ""])[:2]
    counts = {}
    for line in lines[2:]:
        name, _, value = line.partition(" ")
        try:
            counts[name] = float(value)
        except ValueError:
            continue
    return path.strip(), key.strip(), counts


def _ask_server(context, path: str, key: str, timeout_s: float) -> dict[str, float] | None:
    """The stats of the server on ``path``; None where it does not answer in time."""
    import zmq

    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(f"ipc://{path}")
        socket.send(P.encode(P.StatsRequest(key=key)))
        if socket.poll(int(timeout_s * 1000)):
            return getattr(P.decode(socket.recv()), "stats", None)
        return None
    finally:
        socket.close()
