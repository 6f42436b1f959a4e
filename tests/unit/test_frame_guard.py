"""Frame admission and step validation of the draft server: malformed, inconsistent and
foreign frames are refused (counted) without touching state."""
import msgspec
import numpy as np
import pytest

from vllm_ssd import protocol as P
from vllm_ssd.server.frame_guard import FrameGuard, StepLimits, step_problem
from vllm_ssd.server.stats import ServerStats

LIMITS = StepLimits(max_slots=4, max_drafts=3, vocab_size=512, max_len=64)
PEER, OTHER = b"proposer", b"intruder"


def table(active=(0,), lengths=(10,)):
    is_active = np.zeros(LIMITS.max_slots, dtype=bool)
    num_tokens = np.zeros(LIMITS.max_slots, dtype=np.int64)
    is_active[list(active)] = True
    num_tokens[list(active)] = lengths
    return is_active, num_tokens


def step(seq=5, slots=(0,), lens=(2,), tokens=(7, 8), flags=(1,), caps=(3,), new=(), finished=(),
         **fields):
    return P.StepRequest(
        seq=seq, new_requests=[P.NewRequest(slot=s, temperature=0.0) for s in new],
        finished_slots=list(finished), slots=P.pack(slots), num_new_tokens=P.pack(lens),
        new_tokens=P.pack(tokens), is_step_delta=P.pack(flags, np.uint8), max_drafts=P.pack(caps),
        **fields)


def problem(request, last_seq=4, **state):
    return step_problem(request, LIMITS, *table(**state), last_seq=last_seq)


def test_a_consistent_step_passes():
    assert problem(step()) is None
    # a slot that finishes and is reused by a new request in the same step
    assert problem(step(finished=[0], new=[0], flags=(0,))) is None
    assert problem(step(slots=(0, 2), lens=(1, 3), tokens=(1, 2, 3, 4), flags=(1, 0), caps=(3, 0),
                        new=[2])) is None


@pytest.mark.parametrize("request_, message", [
    (step(seq=4), "seq 4 is not after"),
    (step(seq=2), "seq 2 is not after"),
    (step(slots=(7,)), "slots: a slot outside"),
    (step(slots=(-1,)), "slots: a slot outside"),
    (step(slots=(0, 0), lens=(1, 1), flags=(1, 1), caps=(3, 3)), "a slot in two rows"),
    (step(slots=(1,)), "slot holds no request"),
    (step(finished=[0]), "slot holds no request"),
    (step(lens=(3,)), "does not match new_tokens"),
    (step(lens=(-1,), tokens=()), "does not match new_tokens"),
    (step(tokens=(7, 512)), "outside the vocabulary"),
    (step(tokens=(7, -3)), "outside the vocabulary"),
    (step(caps=(-1,)), "max_drafts < 0"),
    (step(flags=(2,)), "is_step_delta flag not 0/1"),
    (step(lens=(0,), tokens=()), "a step row without tokens"),
    (step(lens=(60,), tokens=tuple(range(60)), flags=(0,)), "more than 64"),
    (step(caps=(3, 3)), "per-row fields differ in length"),
    (step(new=[9]), "new_requests: a slot outside"),
    (step(finished=[0, 0]), "finished_slots: a slot listed twice"),
    (step(target_step_s=float("nan")), "target_step_s"),
    (step(previous_round_trip_s=-1.0), "previous_round_trip_s"),
])
def test_inconsistent_steps_are_named(request_, message):
    assert message in problem(request_)


def test_byte_fields_must_hold_whole_int32s():
    request = step()
    request.new_tokens = request.new_tokens[:-1]
    assert "new_tokens holds 7 bytes" in problem(request)


def test_a_bad_temperature_is_refused():
    request = step(new=[1], slots=(1,), flags=(0,))
    request.new_requests[0].temperature = float("inf")
    assert "temperature" in problem(request)


def dropped(stats: ServerStats) -> tuple[float, float]:
    return stats.scalars["rejected_frames"], stats.scalars["foreign_frames"]


def bound_guard() -> tuple[FrameGuard, ServerStats]:
    stats = ServerStats(max_drafts=3)
    guard = FrameGuard(stats_key="k3y")
    guard.count_drops_with(stats.observe_dropped_frame)
    guard.bind(PEER, LIMITS)
    return guard, stats


def test_drops_before_the_counts_exist_are_handed_over():
    guard = FrameGuard(stats_key="k3y")
    assert guard.admit_hello([PEER, b"\x00\xff garbage"]) is None
    assert guard.admit_hello([PEER, P.encode(P.StatsRequest(key="k3y"))]) is None  # uncounted
    stats = ServerStats(max_drafts=3)
    guard.count_drops_with(stats.observe_dropped_frame)
    assert dropped(stats) == (1.0, 0.0)
    guard.bind(PEER, LIMITS)
    assert guard.admit([OTHER, P.encode(step())]) is None
    assert dropped(stats) == (2.0, 1.0)


def test_the_proposers_frames_are_admitted():
    guard, stats = bound_guard()
    for message in (step(), P.StatsRequest(), P.Shutdown()):
        identity, admitted = guard.admit([PEER, P.encode(message)])
        assert identity == PEER and admitted == message
    assert dropped(stats) == (0.0, 0.0)


def test_another_peer_gets_nothing_but_keyed_stats():
    guard, stats = bound_guard()
    for message in (P.Shutdown(), step(), P.StatsRequest(), P.StatsRequest(key="wrong"),
                    P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=3,
                            target_vocab_size=512, max_model_len=64, max_num_seqs=4)):
        assert guard.admit([OTHER, P.encode(message)]) is None
    assert dropped(stats) == (5.0, 5.0)
    assert guard.admit([OTHER, P.encode(P.StatsRequest(key="k3y"))])[0] == OTHER


@pytest.mark.parametrize("parts", [
    [PEER, b"\x00\xff garbage"],
    [PEER, P.encode(step())[:-5]],  # truncated
    [PEER, msgspec.msgpack.encode({"type": "step", "seq": "one"})],  # a field of the wrong type
    [PEER, msgspec.msgpack.encode({"type": "no_such_message"})],
    [PEER, P.encode(step()), b"extra part"],
    [PEER],
    [PEER, b"\x00" * (LIMITS.max_frame_bytes() + 1)],  # oversized
    [PEER, P.encode(P.StepReply(seq=1, num_drafts=b"", draft_tokens=b"", is_hit=b""))],
])
def test_malformed_frames_are_dropped_and_counted(parts):
    guard, stats = bound_guard()
    assert guard.admit(parts) is None
    assert dropped(stats) == (1.0, 0.0)


def test_each_kind_of_problem_is_logged_once(caplog):
    guard, _ = bound_guard()
    for _ in range(3):
        guard.admit([OTHER, P.encode(P.Shutdown())])
        guard.admit([PEER, b"junk"])
    warnings = [r for r in caplog.records if "dropped a frame" in r.getMessage()]
    assert len(warnings) == 2
