"""Teachers: anything that completes text prompts. Cas-SEAT synthesis (arXiv 2501.05662) talks to this protocol only.

- :class:`LocalTeacher`: a local Hugging Face causal LM through transformers ``generate`` (batched, left-padded).
- :class:`OpenAITeacher`: any OpenAI-compatible ``/v1/completions`` endpoint — ``vllm serve`` (Tandem's own vLLM
  server included: ``python -m vllm.entrypoints.openai.api_server``), or a hosted API.

``complete(prompts, n, temperature, max_tokens)`` returns, per prompt, ``n`` completions. Temperature 0 is greedy
(``n`` must then be 1). Errors are :class:`TeacherError`; the synthesiser retries and records them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import torch

from tandem.errors import TandemError


class TeacherError(TandemError):
    """A teacher call failed (network, HTTP status, malformed reply)."""


class Teacher(Protocol):
    name: str

    def complete(self, prompts: list[str], n: int = 1, temperature: float = 0.0,
                 max_tokens: int = 256) -> list[list[str]]:
        """``n`` completions of each prompt."""


def chat_text(tok, prompt: str) -> str:
    """``prompt`` as one user turn through ``tok``'s chat template, ready for the reply (unchanged without one)."""
    if tok.chat_template is None:
        return prompt
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def _check(n: int, temperature: float) -> None:
    if n < 1:
        raise ValueError(f"n (completions per prompt) must be >= 1, got {n}")
    if temperature == 0 and n > 1:
        raise ValueError(f"n={n} greedy completions would all be equal; pass temperature > 0 or n=1")


class GreedyText:
    """The LLM backends' text method, ``generate(prompts, max_new_tokens)``, on top of a teacher's ``complete``, so
    teachers can also write keyword summaries (:mod:`llm_cloud.thinkrec.keywords`)."""

    def generate(self, prompts: list[str], max_new_tokens: int = 64) -> list[str]:
        """One greedy completion per prompt."""
        return [c[0] for c in self.complete(prompts, 1, 0.0, max_new_tokens)]


class LocalTeacher(GreedyText):
    """A local causal LM folder (e.g. SmolLM2-135M-Instruct's fp32 copy); prompts go through the chat template when
    the tokenizer has one (``chat=True``)."""

    def __init__(self, model_dir: str | Path, chat: bool = True, batch_size: int = 8, seed: int = 0) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"local:{model_dir}"
        self.tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.chat = chat and self.tok.chat_template is not None
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def _text(self, prompt: str) -> str:
        return chat_text(self.tok, prompt) if self.chat else prompt

    @torch.no_grad()
    def complete(self, prompts: list[str], n: int = 1, temperature: float = 0.0,
                 max_tokens: int = 256) -> list[list[str]]:
        _check(n, temperature)
        out: list[list[str]] = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = [self._text(p) for p in prompts[i:i + self.batch_size]]
            enc = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
            kwargs = {"do_sample": temperature > 0, "max_new_tokens": max_tokens, "num_return_sequences": n,
                      "pad_token_id": self.tok.pad_token_id}
            if temperature > 0:
                kwargs["temperature"] = temperature
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen)))
            ids = self.model.generate(**enc, **kwargs)  # (b·n, L + new)
            texts = self.tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out.extend([t.strip() for t in texts[k * n:(k + 1) * n]] for k in range(len(chunk)))
        return out


class OpenAITeacher(GreedyText):
    """``POST {base_url}/v1/completions`` with ``model``, ``prompt``, ``n``, ``temperature``, ``max_tokens``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        import httpx

        self.name = f"openai:{base_url}:{model}"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def complete(self, prompts: list[str], n: int = 1, temperature: float = 0.0,
                 max_tokens: int = 256) -> list[list[str]]:
        import httpx

        _check(n, temperature)
        out = []
        for prompt in prompts:
            body = {"model": self.model, "prompt": prompt, "n": n, "temperature": temperature,
                    "max_tokens": max_tokens}
            try:
                resp = self.client.post("/v1/completions", json=body)
            except httpx.HTTPError as exc:
                raise TeacherError(f"teacher {self.name} unreachable: {exc}") from None
            if resp.status_code != 200:
                raise TeacherError(f"teacher {self.name} answered HTTP {resp.status_code}: {resp.text[:200]}")
            try:
                choices = sorted(resp.json()["choices"], key=lambda c: c.get("index", 0))
                texts = [str(c["text"]).strip() for c in choices]
            except (ValueError, KeyError, TypeError):
                raise TeacherError(f"teacher {self.name} sent a reply without choices[].text") from None
            if len(texts) != n:
                raise TeacherError(f"teacher {self.name} sent {len(texts)} completions, asked for {n}")
            out.append(texts)
        return out


def make_teacher(teacher: str, teacher_model: str | None = None) -> Teacher:
    """``teacher``: ``"local"`` (``teacher_model`` is a model folder, default SmolLM2-135M-Instruct) or an
    OpenAI-compatible base URL (``teacher_model`` is the served model's name; the API key, if any, comes from
    ``$TANDEM_TEACHER_API_KEY``)."""
    if teacher == "local":
        if teacher_model is None:
            from llm_common.smollm import base_model_dir

            teacher_model = str(base_model_dir())
        return LocalTeacher(teacher_model)
    if teacher.startswith(("http://", "https://")):
        if not teacher_model:
            raise TandemError("teacher is a URL but teacher_model is not set; pass the served model's name")
        return OpenAITeacher(teacher, teacher_model, api_key=os.environ.get("TANDEM_TEACHER_API_KEY"))
    raise TandemError(f"teacher={teacher!r} is neither 'local' nor an http(s) URL; pass one of those")
