"""Which evaluation protocol splits a dataset: leave-one-out (RecBole's, for comparison) or real-time (the device's
setting, :mod:`tandem.data.realtime`). ``SplitOptions`` is stored in checkpoints, so every later stage (parameter
generator, evaluation) splits the data exactly as the SRM it builds on was trained."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tandem.config import add_dataclass_arguments, dataclass_from_args

if TYPE_CHECKING:
    from tandem.data.dataset import SequenceDataset
    from tandem.data.realtime import RealTimeSplit
    from tandem.data.split import LeaveOneOut

PROTOCOLS = ("loo", "realtime")


@dataclass
class SplitOptions:
    protocol: Literal["loo", "realtime"] = field(default="loo", metadata={
        "help": "evaluation protocol: 'loo' (leave-one-out: last item test, one before validation) or 'realtime' "
                "(the cloud trains on each user's cloud part, the device is tested on every later item)"})
    cut: Literal["global-time", "user-fraction"] = field(default="global-time", metadata={
        "help": "real-time cut rule: one time T for all users ('global-time') or the last --rho of each user's "
                "sequence ('user-fraction')"})
    time_fraction: float = field(default=0.8, metadata={
        "help": "global-time: fraction of all interactions before T"})
    rho: float = field(default=0.3, metadata={"help": "user-fraction: share of each user's sequence that is real-time"})
    min_realtime: int = field(default=2, metadata={"help": "user-fraction: at least this many real-time items"})
    nest: int = field(default=0, metadata={
        "help": "apply the cut again to the cloud parts this many times (an older cloud part to train on, with "
                "real-time positions inside the outer cloud part)"})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if not 0 < self.time_fraction < 1:
            raise ValueError(f"--time-fraction must be in (0, 1), got {self.time_fraction}; e.g. 0.8")
        if not 0 < self.rho < 1:
            raise ValueError(f"--rho must be in (0, 1), got {self.rho}; e.g. 0.3")
        if self.min_realtime < 1:
            raise ValueError(f"--min-realtime must be >= 1, got {self.min_realtime}")
        if self.nest < 0:
            raise ValueError(f"--nest must be >= 0, got {self.nest}")

    @property
    def name(self) -> str:
        if self.protocol == "loo":
            return "loo"
        arg = f"time_fraction={self.time_fraction}" if self.cut == "global-time" else f"rho={self.rho}"
        return f"realtime/{self.cut}({arg})" + (f"/nest={self.nest}" if self.nest else "")


def add_split_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    group = parser.add_argument_group("protocol", "how the data is split into training, validation and test")
    add_dataclass_arguments(group, SplitOptions, skip=skip)


def split_options_from_args(ns: argparse.Namespace) -> SplitOptions:
    return dataclass_from_args(SplitOptions, ns)


def split_from_dict(d: dict | None) -> SplitOptions:
    """The options stored in a checkpoint; checkpoints from before the real-time protocol are leave-one-out."""
    return SplitOptions(**(d or {}))


def make_split(ds: SequenceDataset, opts: SplitOptions | None = None) -> LeaveOneOut | RealTimeSplit:
    """Split ``ds`` by ``opts``; both results have ``train``, ``valid`` and ``test`` with the same meaning."""
    opts = opts or SplitOptions()
    opts.validate()
    if opts.protocol == "loo":
        from tandem.data.split import leave_one_out

        return leave_one_out(ds.sequences)
    from tandem.data.realtime import realtime_split

    return realtime_split(ds.sequences, ds.times, opts.cut, opts.time_fraction, opts.rho, opts.min_realtime, opts.nest)
