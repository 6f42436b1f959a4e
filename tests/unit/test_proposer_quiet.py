"""The proposer keeps the server's promise of quiet steps: their outcomes are sent without
waiting (no drafts), then it waits for a reply again."""
import types

import numpy as np

from vllm_ssd import protocol as P
from vllm_ssd.client.stats_log import StatsLogger
from vllm_ssd.vllm_seam.proposer import SSDProposer
from vllm_ssd.settings import SSDSettings
from vllm_ssd.vllm_seam.tracker import RequestTracker


class FakeClient:
    """Answers awaited steps with one draft per row and a promise of ``quiet`` steps."""

    def __init__(self, quiet: int, stand_aside: str = ""):
        self.quiet = quiet
        self.stand_aside = stand_aside
        self.calls: list[str] = []
        self.target_steps: list[float] = []
        self.server = object()

    def ready(self) -> bool:
        return True

    def step(self, request: P.StepRequest, deadline_s: float | None = None) -> P.StepReply:
        self.calls.append("step")
        self.target_steps.append(request.target_step_s)
        rows = len(P.unpack(request.slots))
        return P.StepReply(seq=request.seq, num_drafts=P.pack(np.ones(rows)),
                           draft_tokens=P.pack(np.full(rows, 9)),
                           is_hit=P.pack(np.ones(rows), np.uint8), quiet_steps=self.quiet,
                           stand_aside=self.stand_aside)

    def notify(self, request: P.StepRequest) -> None:
        self.calls.append("notify")

    def retire(self) -> None:
        self.calls.append("retire")


def make_proposer(client) -> SSDProposer:
    proposer = SSDProposer.__new__(SSDProposer)
    params = types.SimpleNamespace(max_tokens=64, temperature=0.0)
    requests = {"a": types.SimpleNamespace(sampling_params=params, prompt_token_ids=[1, 2, 3])}
    proposer.runner = types.SimpleNamespace(requests=requests,
                                            input_batch=types.SimpleNamespace(req_ids=["a"]))
    proposer.tracker = RequestTracker(4)
    proposer.client, proposer.is_driver = client, True
    proposer.max_model_len, proposer.num_speculative_tokens = 512, 4
    proposer.stats_logger = StatsLogger(0)
    proposer.last_stats, proposer.last_return, proposer.last_round_trip_s = {}, 0.0, 0.0
    proposer.quiet_steps, proposer.settings = 0, SSDSettings(draft_device="cpu", draft_cpus="1")
    proposer.stood_aside = False
    proposer._init_fault_handling()
    return proposer


def test_promised_quiet_steps_are_sent_without_waiting():
    client = FakeClient(quiet=2)
    proposer = make_proposer(client)
    tokens = np.zeros((1, 64), dtype=np.int32)
    drafts = [proposer.propose([[7]], np.array([4 + i]), tokens) for i in range(4)]
    assert client.calls == ["step", "notify", "notify", "step"]
    assert drafts == [[[9]], [[]], [[]], [[9]]]


def test_a_step_with_new_requests_reports_no_target_step_time():
    """The first step of a request includes its prefill (or an idle gap before it): its
    time must not feed the server's T_v."""
    client = FakeClient(quiet=0)
    proposer = make_proposer(client)
    tokens = np.zeros((1, 64), dtype=np.int32)
    proposer.last_return = 1.0  # a step returned long ago (time.perf_counter() is later)
    proposer.propose([[7]], np.array([4]), tokens)  # request "a" is new
    proposer.propose([[7]], np.array([5]), tokens)
    assert client.target_steps[0] == 0.0 and client.target_steps[1] > 0.0


class CountingClient(FakeClient):
    """Replies with the server's counters only when the step asks for them."""

    def __init__(self):
        super().__init__(quiet=0)
        self.asked: list[bool] = []

    def step(self, request: P.StepRequest, deadline_s: float | None = None) -> P.StepReply:
        reply = super().step(request, deadline_s)
        self.asked.append(request.wants_stats)
        reply.stats = {"steps": float(len(self.asked))} if request.wants_stats else {}
        return reply


def test_counters_come_with_a_reply_only_when_asked():
    from vllm_ssd.vllm_seam.proposer import STATS_EVERY

    client = CountingClient()
    proposer = make_proposer(client)
    tokens = np.zeros((1, 64), dtype=np.int32)
    for i in range(2 * STATS_EVERY + 2):
        proposer.propose([[7]], np.array([4 + i]), tokens)
    asked = [i for i, wants in enumerate(client.asked) if wants]
    assert asked == [0, STATS_EVERY, 2 * STATS_EVERY]  # not on every reply
    assert proposer.last_stats == {"steps": 2.0 * STATS_EVERY + 1}  # the latest counters kept
    proposer.stats_logger = StatsLogger(1e-9)  # a log line due: the next reply brings them
    proposer.propose([[7]], np.array([100]), tokens)
    assert client.asked[-1] is True


def test_a_server_that_stands_aside_gets_no_more_steps_and_gives_its_cores(monkeypatch):
    from vllm_ssd.vllm_seam import proposer as proposer_module

    given = []
    monkeypatch.setattr(proposer_module, "give_cores_to_target",
                        lambda cpus: given.append(cpus) or "the target now runs on CPUs [0, 1]")
    client = FakeClient(quiet=0, stand_aside="rounds with drafts made 1.57 tokens/s ...")
    proposer = make_proposer(client)
    tokens = np.zeros((1, 64), dtype=np.int32)
    drafts = [proposer.propose([[7]], np.array([4 + i]), tokens) for i in range(3)]
    assert client.calls == ["step", "retire"] and given == [[1]]  # the server stopped
    assert drafts == [[[9]], [[]], [[]]]  # the drafts of that last reply are still used
