"""The batching engine: one worker thread runs every request through batched `generate` calls.

Requests (`Job`s) queue up; the worker takes the first and keeps taking more while they arrive
less than `batch_wait_ms` apart or are still being read by the API (up to `max_batch_size`;
under load the queue is already full and it does not wait), then groups them and runs one model
call per group:

- generation on the base and on LoRA adapters: one group, one `generate` with PEFT's
  mixed-adapter batch (`adapter_names=[...]`, "__base__" for base rows), so traffic spread over
  many adapters batches as well as traffic on one. A group never needs more adapters than
  `--max-adapters`, so they all fit in memory at once;
- generation on an adapter PEFT cannot mix (DoRA): one group per adapter, that adapter active;
- classification with `constrain_to_labels`: one group per adapter, scored by
  `tuneforge.eval.predict.Predictor.score_labels` (exact log-probability of every label).

Per-request temperature, top_p, seed, stop strings and max_tokens are honoured inside the shared
call (`sampling.RowSampler`, `sampling.RowTracker`).

Batching is static: a batch runs until its longest request finishes, and requests that arrive
meanwhile form the next batch. Only the worker touches the model, always under the resident
adapters' lock, so admin load/unload never changes the model under a running batch.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from tuneforge.errors import TuneforgeError
from tuneforge.serve.errors import APIError, model_not_found, overloaded, server_error
from tuneforge.serve.jobs import Done, Failed, Job
from tuneforge.serve.metrics import Metrics
from tuneforge.serve.registry import BASE_ROW, AdapterCatalog, AdapterSpec
from tuneforge.serve.resident import ResidentAdapters
from tuneforge.serve.sampling import RowSampler, RowTracker

log = logging.getLogger("tuneforge.serve")

_STOP = object()  # queue sentinel: the worker exits
_WAIT_CAP = 20
"""A batch waits for more requests at most this many times `batch_wait` in all."""


class BatchingEngine:
    """Runs jobs on the base model and its LoRA adapters in batches (see the module docstring)."""

    name = "transformers"

    def __init__(
        self,
        catalog: AdapterCatalog,
        resident: ResidentAdapters,
        *,
        max_batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        max_queue: int = 1024,
        metrics: Metrics | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise TuneforgeError(f"--max-batch-size must be at least 1 (got {max_batch_size})")
        if batch_wait_ms < 0:
            raise TuneforgeError(f"--batch-wait-ms must be >= 0 (got {batch_wait_ms})")
        self.catalog = catalog
        self.context_length = catalog.base.context_length
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait_ms / 1000.0
        self.metrics = metrics or Metrics()
        self._resident = resident
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._incoming = 0
        self._incoming_lock = threading.Lock()
        self.batches = 0
        """Model calls run so far (generate or classify); each served one or more requests."""
        self.rows = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="tuneforge-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in progress, fail what is still queued (503), stop the worker."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, Job):
                job.events.push(Failed(overloaded("the server is shutting down")))

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Job) -> None:
        """Queue a job; its events arrive on `job.events`. A full queue is a 503."""
        if not self.healthy:
            raise overloaded("the engine is not running")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise overloaded(
                f"the server has {self._queue.maxsize} requests waiting; retry shortly"
            ) from None
        self.metrics.queue_depth.set(self._queue.qsize())

    # -- adapters (admin) ----------------------------------------------------------------------

    def load_adapter(self, name: str, path: str) -> AdapterSpec:
        """Register an adapter and load its weights now (evicting the LRU one if full)."""
        spec = self.catalog.register(name, path)
        try:
            with self._resident.lock:
                self._resident.activate([spec])
        except BaseException:
            self.catalog.unregister(name)
            raise
        return spec

    def unload_adapter(self, name: str) -> None:
        """Unregister an adapter and free its weights; later requests for it get a 404."""
        with self._resident.lock:
            spec = self.catalog.unregister(name)
            self._resident.evict(spec)

    def resident(self) -> list[str]:
        return self._resident.resident()

    # -- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            for group in self._plan(jobs):
                self._run(group)

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Wrap the API's reading of a request: the batch being formed waits for it.

        When a batch ends, its clients send their next requests at once, but on a busy machine
        the API reads them one by one; a batch that closed on the first would leave the others
        waiting out a whole batch.
        """
        with self._incoming_lock:
            self._incoming += 1
        try:
            yield
        finally:
            with self._incoming_lock:
                self._incoming -= 1

    def _collect(self) -> list[Job] | None:
        """The next batch: the first waiting job plus those that follow it closely.

        The batch closes when it is full, or when no request came for `batch_wait` and none is
        being read (`incoming`), or after `_WAIT_CAP` times `batch_wait` in all.
        """
        first = self._queue.get()
        if first is _STOP:
            return None
        jobs = [first]
        last = time.perf_counter()
        cap = last + _WAIT_CAP * self.batch_wait
        while len(jobs) < self.max_batch_size:
            now = time.perf_counter()
            if now >= cap or (now >= last + self.batch_wait and not self._incoming):
                break
            try:
                job = self._queue.get(timeout=max(min(self.batch_wait, cap - now), 1e-4))
            except queue.Empty:
                continue
            if job is _STOP:
                self._queue.put(_STOP)  # finish this batch, then exit
                break
            jobs.append(job)
            last = time.perf_counter()
        self.metrics.queue_depth.set(self._queue.qsize())
        return [job for job in jobs if not job.cancelled]

    def _plan(self, jobs: list[Job]) -> list[list[Job]]:
        """Split jobs into groups that can share one model call (arrival order kept)."""
        groups: dict[str, list[list[Job]]] = {}
        for job in jobs:
            chunks = groups.setdefault(job.group_key, [[]])
            adapters = {j.target.adapter.key for j in chunks[-1] if j.target.adapter}
            spec = job.target.adapter
            if spec and spec.key not in adapters and len(adapters) >= self._resident.capacity:
                chunks.append([])  # all of a group's adapters must fit in memory together
            chunks[-1].append(job)
        return [chunk for chunks in groups.values() for chunk in chunks if chunk]

    def _run(self, jobs: list[Job]) -> None:
        try:
            with self._resident.lock:
                live = self._still_registered(jobs)
                if not live:
                    return
                specs = [job.target.adapter for job in live if job.target.adapter]
                self._resident.activate(specs)
                if live[0].constrain_to_labels:
                    self._classify(live)
                else:
                    self._generate(live)
        except APIError as exc:
            self._fail(jobs, exc)
        except TuneforgeError as exc:
            self._fail(jobs, server_error(str(exc)))
        except Exception as exc:
            log.exception("batch of %d requests failed", len(jobs))
            self._resident.clear_leaked_hooks()
            error = server_error(f"generation failed: {type(exc).__name__}: {exc}")
            fresh = [job for job in jobs if not job.events.pushed]
            if len(jobs) == 1 or not fresh:
                self._fail(jobs, error)
                return
            # One bad row must not fail the requests that shared its batch: those that have
            # received nothing yet run again alone, so only the one that fails alone fails.
            self._fail([job for job in jobs if job.events.pushed], error)
            for job in fresh:
                self._run([job])

    def _still_registered(self, jobs: list[Job]) -> list[Job]:
        """Jobs whose adapter was unloaded while they waited fail with a 404."""
        live = []
        for job in jobs:
            spec = job.target.adapter
            if spec is not None and self.catalog.get(spec.name) is not spec:
                job.events.push(Failed(model_not_found(spec.name)))
            else:
                live.append(job)
        return live

    def _fail(self, jobs: Iterable[Job], error: APIError) -> None:
        for job in jobs:
            job.events.push(Failed(error))

    def _count(self, kind: str, jobs: list[Job]) -> None:
        self.batches += 1
        self.rows += len(jobs)
        self.metrics.batches.inc(kind=kind)
        self.metrics.batch_rows.observe(len(jobs))
        self.metrics.batch_adapters.observe(len({job.target.name for job in jobs}))

    # -- generation ----------------------------------------------------------------------------

    @torch.inference_mode()
    def _generate(self, jobs: list[Job]) -> None:
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        model = self._resident.model
        device = next(model.parameters()).device
        pad_id = int(self.catalog.base.tokenizer.pad_token_id)
        width = max(len(job.prompt_ids) for job in jobs)
        ids = torch.full((len(jobs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):  # left padding: every row's last token in the last column
            ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids) :] = 1
        # One set for the batch: generate pads a row once it emits any of these, so the
        # tracker must end the row on the same tokens (they agree: one vocabulary).
        stop_ids = set().union(*(job.target.stop_ids for job in jobs))
        tracker = RowTracker(jobs, stop_ids)
        sampler = RowSampler([job.params for job in jobs], device, skip=tracker.is_finished)
        config = GenerationConfig(
            max_new_tokens=max(job.params.max_tokens for job in jobs),
            do_sample=False,  # RowSampler did the sampling: argmax picks its token
            num_beams=1,
            eos_token_id=sorted(stop_ids),
            pad_token_id=pad_id,
        )
        kwargs: dict[str, Any] = {}
        if self._resident.has_adapters:
            spec = jobs[0].target.adapter
            if spec is not None and not spec.mixable:
                self._resident.use_only(spec)
            else:
                kwargs["adapter_names"] = [
                    job.target.adapter.key if job.target.adapter else BASE_ROW for job in jobs
                ]
        self._count("generate", jobs)
        model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler] if sampler.active else []),
            stopping_criteria=StoppingCriteriaList([tracker]),
            **kwargs,
        )
        for job, row in zip(jobs, tracker.rows, strict=True):
            if row.finish_reason == "cancelled":
                continue
            reason = row.finish_reason or "length"
            job.events.push(Done(row.text, reason, row.generated))
            self.metrics.prompt_tokens.inc(len(job.prompt_ids), model=job.target.name)
            self.metrics.completion_tokens.inc(row.generated, model=job.target.name)

    # -- classification ------------------------------------------------------------------------

    @torch.inference_mode()
    def _classify(self, jobs: list[Job]) -> None:
        from tuneforge.eval.predict import Predictor

        spec = jobs[0].target.adapter
        if spec is None or spec.label_set is None:  # the API checks this; keep the worker safe
            raise APIError(400, "this model has no label set", param="tuneforge")
        model: Any = self._resident.model
        if spec.mixable:
            model = _OneAdapter(model, spec.key)
        else:
            self._resident.use_only(spec)
        predictor = Predictor(model, spec.tokenizer, batch_size=len(jobs))
        self._count("classify", jobs)
        scores = predictor.score_labels([job.prompt_ids for job in jobs], spec.label_set)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = spec.label_set.labels
        for job, row in zip(jobs, probs, strict=True):
            best = int(row.argmax())
            answer_tokens = len(spec.label_set.sequences[best])
            distribution = {label: float(p) for label, p in zip(labels, row, strict=True)}
            job.events.push(Done(labels[best], "stop", answer_tokens, distribution))
            self.metrics.prompt_tokens.inc(len(job.prompt_ids), model=job.target.name)
            self.metrics.completion_tokens.inc(answer_tokens, model=job.target.name)


class _OneAdapter:
    """A PeftModel seen through one adapter: every forward gets `adapter_names=[key] * rows`.

    `Predictor` calls the model directly with batches whose size it chooses (a prefix of 1 row,
    label continuations repeated per label), so the adapter list is sized per call.
    """

    def __init__(self, model: Any, key: str) -> None:
        self._model = model
        self._key = key

    def __call__(self, **kwargs: Any) -> Any:
        rows = int(kwargs["input_ids"].shape[0])
        return self._model(**kwargs, adapter_names=[self._key] * rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)
