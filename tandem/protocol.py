"""The HTTP protocol between devices (and thin clients) and the cloud: pydantic request and response models.

The service (:mod:`llm_cloud.service`) and the device client (:mod:`srm_device.client`) both import these models, so
the wire format is defined once. Limits live here too, so a request that breaks one is refused with the same message
on both sides. Item ids are Tandem's dense ids (1..N); ``GET /v1/items/{id}`` maps them to titles and raw ids.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

MAX_HISTORY = 200  # items per request; longer histories are refused (the models read at most 50)
MAX_K = 100  # items per recommendation / candidate list
MAX_BODY_BYTES = 64 * 1024  # request bodies above this are refused with 413
MAX_SEARCH = 50  # items per catalogue search
ITEM_ID_BYTES, SCORE_BYTES = 4, 4  # a device's binary wire format: int32 item id, float32 score


def request_bytes(history_len: int, max_len: int) -> int:
    """Bytes a device sends up to ask for a candidate list: the ids of its newest ``max_len`` items."""
    return ITEM_ID_BYTES * min(history_len, max_len)


def list_bytes(n: int) -> int:
    """Bytes of a candidate list coming down: an id and an LLM score per item."""
    return (ITEM_ID_BYTES + SCORE_BYTES) * n


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


History = list[StrictInt]  # ids are whole numbers: true or 3.0 is refused, not coerced


class RecommendRequest(_Strict):
    """Either a known user (their training history is looked up) or an explicit history, oldest item first."""

    user_id: StrictInt | None = Field(None, ge=0, description="dense user index of the served dataset (0-based)")
    history: History | None = Field(None, max_length=MAX_HISTORY, description="item ids, oldest first")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="how many items to return")
    reasoning: bool = Field(False, description="also return a reasoning trace for the top item (needs a reasoning "
                            "model: the server runs with `tandem serve --thinkrec DIR`; 400 feature_not_enabled "
                            "otherwise)")
    candidates: bool = Field(False, description="also return the whole candidate list that was ranked, in the LLM's "
                             "order, with every item's scores (what the web page shows side by side)")

    @model_validator(mode="after")
    def _one_source(self) -> RecommendRequest:
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id and history")
        return self


class Decision(BaseModel):
    policy: str = Field(description="the request policy that decided")
    requested: bool = Field(description="whether fresh LLM candidates were generated for this request")
    score: float | None = Field(None, description="the policy's score (higher = more reason to ask the LLM)")
    threshold: float | None = Field(None, description="the calibrated threshold the score was compared with")
    cache_hit: bool = Field(False, description="the candidate list came from the server's cache")
    degraded: bool = Field(False, description="the LLM could not be used; ranked with what was available")
    cold_start: bool = Field(False, description="empty history: popularity candidates")


class RecommendedItem(BaseModel):
    item_id: int
    title: str
    score: float = Field(description="fused score (higher is better)")
    llm_score: float | None = Field(description="sequence log-probability of the item under the LLM")
    srm_score: float = Field(description="the device SRM's logit for the item")


class CandidateItem(RecommendedItem):
    static_srm_score: float = Field(description="the SRM's logit without the generated parameters, to show how they "
                                    "change the order")


class WireBytes(BaseModel):
    """What a device would exchange with the cloud for this step, in the binary wire format (int32 ids, float32
    scores; Persona updates as a prototype id and float16 coefficients)."""

    up: int = Field(description="history ids sent with a list request (0 when the cached list was kept)")
    down: int = Field(description="the candidate list received (0 when the cached list was kept)")
    parameters: int = Field(description="one Persona parameter update (prototype id + coefficients)")


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    fusion: str
    decision: Decision
    candidates: list[CandidateItem] | None = Field(
        None, description="with `candidates: true`: the ranked list in the LLM's order (None when the SRM ranked the "
        "whole catalogue because no list could be had)")
    wire_bytes: WireBytes | None = None
    notes: list[str] = Field(default_factory=list, description="why the answer is degraded, when it is")
    reasoning: str | None = Field(None, description="with `reasoning: true`: `<top item's title>: <trace>`, the "
                                  "ThinkRec model's reasoning on why the user would enjoy the top item")
    timings_ms: dict[str, float] = Field(description="per stage: parameters, srm, policy, llm, fusion, total (and "
                                         "reasoning when asked for)")


class ExplainRequest(_Strict):
    """Why would the user of ``history`` enjoy ``item_id``? Answered by the ThinkRec reasoning model."""

    history: History = Field(default_factory=list, max_length=MAX_HISTORY,
                             description="item ids, oldest first (may be empty)")
    item_id: StrictInt = Field(ge=1, description="the item to explain (dense id)")
    max_tokens: StrictInt = Field(96, ge=8, le=256, description="longest reasoning trace, in tokens")


class ExplainResponse(BaseModel):
    item_id: int
    title: str
    trace: str = Field(description="the model's reasoning about the item for this user")
    p_yes: float = Field(description="probability that the user enjoys the item, read after the reasoning trace")
    p_yes_direct: float = Field(description="the same probability without thinking (bare prompt)")
    adapter: str = Field(description="the LoRA adapter that answered: general, a user group's (g0, g1, ...) or a "
                         "mixture of the group adapters (mix_...)")
    route: Literal["group", "general", "mix"] | None = Field(
        None, description="how the gate over user groups routed this user; None when the model has no experts")
    timings_ms: dict[str, float] = Field(description="per stage: gate, think, score, total")


class CandidatesRequest(_Strict):
    history: History = Field(max_length=MAX_HISTORY, description="item ids, oldest first")
    n: StrictInt = Field(100, ge=1, le=MAX_K, description="list length")


class CandidatesResponse(BaseModel):
    items: list[int] = Field(description="best first; no duplicates, only real items")
    scores: list[float] = Field(description="sequence log-probabilities, aligned with items")
    cold_start: bool = False
    cache_hit: bool = False


DEVICE_METHODS = ("duet_head", "duet")


class ParametersRequest(_Strict):
    recent: History = Field(max_length=MAX_HISTORY, description="the device's most recent items, oldest first")
    method: Literal["duet_head", "duet"] = Field(
        "duet_head", description="which generated parameters: duet_head (a low-rank edit of the SRM head) or duet "
        "(low-rank edits of the last transformer block and the head; needs a store with a duet/ generator)")
    encoding: Literal["prototype", "flat"] = Field(
        "prototype", description="prototype: a Persona prototype id plus edit coefficients (the device holds the "
        "codebook from GET /v1/parameters/codebook); flat: the whole generated head")


class ParametersResponse(BaseModel):
    method: Literal["duet_head", "duet"] = "duet_head"
    n_params: int | None = None
    encoding: Literal["prototype", "flat"]
    prototype: int | None = None
    coefs: list[float] | None = None
    flat: list[float] | None = None
    hidden_size: int
    rank: int


class Codebook(BaseModel):
    prototypes: list[list[float]]  # (P, p)
    basis: list[list[float]]  # (p, m)


class Item(BaseModel):
    item_id: int
    raw_id: str
    title: str
    text: dict[str, str] = Field(default_factory=dict)


class ItemSummary(BaseModel):
    item_id: int
    title: str


class ItemSearchResponse(BaseModel):
    items: list[ItemSummary] = Field(description="matching items, best match first (title prefix, then word prefix, "
                                     "then substring; ties by id)")
    total: int = Field(description="how many items match in all")


class User(BaseModel):
    user_id: int
    history: list[ItemSummary] = Field(description="what `user_id` recommends from, oldest first")
    next_item: ItemSummary | None = Field(None, description="the item the user chose next (held out of the history)")


class StoreInfo(BaseModel):
    """What the service runs: the store's manifest (stages, versions, measured summaries) and the loaded parts."""

    root: str
    dataset: str | None = None
    n_users: int
    n_items: int
    fusion: str
    policy: str
    request_ratio: float
    n_candidates: int
    staleness: int
    max_history: int = Field(MAX_HISTORY, description="longest history a request may send (send the newest items)")
    max_k: int = Field(MAX_K, description="most items per recommendation")
    device_methods: list[str] = Field(description="generated-parameter methods this store serves")
    reasoning: bool = Field(description="a ThinkRec reasoning model is loaded (POST /v1/explain works)")
    stages: dict[str, dict] = Field(default_factory=dict, description="per built stage: hash, seconds, finished_at, "
                                    "summary")
    versions: dict[str, str] = Field(default_factory=dict)
    total_seconds: float | None = None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """The one error shape of every 4xx/5xx answer."""

    error: ErrorBody
