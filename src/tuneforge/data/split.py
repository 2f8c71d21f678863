"""Seeded, stratified, group-aware train/val/test splits.

Whole groups (near-duplicate clusters) go to one split so no near-copy of a test example is
trained on. Within each label, groups are shuffled with a seed derived from (seed, label) and
dealt to the split furthest below its target count, which gives exact per-label proportions
(within one example) whatever the other labels look like.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

SPLITS = ("train", "val", "test")


def target_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder counts; every split with a non-zero ratio gets at least one if possible."""
    raw = [total * r for r in ratios]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (raw[i] - counts[i], -i), reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    for i, ratio in enumerate(ratios):
        if ratio > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def min_per_stratum(ratios: Sequence[float]) -> int:
    """Fewest examples a label needs so each non-empty split can hold one."""
    return sum(1 for r in ratios if r > 0)


def assign_splits(
    groups: Sequence[int],
    strata: Sequence[str | None],
    ratios: Sequence[float],
    seed: int,
) -> list[int]:
    """Split index (0=train, 1=val, 2=test, ...) for each item.

    groups[i]: the item's group id (items sharing an id land together); strata[i]: its label, or
    None when not stratifying. A group's stratum is that of its first item.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for group, items in members.items():
        by_stratum[str(strata[items[0]])].append(group)

    result = [0] * len(groups)
    for stratum in sorted(by_stratum):
        stratum_groups = sorted(by_stratum[stratum])
        random.Random(f"{seed}:{stratum}").shuffle(stratum_groups)
        size = sum(len(members[g]) for g in stratum_groups)
        targets = target_counts(size, ratios)
        filled = [0] * len(ratios)
        # Largest groups first so they do not overshoot a small split late in the deal.
        stratum_groups.sort(key=lambda g: -len(members[g]))
        for group in stratum_groups:
            # The split with the largest remaining deficit; ties go to the rarer (later) split
            # so val/test fill before train absorbs everything.
            deficits = [(targets[i] - filled[i], i) for i in range(len(ratios)) if ratios[i] > 0]
            _, chosen = max(deficits)
            filled[chosen] += len(members[group])
            for item in members[group]:
                result[item] = chosen
    return result
