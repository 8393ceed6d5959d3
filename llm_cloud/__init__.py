"""Cloud tier: semantic IDs, the generative recommender and its training, LLM backends (transformers, vLLM), the
hypernetwork that generates device head parameters (``paramgen``), ThinkRec reasoning and the FastAPI service."""
