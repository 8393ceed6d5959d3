"""Property tests (Hypothesis) for the request models at the API's edge: any JSON either validates or is refused
with a pydantic ValidationError (never another exception), ids and counts are strict whole numbers within their
bounds, and what validates survives a JSON round trip unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tandem import protocol as p

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=4), max_leaves=12)
REQUESTS = (p.RecommendRequest, p.ExplainRequest, p.CandidatesRequest, p.ParametersRequest)
FIELDS = {p.RecommendRequest: ("user_id", "history", "k", "reasoning", "candidates"),
          p.ExplainRequest: ("history", "item_id", "max_tokens"), p.CandidatesRequest: ("history", "n"),
          p.ParametersRequest: ("recent", "method", "encoding")}
NOT_INTS = st.booleans() | st.floats(allow_nan=False) | st.text(max_size=4) | st.none() | st.lists(st.integers(),
                                                                                                    max_size=2)


@settings(max_examples=150, deadline=None)
@given(model=st.sampled_from(REQUESTS), data=st.data())
def test_any_json_validates_or_is_refused_cleanly(model, data) -> None:
    body = data.draw(st.dictionaries(st.sampled_from((*FIELDS[model], "extra")), JSON, max_size=4)
                     | JSON, label="body")
    try:
        req = model.model_validate(body)
    except ValidationError as exc:
        assert exc.errors(), body  # names what is wrong
        return
    assert isinstance(body, dict) and "extra" not in body  # unknown fields are refused
    assert model.model_validate_json(req.model_dump_json()) == req


@settings(max_examples=100, deadline=None)
@given(history=st.lists(st.integers(min_value=-10**6, max_value=10**6), max_size=p.MAX_HISTORY),
       k=st.integers(min_value=-5, max_value=p.MAX_K + 5))
def test_whole_numbers_within_bounds_are_accepted_and_others_refused(history, k) -> None:
    if 1 <= k <= p.MAX_K:
        req = p.RecommendRequest(history=history, k=k)
        assert req.history == history and req.k == k
        assert all(type(i) is int for i in req.history)
    else:
        with pytest.raises(ValidationError, match="k"):
            p.RecommendRequest(history=history, k=k)
    with pytest.raises(ValidationError, match="history"):
        p.CandidatesRequest(history=history + [0] * (p.MAX_HISTORY + 1 - len(history)))  # one over the cap


@settings(max_examples=100, deadline=None)
@given(bad=NOT_INTS, where=st.sampled_from(("history", "k", "user_id", "item_id", "n", "recent", "max_tokens")))
def test_no_bool_float_or_string_passes_as_an_id_or_count(bad, where) -> None:
    bodies = {"history": (p.RecommendRequest, {"history": [1, bad]}),
              "k": (p.RecommendRequest, {"user_id": 0, "k": bad}),
              "user_id": (p.RecommendRequest, {"user_id": bad}),
              "item_id": (p.ExplainRequest, {"item_id": bad}),
              "n": (p.CandidatesRequest, {"history": [1], "n": bad}),
              "recent": (p.ParametersRequest, {"recent": [bad]}),
              "max_tokens": (p.ExplainRequest, {"item_id": 1, "max_tokens": bad})}
    model, body = bodies[where]
    if where == "user_id" and bad is None:
        body = {"user_id": None}  # neither source given: refused by the one-source rule instead
    with pytest.raises(ValidationError):
        model.model_validate(body)
