"""ThinkRec at serving time (arXiv 2505.15091): the reasoning model behind ``POST /v1/explain`` and
``POST /v1/recommend`` with ``reasoning: true``.

A :class:`Reasoner` holds the loaded :class:`~llm_cloud.thinkrec.model.ThinkRecModel` and the item lines of its
prompts (the served catalogue's titles with the folder's cached keywords). Each call picks the adapter for the user
(the gate over the user groups reads the device SRM's user vector, without a generated head, as at training time),
writes a reasoning trace with the thinking prompt, and, for explanations, reads the yes-probability with and without
that trace. Calls are serialised: adapter switching is model-wide state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llm_cloud.thinkrec.engines import load_model
from llm_cloud.thinkrec.keywords import KeywordCache
from llm_cloud.thinkrec.model import META, ItemTexts, ThinkRecModel
from tandem.errors import TandemError

BUILD_HINT = "build one with `tandem eval thinkrec --out OUT` and serve it with `tandem serve --thinkrec OUT/model`"


def _ms(start: float) -> float:
    return 1000.0 * (time.perf_counter() - start)


@dataclass
class Reasoner:
    """A ThinkRec model ready to explain recommendations of the served catalogue."""

    model: ThinkRecModel  # or VLLMThinkRec, the same API (llm_cloud.thinkrec.engines)
    texts: ItemTexts
    folder: Path
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def load(cls, folder: str | Path, catalogue, hidden_size: int | None = None,
             engine: str = "transformers") -> Reasoner:
        """Load the ThinkRec folder for ``catalogue`` on ``engine`` (``transformers``, or ``vllm``:
        :class:`~llm_cloud.thinkrec.vllm_scorer.VLLMThinkRec`, the same API with each adapter a per-request LoRA);
        ``hidden_size`` (the SRM's width) is checked against the user clustering's centroids. Any failure is a
        one-line :class:`TandemError` naming the folder and the fix."""
        folder = Path(folder).expanduser()
        if not (folder / META).is_file():
            raise TandemError(f"{folder} is not a ThinkRec folder (no {META}); {BUILD_HINT}")
        try:
            model = load_model(folder, engine)
            texts = ItemTexts(catalogue, KeywordCache(folder / "keywords.json"))
        except TandemError:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt adapter or base model can fail in many libraries
            raise TandemError(f"ThinkRec folder {folder} could not be loaded ({type(exc).__name__}: {exc}); rebuild "
                              f"it ({BUILD_HINT}), or serve without --thinkrec") from exc
        if model.clustering is not None and hidden_size is not None:
            width = model.clustering.centroids.shape[-1]
            if width != hidden_size:
                raise TandemError(f"{folder / 'clusters.json'} clusters users of width {width} but the served SRM has "
                                  f"width {hidden_size}; rebuild the ThinkRec model on this store ({BUILD_HINT})")
        return cls(model, texts, folder)

    def close(self) -> None:
        """Release the engine (vLLM's worker processes)."""
        self.model.close()

    @staticmethod
    def user(srm, history: list[int]) -> np.ndarray:
        """(d,) the SRM's user vector for ``history`` (no generated head): what the gate over user groups reads."""
        from srm_device.scoring import user_vector

        return user_vector(srm, history)[0].numpy()

    def explain(self, srm, history: list[int], item: int, max_tokens: int = 96) -> dict:
        """Why ``item`` might suit the user of ``history``: ``trace``, ``p_yes`` (after the trace), ``p_yes_direct``
        (bare prompt), ``adapter``, ``route`` (group/general/mix, None without experts) and ``timings_ms``."""
        timings: dict[str, float] = {}
        with self.lock:
            start = time.perf_counter()
            adapter, route = self.model.adapter_for(self.user(srm, history))
            timings["gate"] = _ms(start)
            start = time.perf_counter()
            prompt = self.texts.prompt(history, item, think=True)
            trace = self.model.think([prompt], adapter=adapter, max_new_tokens=max_tokens)[0]
            timings["think"] = _ms(start)
            start = time.perf_counter()
            p_yes = float(self.model.p_yes([prompt], [trace or None], adapter=adapter)[0])
            p_direct = float(self.model.p_yes([self.texts.prompt(history, item)], adapter=adapter)[0])
            timings["score"] = _ms(start)
        timings["total"] = sum(timings.values())
        return {"trace": trace, "p_yes": p_yes, "p_yes_direct": p_direct, "adapter": adapter,
                "route": route.kind if route is not None else None, "timings_ms": timings}

    def recommend_trace(self, srm, history: list[int], items: list[int], titles: list[str],
                        max_tokens: int = 96) -> str:
        """``"<title>: <trace>"``: the reasoning trace for the top item of a recommended list (best first)."""
        if not items:
            return ""
        with self.lock:
            adapter, _ = self.model.adapter_for(self.user(srm, history))
            prompt = self.texts.prompt(history, int(items[0]), think=True)
            trace = self.model.think([prompt], adapter=adapter, max_new_tokens=max_tokens)[0]
        return f"{titles[0]}: {trace or '(the model wrote no reasoning)'}"
