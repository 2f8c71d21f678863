"""Near-duplicate groups with MinHash LSH (datasketch), verified by exact Jaccard similarity.

Shingles are character 5-grams of the dedupe key with punctuation removed: robust to typos and
small edits in the short texts typical of intent data, where word n-grams would be too coarse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHINGLE = 5
NUM_PERM = 64  # enough precision for thresholds >= 0.5; candidates are verified exactly anyway


_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    text = _SPACE.sub(" ", _PUNCT.sub("", text)).strip()
    if len(text) <= size:
        return {text}
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass(frozen=True)
class NearPair:
    first: int  # index into the keys list, first < second
    second: int
    similarity: float


def near_duplicate_pairs(keys: list[str], threshold: float, seed: int = 1) -> list[NearPair]:
    """All pairs of `keys` whose shingle Jaccard similarity is >= threshold (identical keys too)."""
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(k) for k in keys]
    encoded = [[s.encode("utf-8") for s in sorted(sh)] for sh in sets]
    hashes = MinHash.bulk(encoded, num_perm=NUM_PERM, seed=seed)
    # LSH at a slightly lower threshold: it only proposes candidates; the exact check decides.
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=NUM_PERM)
    pairs: list[NearPair] = []
    for index, minhash in enumerate(hashes):
        for other in lsh.query(minhash):
            similarity = jaccard(sets[index], sets[other])
            if similarity >= threshold:
                pairs.append(NearPair(min(index, other), max(index, other), similarity))
        lsh.insert(index, minhash)
    pairs.sort(key=lambda p: (p.first, p.second))
    return pairs


def group_ids(count: int, pairs: list[NearPair]) -> list[int]:
    """Connected components (union-find): group id = smallest member index of the component."""
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in pairs:
        a, b = find(pair.first), find(pair.second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(count)]
