"""The tensorised trie beam search against the reference (transformers' ``generate`` with
``prefix_allowed_tokens_fn``): the same lists and scores on random catalogues, random models and mixed prompt
lengths, including catalogues with fewer items than beams and depths whose fan-out is below the beam width."""

from __future__ import annotations

import numpy as np
import pytest

from llm_cloud.generative.decode import beam_candidates
from llm_cloud.generative.fast_decode import TrieTables, fast_beam_candidates
from tests.test_generative import make, random_codes


def test_tables_hold_exactly_the_trie() -> None:
    from llm_cloud.generative.trie import CodeTrie

    codes = random_codes(np.random.default_rng(3), 30)
    _, fmt, _ = make(codes)
    tokens = fmt.codec.item_tokens
    tables = TrieTables.build(tokens)
    trie = CodeTrie(tokens, dead_end=fmt.codec.eos_id)
    found = set()
    frontier = [((), 0)]
    for d in range(tokens.shape[1]):  # walk every prefix through the tables and compare with the trie
        nxt = []
        for prefix, state in frontier:
            row = tables.tokens[d][state]
            allowed = row[row >= 0].tolist()
            assert allowed == trie.allowed(prefix)
            nxt += [((*prefix, t), int(tables.nxt[d][state][j])) for j, t in enumerate(allowed)]
        frontier = nxt
    for path, state in frontier:
        item = int(tables.items[state])
        assert tokens[item].tolist() == list(path)
        found.add(item)
    assert found == set(range(1, len(tokens)))


@pytest.mark.parametrize("seed", range(8))
def test_same_lists_as_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(3, 40))
    codes = random_codes(rng, n_items)
    _, fmt, model = make(codes, seed=seed)
    histories = [rng.integers(1, n_items + 1, size=int(rng.integers(1, 8))) for _ in range(7)]
    for n in sorted({1, 2, int(rng.integers(1, n_items + 1)), n_items, n_items + 5}):
        ref = beam_candidates(model, fmt, histories, n=n, batch_size=3)
        fast = fast_beam_candidates(model, fmt, histories, n=n, batch_size=3)
        for a, b in zip(ref, fast):
            assert b.items.tolist() == a.items.tolist(), (seed, n)
            assert np.allclose(b.scores, a.scores, atol=1e-4), (seed, n)


def test_backend_serves_the_fast_search_with_the_reference_lists(service_store) -> None:
    """A trained checkpoint (the service tests' store) through the backend: the default search and the reference."""
    from llm_cloud.backends.transformers_backend import TransformersBackend
    from llm_cloud.generative.checkpoint import load_artifact

    artifact = load_artifact(service_store / "llm")
    fast, ref = TransformersBackend(artifact), TransformersBackend(artifact, search="reference")
    assert fast.search == "fast"
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, artifact.n_items + 1, size=int(rng.integers(1, 30))) for _ in range(12)] + [[]]
    for n in (1, 10, 100):
        for a, b in zip(ref.beam_candidates(histories, n), fast.beam_candidates(histories, n)):
            assert a.items.tolist() == b.items.tolist() and a.cold_start == b.cold_start
            assert np.allclose(a.scores, b.scores, atol=1e-4)
    with pytest.raises(ValueError, match="search must be one of fast, reference"):
        TransformersBackend(artifact, search="beam")
