"""Datasets: built-in fetchers, file readers, filters, dense re-indexing and the item catalogue."""
