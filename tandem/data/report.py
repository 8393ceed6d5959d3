"""What reading one input file noticed, kept on the dataset for ``tandem data stats``: the malformed lines that
``--on-bad-lines skip|warn`` skipped, and the dialect that ``--sep auto`` detected.

:meth:`FileReport.bad_line` is the one place that applies ``--on-bad-lines``: ``error`` raises a one-line
:class:`~tandem.errors.TandemError`, ``skip`` counts the line, ``warn`` counts it and warns.
"""

from __future__ import annotations

import bisect
import warnings
from dataclasses import asdict, dataclass, field

from tandem.errors import TandemError

ON_BAD_LINES = ("error", "skip", "warn")
MAX_REPORTED = 5  # how many skipped line numbers are kept (the smallest)


@dataclass
class FileReport:
    """One input file: its role, the lines skipped as malformed and, under ``--sep auto``, the detected dialect."""

    path: str
    role: str  # "interactions" or "items"
    on_bad_lines: str = "error"
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)  # the first MAX_REPORTED 1-based line numbers
    detected_sep: str | None = None
    detected_quotechar: str | None = None  # None with detected_sep set: read without quoting

    def __post_init__(self) -> None:
        if self.on_bad_lines not in ON_BAD_LINES:
            raise TandemError(f"--on-bad-lines must be one of {', '.join(ON_BAD_LINES)}, got {self.on_bad_lines!r}")

    def bad_line(self, line: int, reason: str, hint: str) -> None:
        """Apply ``--on-bad-lines`` to malformed line ``line`` (1-based): raise, or count it (and warn)."""
        if self.on_bad_lines == "error":
            raise TandemError(f"line {line} of {self.path} {reason}; {hint}")
        self.skipped += 1
        bisect.insort(self.skipped_lines, line)
        del self.skipped_lines[MAX_REPORTED:]
        if self.on_bad_lines == "warn":
            warnings.warn(f"skipped line {line} of {self.path}: {reason}", stacklevel=2)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> list[str]:
        """Lines for ``tandem data stats``: nothing when there is nothing to tell."""
        out = []
        if self.detected_sep is not None:
            quote = f"quote {self.detected_quotechar!r}" if self.detected_quotechar else "no quoting"
            out.append(f"separator     {self.detected_sep!r} and {quote} detected in {self.path} (--sep auto)")
        if self.skipped:
            which = "line" if self.skipped == 1 else "lines" if self.skipped <= MAX_REPORTED else "first lines"
            out.append(f"skipped lines {self.skipped:,} malformed in {self.path} "
                       f"({which} {', '.join(map(str, self.skipped_lines))}); --on-bad-lines {self.on_bad_lines}")
        return out
