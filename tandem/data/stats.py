"""Dataset statistics for ``tandem data stats``."""

from __future__ import annotations

import numpy as np

from tandem.data.dataset import SequenceDataset

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def dataset_stats(ds: SequenceDataset) -> dict:
    lengths = np.array([len(s) for s in ds.sequences])
    density = ds.n_interactions / max(1, ds.n_users * ds.n_items)
    return {
        "dataset": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "density": density,
        "seq_len_mean": float(lengths.mean()),
        "seq_len_quantiles": {f"p{int(q * 100)}": float(np.quantile(lengths, q)) for q in QUANTILES},
        "item_text_fields": sorted(ds.catalogue.fields),
    }


def format_stats(stats: dict) -> str:
    lines = [
        f"dataset       {stats['dataset']}",
        f"users         {stats['users']:,}",
        f"items         {stats['items']:,}",
        f"interactions  {stats['interactions']:,}",
        f"density       {stats['density']:.4%}",
        f"seq length    mean {stats['seq_len_mean']:.1f}  "
        + "  ".join(f"{k} {v:g}" for k, v in stats["seq_len_quantiles"].items()),
        f"item text     {', '.join(stats['item_text_fields']) or '(none)'}",
    ]
    return "\n".join(lines)
