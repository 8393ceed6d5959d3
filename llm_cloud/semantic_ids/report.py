"""What a semantic-ID build reports: collisions before and after the trailing level, and codebook usage per level.

Usage of a level is (distinct codes used) / C; perplexity is exp(entropy of the code distribution), i.e. the number
of equally used codes that would give the same entropy (C at best, 1 when every item shares one code).
"""

from __future__ import annotations

import numpy as np

from llm_cloud.semantic_ids.disambiguate import collision_stats


def codebook_usage(level_codes: np.ndarray, codebook_size: int) -> dict:
    """Usage numbers of one level's codes (n,) against a codebook of ``codebook_size``."""
    _, counts = np.unique(np.asarray(level_codes), return_counts=True)  # (used,)
    p = counts / counts.sum()  # (used,)
    return {
        "used": int(len(counts)),
        "size": int(codebook_size),
        "usage": float(len(counts) / codebook_size),
        "perplexity": float(np.exp(-(p * np.log(p)).sum())),
    }


def build_report(codes: np.ndarray, full_codes: np.ndarray, codebook_size: int, level_names: list[str]) -> dict:
    """Report for L-level ``codes`` (n, L) and their disambiguated ``full_codes`` (n, L+1) of items 1..N."""
    before = collision_stats(codes)
    after = collision_stats(full_codes)
    trailing = full_codes[:, -1]  # (n,)
    return {
        "n_items": int(len(codes)),
        "levels": [{"level": i + 1, "name": name, **codebook_usage(codes[:, i], codebook_size)}
                   for i, name in enumerate(level_names)],
        "collisions_before": before,
        "collisions_after": after,
        "collision_rate_before": before["collision_rate"],
        "collision_rate_after": after["collision_rate"],
        "max_collision_group": before["max_group"],
        "trailing_level_size": int(trailing.max()) + 1 if len(trailing) else 0,
    }


def format_report(report: dict, config: dict) -> str:
    """A short human-readable summary."""
    levels = config["levels"]
    head = (f"semantic IDs for {config['dataset_name']}: {config['mode']} mode"
            f"{' (' + config['method'] + ')' if config['mode'] == 'rq' else ''}, {levels} levels x "
            f"{config['codebook_size']} codes + 1 trailing level of size {report['trailing_level_size']}, "
            f"{report['n_items']} items")
    lines = [head, f"{'level':<8}{'from':<28}{'used/C':>10}{'usage':>8}{'perplexity':>12}"]
    for lv in report["levels"]:
        lines.append(f"{lv['level']:<8}{lv['name'][:27]:<28}{str(lv['used']) + '/' + str(lv['size']):>10}"
                     f"{lv['usage']:>8.3f}{lv['perplexity']:>12.1f}")
    b = report["collisions_before"]
    lines.append(f"collisions: {report['collision_rate_before']:.2%} before the trailing level "
                 f"({b['n_items'] - b['n_distinct']} items share an earlier item's code, {b['colliding_items']:.2%} "
                 f"of items in a group, largest group {b['max_group']}), {report['collision_rate_after']:.2%} after")
    if "residual_mse" in report:
        mse = report["residual_mse"]
        pca = report.get("pca")
        space = f" (on {pca['dim']} PCA dims keeping {pca['explained_variance']:.0%} of the variance)" if pca else ""
        lines.append(f"mean squared residual{space}: {mse[0]:.4f} before quantising, then "
                     + ", ".join(f"{v:.4f}" for v in mse[1:]) + " after each level")
    lines.append(f"built in {report['build_seconds']:.1f} s (text embedding {report['embed_seconds']:.1f} s)")
    return "\n".join(lines)
