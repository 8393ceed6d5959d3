"""`tandem eval collab`: the end-to-end report of an artifact store on the test split (LSC4Rec, arXiv 2502.08667).

Side by side, all on the same test users and the same LLM candidate lists (top ``n_candidates`` by trie-constrained
beam search, read through the store's candidate cache):
- LLM alone: the LLM's own order;
- SRM alone: the independently trained SASRec ranking the whole catalogue (and, for reference, its own order inside
  the LLM's list, which already uses the LLM as a candidate filter);
- every fusion rule, with that SRM and with the collaboratively trained SRM (generated head parameters applied);
- NDCG@10 against request ratio for every request policy, with the SRM the server uses (``selfeval`` included);
- how well the LLM judges its own lists (``llm_selfeval``: ECE and AUROC, :mod:`eval.selfeval`).
Everything fitted (Platt, α, thresholds) is fitted on validation users, as in :mod:`eval.device`.
"""

from __future__ import annotations

from eval.device import DeviceEvalConfig, evaluate_device
from eval.srm import evaluate_checkpoint
from llm_cloud.paramgen.checkpoint import load_paramgen
from pipelines.candidate_cache import CandidateCache, EngineOptions
from pipelines.thresholds import CachedLLMSource, first_users
from srm_device.training.checkpoint import load_checkpoint, load_srm_with_data
from tandem.artifacts import Store
from tandem.data.split import leave_one_out


def collab_report(store: Store, max_users: int | None = None, progress: bool | None = None) -> dict:
    th = store.read_thresholds()
    base_srm, _, ds = load_srm_with_data(store.srm)
    split = leave_one_out(ds.sequences)
    valid, test = first_users(split.valid, max_users), first_users(split.test, max_users)
    gen, book, _ = load_paramgen(store.paramgen)
    source = CachedLLMSource(EngineOptions().make(store.llm), CandidateCache(store.collab / "candidates"))
    cfg = DeviceEvalConfig(n_candidates=th.n_candidates, staleness=th.staleness, recent_k=th.recent_k,
                           fusion=th.fusion)
    runs = {}
    for name, srm in (("srm", base_srm), ("collab", load_checkpoint(store.collab_srm)[0])):
        runs[name] = evaluate_device(srm, source, valid, test, cfg, gen, book)
    full = evaluate_checkpoint(store.srm, "test").metrics if max_users is None else None
    base, coll = runs["srm"], runs["collab"]
    llm_alone = base["fusion"]["llm"]["ndcg@10"]
    # SRM alone = the SRM ranking the whole catalogue, as in LSC4Rec; with --max-users (no full evaluation) the
    # SRM's own order inside the LLM's list stands in, which is the harder baseline.
    srm_alone = full["ndcg@10"] if full else base["generated"]["ndcg@10"]
    in_list = max(base["generated"]["ndcg@10"], coll["generated"]["ndcg@10"])
    best_rule = max(base["fusion"], key=lambda r: base["fusion"][r]["ndcg@10"])
    best_collab = max(coll["fusion"], key=lambda r: coll["fusion"][r]["ndcg@10"])
    used = runs[th.srm]
    return {
        "n_users": base["meta"]["n_users"], "n_candidates": th.n_candidates, "staleness": th.staleness,
        "llm_alone": base["fusion"]["llm"],
        "srm_alone": {"full_catalogue": full, "in_llm_list_static": base["static"],
                      "in_llm_list_generated": base["generated"]},
        "fusion": base["fusion"], "fusion_collab_srm": coll["fusion"],
        "collab_srm_in_llm_list_generated": coll["generated"],
        "best": {"fusion_rule": best_rule, "fusion_ndcg@10": base["fusion"][best_rule]["ndcg@10"],
                 "collab_rule": best_collab, "collab_ndcg@10": coll["fusion"][best_collab]["ndcg@10"],
                 "ratio_to_better_single": max(base["fusion"][best_rule]["ndcg@10"],
                                               coll["fusion"][best_collab]["ndcg@10"]) / max(llm_alone, srm_alone),
                 "better_single_ndcg@10": max(llm_alone, srm_alone),
                 "ratio_to_srm_reranking_llm_list": max(base["fusion"][best_rule]["ndcg@10"],
                                                         coll["fusion"][best_collab]["ndcg@10"]) / in_list},
        "policies": used["policies"], "policies_srm": th.srm, "llm_selfeval": base["selfeval"],
        "meta": {"srm": base["meta"], "collab": coll["meta"]},
    }
