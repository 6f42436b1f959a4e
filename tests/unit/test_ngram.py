"""n-gram prompt lookup (the zero-latency backup)."""
import numpy as np

from vllm_ssd.server.speculation.ngram import ngram_drafts


def run(rows, width=3, caps=None):
    length = max(map(len, rows))
    tokens = np.zeros((len(rows), length + 2), dtype=np.int32)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
    lengths = np.array([len(r) for r in rows])
    caps = np.full(len(rows), width) if caps is None else np.array(caps)
    drafts, counts = ngram_drafts(tokens, lengths, caps, width)
    return [d[:c].tolist() for d, c in zip(drafts, counts)]


def test_longest_suffix_match_proposes_what_followed():
    # trailing 3-gram (1, 2, 3) seen at the start, followed by 4, 5, 1
    assert run([[1, 2, 3, 4, 5, 1, 2, 3]]) == [[4, 5, 1]]


def test_most_recent_occurrence_wins():
    assert run([[7, 8, 9, 7, 8, 6, 7, 8]]) == [[6, 7, 8]]


def test_no_match_and_short_rows():
    assert run([[1, 2, 3, 4], [5]]) == [[], []]


def test_proposal_stops_at_the_end_and_at_the_cap():
    assert run([[4, 5, 6, 4, 5]]) == [[6, 4, 5]]
    assert run([[4, 5, 6, 4, 5]], caps=[1]) == [[6]]


def test_rows_are_independent():
    assert run([[1, 2, 1], [3, 3, 3, 9, 3]], width=2) == [[2, 1], [9, 3]]
