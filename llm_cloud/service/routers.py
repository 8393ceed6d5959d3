"""Thin routes: pydantic at the edge, then one call into :class:`~llm_cloud.service.serving.TandemServing`.

Sync handlers run in the server's thread pool, so a slow LLM call does not block health checks.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from llm_cloud.service.errors import Unavailable, error_payload
from llm_cloud.service.metrics import arrived
from llm_cloud.service.serving import TandemServing
from tandem import protocol as p

ERRORS = {code: {"model": p.ErrorResponse} for code in (400, 401, 404, 413, 422, 500, 503)}
BUSY = {429: {"model": p.ErrorResponse, "description": "a queue is full: retry after the `Retry-After` seconds",
              "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}}}

ops = APIRouter(tags=["operations"])
v1 = APIRouter(prefix="/v1", tags=["v1"], responses=ERRORS)


async def get_serving(request: Request) -> TandemServing:
    serving = getattr(request.app.state, "serving", None)
    if serving is None:
        raise Unavailable(f"the model stack is not ready: {not_ready_reason(request)}")
    return serving


Serving = Annotated[TandemServing, Depends(get_serving)]


def not_ready_reason(request: Request) -> str:
    return getattr(request.app.state, "load_error", None) or "still loading the artifact store"


@ops.get("/healthz", summary="The process is alive")
async def healthz() -> dict:
    return {"status": "ok"}


@ops.get("/readyz", summary="The model stack is loaded", responses={503: {"model": p.ErrorResponse}})
async def readyz(request: Request):
    if getattr(request.app.state, "serving", None) is None:
        reason = f"not ready: {not_ready_reason(request)}"
        return JSONResponse(error_payload(503, reason, "service_unavailable"), status_code=503)
    return {"status": "ready"}


@ops.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type)


def deadline(request: Request, serving: TandemServing) -> float:
    """The request's deadline (``time.monotonic()``), counted from its arrival."""
    return serving.deadline(arrived(request.scope))


@v1.post("/recommend", response_model=p.RecommendResponse, summary="Top-k for a user or a history (LSC4Rec)",
         responses=BUSY)
def recommend(body: p.RecommendRequest, serving: Serving, request: Request) -> p.RecommendResponse:
    """The fused top k: the cloud LLM's candidates reranked by the device SRM. With `reasoning: true`, also a
    reasoning trace for the top item (400 `feature_not_enabled` when the server runs without a reasoning model).
    Past the server's deadline the list is ranked without a fresh LLM list and flagged `degraded`; 429 with
    `Retry-After` when the LLM's queue is full."""
    return serving.recommend(body, deadline(request, serving))


@v1.post("/explain", response_model=p.ExplainResponse, summary="Why a user would enjoy an item (ThinkRec)",
         responses=BUSY)
def explain(body: p.ExplainRequest, serving: Serving, request: Request) -> p.ExplainResponse:
    """The ThinkRec reasoning model's trace for one item and a history, with its yes-probability with and without
    thinking and the adapter its gate chose (arXiv 2505.15091). 400 `feature_not_enabled` without a reasoning model
    (`tandem serve --thinkrec DIR`); 422 for unknown item ids; 503 past the deadline; 429 when its queue is full."""
    return serving.explain(body, deadline(request, serving))


@v1.post("/candidates", response_model=p.CandidatesResponse, summary="The LLM's candidate list for a history",
         responses=BUSY)
def candidates(body: p.CandidatesRequest, serving: Serving, request: Request) -> p.CandidatesResponse:
    """The LLM's top n, micro-batched with other requests; 503 past the server's deadline, 429 with `Retry-After`
    when the LLM's queue is full."""
    return serving.candidates(body, deadline(request, serving))


@v1.post("/parameters", response_model=p.ParametersResponse,
         summary="Generated SRM parameters (head edit, or multi-layer edits)")
def parameters(body: p.ParametersRequest, serving: Serving) -> p.ParametersResponse:
    return serving.parameters(body)


@v1.get("/parameters/codebook", response_model=p.Codebook, summary="The Persona codebook (download once)")
def codebook(serving: Serving, method: str = "duet_head") -> p.Codebook:
    return serving.codebook(method)


@v1.get("/items", response_model=p.ItemSearchResponse, summary="Search the catalogue by title")
def search_items(serving: Serving, q: Annotated[str, Query(min_length=1, max_length=200, description="part of a "
                                                       "title, case-insensitive")],
                 limit: Annotated[int, Query(ge=1, le=p.MAX_SEARCH, description="most items returned")] = 10,
                 ) -> p.ItemSearchResponse:
    return serving.search(q, limit)


@v1.get("/users/{user_id}", response_model=p.User, summary="A known user's history, with titles")
def user(user_id: int, serving: Serving) -> p.User:
    return serving.user(user_id)


@v1.get("/store", response_model=p.StoreInfo, summary="What is built and served: manifest, stages, settings")
def store(serving: Serving) -> p.StoreInfo:
    return serving.store_info()


@v1.get("/items/{item_id}", response_model=p.Item, summary="One catalogue item")
def item(item_id: int, serving: Serving) -> p.Item:
    return serving.item(item_id)
