"""The proposer's side of the process boundary: its connection to the draft server
(``connection``), the server's process (``server_process``, ``reaper``), the private files
that name it (``runtime_files``), and the proposer's fault handling: the step deadline
(``deadline``), the restart back-off (``restarts``) and the pause log (``pause_log``).
The draft server (``vllm_ssd.server``) imports none of it."""
from vllm_ssd.client.connection import ServerConnection
from vllm_ssd.client.errors import DraftServerUnavailable, StepDeadlineMissed

__all__ = ["ServerConnection", "DraftServerUnavailable", "StepDeadlineMissed"]
