"""Cas-SEAT (arXiv 2501.05662): cascaded self-evaluation data synthesis, double-level filtering and SFT."""
