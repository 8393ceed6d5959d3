"""Semantic IDs for items: short tuples of codebook tokens that an LLM generates instead of raw item ids.

TIGER (Rajput et al., NeurIPS 2023, arXiv 2305.05065): embed item text, quantise residually into L codebooks of size
C (RQ-KMeans here by default, RQ-VAE optional), and add one trailing level that makes colliding codes unique.
CoFiRec (arXiv 2511.22707): coarse-to-fine levels from category text, then title text, then collaborative (SRM)
item embeddings. Entry point: :func:`llm_cloud.semantic_ids.build.build_semantic_ids`.
"""
