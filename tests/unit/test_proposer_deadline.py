"""The proposer's step deadline: a late step gets no drafts and nothing more is sent until
its reply comes; the next step then resynchronises the server (every row as catch-up,
with every token it missed); a server silent for ipc_timeout_s is restarted."""
import numpy as np

from tests.unit.test_proposer_quiet import make_proposer
from vllm_ssd import protocol as P
from vllm_ssd.client import StepDeadlineMissed


class SlowClient:
    """Misses the deadline of the steps listed in ``late``; the late reply is 'in' once
    ``arrived`` is set."""

    def __init__(self, late: set[int]):
        self.late = late
        self.sent: list[P.StepRequest] = []
        self.arrived = False
        self.server = object()
        self.last_heard = 0.0
        self.closed = 0

    def ready(self) -> bool:
        return self.server is not None

    def step(self, request: P.StepRequest, deadline_s: float | None = None) -> P.StepReply:
        request.seq = len(self.sent)
        self.sent.append(request)
        assert deadline_s is not None and 0 < deadline_s <= 1.0
        if request.seq in self.late:
            raise StepDeadlineMissed("late")
        rows = len(P.unpack(request.slots))
        return P.StepReply(seq=request.seq, num_drafts=P.pack(np.ones(rows)),
                           draft_tokens=P.pack(np.full(rows, 9)),
                           is_hit=P.pack(np.ones(rows), np.uint8))

    def late_reply_arrived(self, seq: int) -> bool:
        return self.arrived

    def close_server(self) -> None:
        self.closed += 1
        self.server = None


def run_steps(proposer, start_len: int, count: int):
    tokens = np.arange(200, dtype=np.int32)[None, :]
    return [proposer.propose([[int(tokens[0, n - 1])]], np.array([n]), tokens)
            for n in range(start_len, start_len + count)]


def test_a_late_step_gets_no_drafts_and_the_next_sent_step_catches_up():
    client = SlowClient(late={1})
    proposer = make_proposer(client)
    assert run_steps(proposer, 4, 2) == [[[9]], [[]]]  # step 1 missed its deadline
    assert run_steps(proposer, 6, 3) == [[[]], [[]], [[]]]  # its reply has not come
    assert len(client.sent) == 2  # nothing was sent meanwhile
    client.arrived = True
    assert run_steps(proposer, 9, 1) == [[[9]]]
    resync = client.sent[2]
    # the server last saw 5 tokens: the resync step carries tokens 5..8 as catch-up
    assert P.unpack(resync.num_new_tokens).tolist() == [4]
    assert P.unpack(resync.new_tokens).tolist() == [5, 6, 7, 8]
    assert P.unpack(resync.is_step_delta, np.uint8).tolist() == [0]
    assert resync.target_step_s == 0.0 and resync.deadline_misses == 1
    run_steps(proposer, 10, 1)  # then outcomes again
    assert P.unpack(client.sent[3].is_step_delta, np.uint8).tolist() == [1]
    assert client.closed == 0 and proposer.last_stats.get("restarts", 0) == 0


def test_a_server_silent_for_ipc_timeout_is_restarted(monkeypatch):
    client = SlowClient(late={0})
    proposer = make_proposer(client)
    proposer.settings = proposer.settings.model_copy(update={"ipc_timeout_s": 0.05})
    run_steps(proposer, 4, 1)
    assert client.closed == 0
    import time
    time.sleep(0.1)
    monkeypatch.setattr(client, "start", lambda wait: None, raising=False)
    run_steps(proposer, 5, 1)
    assert client.closed == 1 and proposer.last_stats["restarts"] == 1
    assert proposer.tracker.slot_of == {}  # every request is new to the next server
