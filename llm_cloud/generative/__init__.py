"""Generative retrieval over semantic IDs (TIGER, arXiv 2305.05065): tokenizer, tiny causal LM, training examples
and beam search constrained to the trie of valid item codes."""
