"""Dataset statistics for ``tandem data stats``."""

from __future__ import annotations

import numpy as np

from tandem.data.dataset import SequenceDataset
from tandem.data.report import FileReport

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def dataset_stats(ds: SequenceDataset) -> dict:
    """The statistics ``tandem data stats`` prints and writes, including what reading the files noticed
    (``input_files``: lines skipped under ``--on-bad-lines``, a separator detected by ``--sep auto``)."""
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
        **tie_stats(ds),
        "input_files": [report.to_dict() for report in ds.input_files],
    }


def tie_stats(ds: SequenceDataset) -> dict:
    """How much the order of same-timestamp interactions matters for leave-one-out: the share of interactions that
    share their user's timestamp with another one, and the share of users whose test (last) or validation
    (second-to-last) target ties with its predecessor, so that ``--tie-order`` decides which item it is."""
    if ds.times is None:
        return {}
    tied = test = valid = 0
    for t in ds.times:
        same = np.diff(t) == 0  # (len - 1,) position i+1 ties with position i
        counts = np.unique(t, return_counts=True)[1]
        tied += int(counts[counts > 1].sum())
        test += bool(len(t) >= 2 and same[-1])
        valid += bool(len(t) >= 3 and same[-2])
    n = max(1, ds.n_users)
    return {"tied_interactions": tied / max(1, ds.n_interactions), "tied_test_targets": test / n,
            "tied_valid_targets": valid / n}


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
    if "tied_interactions" in stats:
        lines.append(f"same-time     {stats['tied_interactions']:.1%} of interactions share a user's timestamp; "
                     f"test target tied for {stats['tied_test_targets']:.1%} of users, validation "
                     f"{stats['tied_valid_targets']:.1%} (see --tie-order)")
    for report in stats.get("input_files", []):
        lines += FileReport(**report).summary()
    return "\n".join(lines)
