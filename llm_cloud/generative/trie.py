"""The trie of valid item codes: which token may follow a partial code (TIGER, arXiv 2305.05065).

Beam search asks :meth:`CodeTrie.allowed` at every step, so only prefixes of real item codes survive and every
complete code names exactly one item.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class CodeTrie:
    """Prefix -> allowed next token ids, for a table of item token ids (N+1, L+1) whose row 0 is padding."""

    def __init__(self, item_tokens: np.ndarray, dead_end: int) -> None:
        """``dead_end``: the token offered after a prefix that is not in the trie (beam search always needs one)."""
        self.width = item_tokens.shape[1]
        self.dead_end = [int(dead_end)]
        children: dict[tuple[int, ...], set[int]] = defaultdict(set)
        for row in item_tokens[1:]:
            path = tuple(int(t) for t in row)
            for depth in range(self.width):
                children[path[:depth]].add(path[depth])
        self._children = {k: sorted(v) for k, v in children.items()}

    def allowed(self, prefix: tuple[int, ...]) -> list[int]:
        """Token ids that extend ``prefix`` towards a valid item; ``[dead_end]`` when ``prefix`` leads nowhere."""
        return self._children.get(prefix, self.dead_end)

    def __contains__(self, prefix: tuple[int, ...]) -> bool:
        return prefix in self._children
