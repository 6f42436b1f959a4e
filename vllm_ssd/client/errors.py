"""What the proposer's connection raises when its draft server cannot serve a step."""


class DraftServerUnavailable(RuntimeError):
    """The server died, timed out past ``ipc_timeout_s``, or answered with an error."""


class StepDeadlineMissed(RuntimeError):
    """No reply within the step's deadline; the server may still be working on it."""
