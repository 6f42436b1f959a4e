"""Wire format round trips and the proposer's row -> slot bookkeeping."""

from vllm_ssd import protocol as P
from vllm_ssd.vllm_seam.tracker import RequestTracker


def test_step_round_trip():
    step = P.make_dummy_step(seq=3)
    back = P.decode(P.encode(step))
    assert isinstance(back, P.StepRequest) and back.seq == 3
    assert P.unpack(back.new_tokens).tolist() == [5, 6, 7]
    assert back.new_requests[0].slot == 0


def test_tracker_lifecycle():
    tracker = RequestTracker(max_slots=3)
    first = tracker.sync(["a", "b"])
    assert first.new_rows.tolist() == [0, 1] and first.finished_slots == []
    tracker.num_synced[first.slots] = [5, 6]
    second = tracker.sync(["b", "c"])  # a finished, c joined (and may reuse a's slot)
    assert second.finished_slots == [first.slots[0]]
    assert second.new_rows.tolist() == [1] and second.slots[0] == first.slots[1]
    assert tracker.num_synced[second.slots[1]] == 0 and tracker.num_synced[second.slots[0]] == 6
    tracker.reset()
    assert tracker.sync(["b", "c"]).new_rows.tolist() == [0, 1]
    assert len(set(tracker.slot_of.values())) == 2
