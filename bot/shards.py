"""Which guilds a process looks after: Discord's sharding rule and this process's share of the shards.

Discord puts guild `g` on shard `(g >> 22) % shard_count`; a process given `SHARD_IDS` runs only those
shards, so only their guilds' events reach it. Work that spans guilds (closing sessions a crash left open,
retrying cut-off summaries, the retention purge) is scoped the same way: each process does it for its own
shards' guilds, so every guild is handled exactly once however many processes share the database, none
ends a conversation another process is running, and no coordination between processes is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord sends this guild's events to (discord.py's `AutoShardedClient` uses the same rule)."""
    return (guild_id >> 22) % shard_count


def parse_shard_ids(text: str) -> tuple[int, ...]:
    """`"0-3"`, `"4,5"`, `"2"`, or a mix (`"0-1,6"`) → sorted, distinct shard ids; ValueError when malformed."""
    ids: set[int] = set()
    for part in text.replace(" ", "").split(","):
        first, sep, last = part.partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError(f"not a shard range: {part!r}")
        low, high = int(first), int(last) if sep else int(first)
        if high < low:
            raise ValueError(f"range runs backwards: {part!r}")
        ids.update(range(low, high + 1))
    return tuple(sorted(ids))


def format_shard_ids(ids: tuple[int, ...]) -> str:
    """The inverse of `parse_shard_ids`, as short as possible: (0, 1, 2, 5) → "0-2,5"."""
    runs: list[list[int]] = []
    for shard in ids:
        if runs and shard == runs[-1][-1] + 1:
            runs[-1].append(shard)
        else:
            runs.append([shard])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def split_shards(shard_count: int, processes: int) -> list[tuple[int, ...]]:
    """Contiguous shard ranges, as even as possible, one per process: split_shards(5, 2) → [(0, 1, 2), (3, 4)]."""
    if processes < 1:
        raise ValueError(f"cannot split shards over {processes} processes")
    if shard_count < processes:
        raise ValueError(f"{processes} processes need at least {processes} shards, but SHARD_COUNT is {shard_count}: "
                         "raise SHARD_COUNT or start fewer processes")
    base, extra = divmod(shard_count, processes)
    ranges, start = [], 0
    for index in range(processes):
        size = base + (1 if index < extra else 0)
        ranges.append(tuple(range(start, start + size)))
        start += size
    return ranges


@dataclass(frozen=True, slots=True)
class ShardScope:
    """This process's shards: `count` None means Discord chooses and every shard runs here."""

    count: int | None = None
    ids: tuple[int, ...] | None = None  # None: all of 0..count-1

    def __post_init__(self) -> None:
        if self.ids is not None:
            if self.count is None:
                raise ValueError("shard ids need a shard count")
            if not self.ids or any(not 0 <= shard < self.count for shard in self.ids):
                raise ValueError(f"shard ids must be between 0 and {self.count - 1}")

    @property
    def everything(self) -> bool:
        """True when this process runs every shard, so it looks after every guild."""
        return self.count is None or self.ids is None or set(self.ids) == set(range(self.count))

    def owns(self, guild_id: int) -> bool:
        """True when `guild_id`'s events come to this process."""
        return self.everything or shard_of(guild_id, self.count) in self.ids  # type: ignore[arg-type,operator]

    def sql_filter(self, column: str = "guild_id") -> tuple[str, dict[str, Any]]:
        """A portable SQL condition (and its parameters) true exactly for the guilds this process owns."""
        if self.everything:
            return "TRUE", {}
        names = [f"shard_{i}" for i in range(len(self.ids))]  # type: ignore[arg-type]
        condition = f"(({column} >> 22) % :shard_count) IN ({', '.join(':' + n for n in names)})"
        return condition, {"shard_count": self.count, **dict(zip(names, self.ids, strict=True))}  # type: ignore[arg-type]

    def describe(self) -> str:
        """For logs and `doctor`: "all shards", "shards 0-3 of 8"."""
        if self.count is None:
            return "all shards (Discord picks how many)"
        if self.everything:
            return f"all {self.count} shards"
        return f"shards {format_shard_ids(self.ids)} of {self.count}"  # type: ignore[arg-type]


ALL_SHARDS = ShardScope()
