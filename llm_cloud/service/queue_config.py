"""The service's queue settings (``tandem serve`` flags), kept apart from the batcher so the CLI reads them without
importing the service."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QueueConfig:
    """How the service queues its model calls (``tandem serve`` flags)."""

    max_batch: int = field(default=32, metadata={"help": "most candidate lists computed in one batched beam search; "
                                                         "1 turns micro-batching off"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest a fresh-list request waits for others to "
                                                             "join its batch, in milliseconds"})
    max_queue: int = field(default=256, metadata={"help": "fresh-list requests that may wait at once; one more is "
                                                          "answered 429 with Retry-After"})
    deadline_ms: float = field(default=10_000.0, metadata={"help": "per-request deadline in milliseconds: past it "
                                                                  "/v1/recommend answers from what it has (degraded) "
                                                                  "and /v1/candidates and /v1/explain answer 503"})
    llm_process: bool = field(default=False, metadata={
        "help": "run the transformers backend's candidate search in a process of its own, so it does not share the "
                "interpreter lock with the HTTP side (tandem serve turns it on; the vLLM backend has its own engine "
                "process)", "cli": False})
    llm_threads: int = field(default=1, metadata={"help": "torch threads of that process"})
    cpu_slots: int = field(default=1, metadata={"help": "requests that run the SRM and the parameter generator at "
                                                       "once (a request waiting for the LLM holds none), so request "
                                                       "threads do not crowd out the LLM's batched search"})
    reasoning_workers: int = field(default=1, metadata={"help": "threads that run the reasoning model"})
    reasoning_queue: int = field(default=8, metadata={"help": "reasoning calls that may wait at once; one more is "
                                                              "answered 429"})

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "llm_threads", "cpu_slots", "reasoning_workers", "reasoning_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_wait_ms", "deadline_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a non-negative number of milliseconds, got {getattr(self, name)}")
