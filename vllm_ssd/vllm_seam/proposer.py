"""SSDProposer: the thin piece inside vLLM (speculative method ``custom_class``).

vLLM calls ``propose()`` after each verification with every row's accepted
drafts + bonus token. The proposer forwards the outcomes to the draft server and
returns the server's drafts for the next step, waiting at most the step deadline
(``vllm_ssd.client.deadline``). A step past it gets no drafts (vLLM decodes without
speculation); until the late reply comes (recognised by its seq and dropped) no step
is sent, and the next one resynchronises the server with what it missed (the
tracker's ``num_synced``). A server that dies, or stays silent ``ipc_timeout_s``, is
killed and restarted (with back-off while start-ups fail); every request is then
resynchronised.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import weakref
from itertools import chain

import numpy as np

from vllm_ssd import protocol as P
from vllm_ssd.client import DraftServerUnavailable, ServerConnection, StepDeadlineMissed
from vllm_ssd.client.deadline import StepDeadline
from vllm_ssd.vllm_seam.cpu_cores import core_gain, give_cores_to_target
from vllm_ssd.client.stats_log import StatsLogger
from vllm_ssd.client.pause_log import PauseLog
from vllm_ssd.client.restarts import RestartSchedule
from vllm_ssd.settings import SSDSettings
from vllm_ssd.validation import shares_gpu
from vllm_ssd.vllm_seam.tracker import RequestTracker

logger = logging.getLogger(__name__)
# steps between replies that carry the server's counters: the base a replacement server
# continues from after a crash (at most this many steps of counts are lost then)
STATS_EVERY = 16


class SSDProposer:
    def __init__(self, vllm_config):
        from vllm_ssd.vllm_seam.cpu_sampling_fix import ensure_exact_cpu_sampling
        from vllm_ssd.vllm_seam.plugin import settings_from_vllm_config

        ensure_exact_cpu_sampling()
        self.settings: SSDSettings = settings_from_vllm_config(vllm_config)
        spec = vllm_config.speculative_config
        self.num_speculative_tokens = int(spec.num_speculative_tokens)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        max_slots = int(vllm_config.scheduler_config.max_num_seqs)
        self.hello = P.Hello(
            version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=self.num_speculative_tokens,
            target_vocab_size=int(vllm_config.model_config.get_vocab_size()),
            max_model_len=self.max_model_len, max_num_seqs=max_slots)
        self.runner = _find_model_runner()
        self.is_driver = _is_tp_driver()
        self.tracker = RequestTracker(max_slots)
        self.client: ServerConnection | None = None
        self.stats_logger = StatsLogger(self.settings.log_interval_s)
        self.last_stats: dict[str, float] = {}
        self.last_return = 0.0
        self.last_round_trip_s = 0.0
        self.quiet_steps = 0  # steps the server promised no drafts for: sent, not awaited
        self.stood_aside = False  # the server stood aside for good: no more steps
        self._init_fault_handling()

    def _init_fault_handling(self) -> None:
        self.deadline = StepDeadline(self.settings.step_deadline_ms)
        self.deadline_misses = 0
        # the step past its deadline: (seq, perf_counter and monotonic time of its send)
        self.late: tuple[int, float, float] | None = None
        self.resync = False  # the next step re-sends its rows as catch-up, not outcomes
        self.restarts = RestartSchedule()
        # failed servers replaced: counted here, not in a server's counters (a replacement
        # may not answer before /metrics asks); the client carries it to readers and bases
        self.server_restarts = 0
        self.pauses = PauseLog()
        self.steps_since_stats = STATS_EVERY  # the first reply brings the counters

    def load_model(self, *args, **kwargs) -> None:
        """Starts the draft server (vLLM's own model is not used by SSD)."""
        if not self.is_driver or self.client is not None:
            return
        if self.settings.draft_device == "cpu":
            self.hello.core_gain = core_gain(self.settings.draft_cpu_list())
        self.hello.shares_target_gpu = _shares_target_gpu(self.settings.draft_device, self.runner)
        self.client = ServerConnection(self.settings, self.hello)
        self.client.start(wait=True)
        weakref.finalize(self, _shutdown, self.client, self.settings)
        logger.info("vllm_ssd: draft server pid %d on %s, mode %s, K=%d",
                    self.client.pid, self.client.reply_info.device, self.settings.mode,
                    self.num_speculative_tokens)

    def propose(self, sampled_token_ids: list[list[int]], num_tokens_no_spec: np.ndarray,
                token_ids_cpu: np.ndarray, slot_mappings=None, **kwargs) -> list[list[int]]:
        num_rows = len(sampled_token_ids)
        drafts: list[list[int]] = [[] for _ in range(num_rows)]
        if not self.is_driver or self.client is None or num_rows == 0 or self.stood_aside or \
                not self._server_ready():
            return drafts
        if self.late is not None and not self._late_reply_in():
            return drafts  # nothing sent: the next step carries these tokens
        target_step_s = time.perf_counter() - self.last_return if self.last_return else 0.0
        req_ids = list(self.runner.input_batch.req_ids[:num_rows])
        request, rows = self._make_step(req_ids, sampled_token_ids, num_tokens_no_spec[:num_rows],
                                        token_ids_cpu, target_step_s)
        request.previous_round_trip_s = self.last_round_trip_s
        request.deadline_misses = self.deadline_misses
        request.wants_stats = self.steps_since_stats >= STATS_EVERY or self.stats_logger.due()
        self.deadline.observe_target_step(request.target_step_s)
        sent = time.perf_counter()
        quiet = self.quiet_steps > 0
        try:
            if quiet:
                self.client.notify(request)
                self.quiet_steps -= 1
            else:
                reply = self.client.step(request, self.deadline.seconds())
                self.quiet_steps = reply.quiet_steps
        except StepDeadlineMissed as miss:
            self._on_deadline_miss(request.seq, sent, miss)
            return drafts
        except DraftServerUnavailable as error:
            self._on_failure(error)
            return drafts
        self.last_round_trip_s = time.perf_counter() - sent
        self.last_return = time.perf_counter()
        if quiet:
            return drafts
        self.deadline.observe_reply(self.last_round_trip_s)
        self.restarts.succeeded()
        lens = P.unpack(reply.num_drafts)
        flat = P.unpack(reply.draft_tokens).tolist()
        ends = np.cumsum(lens).tolist()
        for row, start, end in zip(rows.tolist(), [0, *ends[:-1]], ends):
            drafts[row] = flat[start:end]
        self.steps_since_stats += 1
        if reply.stats:  # this step brought them
            self.last_stats, self.steps_since_stats = reply.stats, 1
            self.stats_logger.maybe_log(reply.stats)
        if reply.stand_aside:
            self._stand_aside(reply.stand_aside)
        return drafts

    def _stand_aside(self, reason: str) -> None:
        """No more steps: vLLM decodes without drafts; the draft server stops (its counters
        stay readable, see ``ServerConnection.retire``) and a CPU draft's cores go to the
        target."""
        self.stood_aside = True
        self.client.retire()
        cores = "the draft ran on a GPU"
        if self.settings.draft_device == "cpu":
            cores = give_cores_to_target(self.settings.draft_cpu_list())
        logger.warning("vllm_ssd: speculation does not pay here and stands aside for good: "
                       "%s; the draft server stopped (its memory freed, its counters kept); "
                       "%s (setting stand_aside=false keeps drafting)", reason, cores)

    def _make_step(self, req_ids, sampled, num_tokens, token_ids_cpu, target_step_s):
        sync = self.tracker.sync(req_ids)
        if len(sync.new_rows) or self.resync:  # a step with prefills, the first after an
            target_step_s = 0.0  # idle gap or after a late reply: not a decoding step's time
        new_requests = [self._register(req_ids[row], int(sync.slots[row])) for row in sync.new_rows]
        lens = np.fromiter(map(len, sampled), dtype=np.int64, count=len(sampled))
        rows = np.nonzero(lens > 0)[0]
        slots = sync.slots[rows]
        synced = self.tracker.num_synced[slots]
        n = num_tokens[rows].astype(np.int64)
        is_step = (n - synced == lens[rows]) & (synced > 0) & (not self.resync)
        self.resync = False
        if is_step.all():
            flat = np.fromiter(chain.from_iterable(sampled[r] for r in rows), dtype=np.int32)
            deltas = lens[rows]
        else:
            pieces = [np.asarray(sampled[r] if ok else token_ids_cpu[r, s:e], dtype=np.int32)
                      for r, ok, s, e in zip(rows, is_step, synced, n)]
            flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
            deltas = np.where(is_step, lens[rows], n - synced)
        self.tracker.num_synced[slots] = n
        room = np.minimum(self.max_model_len - n, self.tracker.token_limit[slots] - n) - 1
        caps = np.clip(room, 0, self.num_speculative_tokens)
        request = P.StepRequest(
            seq=0, new_requests=new_requests, finished_slots=sync.finished_slots,
            slots=P.pack(slots), num_new_tokens=P.pack(deltas), new_tokens=P.pack(flat),
            is_step_delta=P.pack(is_step, np.uint8), max_drafts=P.pack(caps),
            target_step_s=target_step_s)
        return request, rows

    def _register(self, req_id: str, slot: int) -> P.NewRequest:
        state = self.runner.requests[req_id]
        params = state.sampling_params
        prompt_len = len(state.prompt_token_ids or [])
        max_tokens = params.max_tokens if params and params.max_tokens else self.max_model_len
        self.tracker.token_limit[slot] = prompt_len + max_tokens
        temperature = float(params.temperature) if params else 0.0
        return P.NewRequest(slot=slot, temperature=temperature if temperature > 1e-5 else 0.0)

    def _server_ready(self) -> bool:
        """True when a server is up; starts a replacement when one is due (non-blocking)."""
        if self.client.server is None:
            if not self.restarts.due(time.monotonic()):
                return False
            self.hello.stats_base = dict(self.last_stats)
            self.client.start(wait=False)
        if self.client.ready():
            if self.pauses.paused and self.late is None:
                self.pauses.resume(f"draft server pid {self.client.pid} started")
            return True
        if self.client.server is None:  # the start-up failed or timed out: back off
            delay = self.restarts.failed(time.monotonic())
            logger.warning("vllm_ssd: draft server start-up failed; next attempt in %.0f s", delay)
        return False

    def _late_reply_in(self) -> bool:
        """True once the reply that missed its deadline has come (it is dropped, and the next
        step resynchronises); a server silent for ipc_timeout_s is declared down."""
        seq, sent, sent_monotonic = self.late
        try:
            arrived = self.client.late_reply_arrived(seq)
        except DraftServerUnavailable as error:
            self._on_failure(error)
            return False
        if arrived:
            self.deadline.observe_reply(time.perf_counter() - sent)
            self.late, self.resync = None, True
            self.pauses.resume(f"the draft server answered step {seq}")
            return True
        silent_s = time.monotonic() - max(self.client.last_heard, sent_monotonic)
        if silent_s > self.settings.ipc_timeout_s:
            self._on_failure(DraftServerUnavailable(f"no reply in {silent_s:.0f} s"))
        return False

    def _on_deadline_miss(self, seq: int, sent: float, miss: StepDeadlineMissed) -> None:
        self.deadline_misses += 1
        self.late = (seq, sent, time.monotonic() - (time.perf_counter() - sent))
        self.quiet_steps = 0
        self.last_return = time.perf_counter()
        self.pauses.pause(f"the draft server missed the step deadline ({miss})")

    def _on_failure(self, error: Exception) -> None:
        self.server_restarts += 1
        logger.warning("vllm_ssd: draft server unavailable (%s); it is killed and restarted "
                       "(restart %d)", error, self.server_restarts)
        self.pauses.pause("the draft server restarts")
        self.last_stats = {**self.last_stats, "deadline_misses": float(self.deadline_misses),
                           "restarts": float(self.server_restarts)}
        self.tracker.reset()
        self.quiet_steps, self.late, self.resync = 0, None, False
        # before the server goes: the address file then names none but counts this restart
        self.client.restarts = self.server_restarts
        self.client.close_server()
        self.restarts.failed(time.monotonic())


def _shutdown(client: ServerConnection, settings: SSDSettings) -> None:
    """Stops this engine's server (the client removes its socket and address file); without
    an engine directory of its own the process root goes only once no other engine's files
    are in it."""
    client.close()
    if settings.runtime_dir is None:
        from vllm_ssd.client.runtime_files import process_root
        try:
            os.rmdir(process_root())
        except OSError:  # another engine's files, or already gone
            pass


def _find_model_runner():
    """vLLM does not hand the runner to custom proposers; find it on the call stack
    (GPUModelRunner.__init__ -> create_custom_proposer -> SSDProposer)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, GPUModelRunner):
            return candidate
        frame = frame.f_back
    raise RuntimeError("vllm_ssd: SSDProposer must be created by vLLM's model runner")


def _shares_target_gpu(draft_device: str, runner) -> bool:
    """Whether the draft runs on this worker's GPU (vLLM's runner holds ``device``)."""
    import torch

    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return shares_gpu(draft_device, str(getattr(runner, "device", "")), current)


def _is_tp_driver() -> bool:
    try:
        from vllm.distributed.parallel_state import get_tp_group
        return get_tp_group().rank_in_group == 0
    except (AssertionError, ImportError, AttributeError):
        return True
