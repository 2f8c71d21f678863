from tuneforge.data.clean import dedupe_key, drop_exact_duplicates, normalize_text
from tuneforge.data.near_dedup import group_ids, jaccard, near_duplicate_pairs, shingles
from tuneforge.data.records import Example, Location


def ex(text, label, line):
    return Example(
        messages=[{"role": "user", "content": text}, {"role": "assistant", "content": label}],
        where=Location("f.csv", line),
        label=label,
        text=text,
    )


def test_normalize_text():
    assert normalize_text("Cafe\u0301  ok \r\n\r\n\r\n\r\nnext  ") == "Café  ok\n\nnext"
    assert normalize_text("  a \t b\n c ", single_line=True) == "a b c"
    assert dedupe_key("Hello   World") == dedupe_key("hello world")


def test_exact_duplicates_keep_first():
    rows = [ex("Hi there", "a", 1), ex("hi  there", "a", 2), ex("other", "b", 3)]
    result = drop_exact_duplicates(rows)
    assert [e.where.line for e in result.kept] == [1, 3]
    assert [(d.where.line, k.where.line) for d, k in result.duplicates] == [(2, 1)]
    assert result.conflicts == []


def test_conflict_policies():
    rows = [ex("x", "a", 1), ex("x", "a", 2), ex("x", "b", 3), ex("y", "c", 4)]
    dropped = drop_exact_duplicates(rows, "drop")
    assert [e.where.line for e in dropped.kept] == [4]
    assert len(dropped.conflicts) == 1 and len(dropped.conflict_dropped) == 3
    majority = drop_exact_duplicates(rows, "majority")
    assert [e.where.line for e in majority.kept] == [1, 4]
    assert [e.where.line for e in majority.conflict_dropped] == [3]
    keep = drop_exact_duplicates(rows, "keep")
    assert [e.where.line for e in keep.kept] == [1, 3, 4]
    tie = drop_exact_duplicates([ex("z", "a", 1), ex("z", "b", 2)], "majority")
    assert tie.kept == []


def test_near_duplicates_found_and_grouped():
    keys = [
        "where is my card it has not arrived",
        "where is my card, it has not arrived",
        "i want to close my account today",
        "where is my card it has not arrived yet",
        "xyz",
    ]
    pairs = near_duplicate_pairs(keys, threshold=0.8)
    found = {(p.first, p.second) for p in pairs}
    assert (0, 1) in found and (0, 3) in found
    assert all(2 not in pair and 4 not in pair for pair in found)
    for p in pairs:
        assert p.similarity == jaccard(shingles(keys[p.first]), shingles(keys[p.second]))
    assert group_ids(5, pairs) == [0, 0, 2, 0, 4]
