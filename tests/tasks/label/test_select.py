"""Selection: distinct picks, spread over clusters, covered clusters left for new ones, and
``auto`` switching from typical to margin as labels accumulate."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.label import select

BLOBS = 6


def blobs(per: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Six well-separated clusters in 8-D, and each point's blob."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 20, size=(BLOBS, 8))
    which = np.repeat(np.arange(BLOBS), per)
    return centres[which] + rng.normal(0, 1, size=(len(which), 8)), which


def probs_unsure_in(which: np.ndarray, blob: int, seed: int = 0) -> np.ndarray:
    """Confident everywhere, except blob ``blob`` whose frames are all near coin flips."""
    rng = np.random.default_rng(seed)
    p = np.full((len(which), 4), 0.02)
    p[:, 0] = 0.94 - rng.uniform(0, 0.3, len(which))
    p[which == blob, 0] = 0.45 + rng.uniform(0, 0.02, np.sum(which == blob))
    p[which == blob, 1] = 0.45
    p[:, 1] += 1 - p.sum(1)   # rows sum to 1
    return p


@pytest.mark.parametrize("strategy", ["typical", "margin", "random"])
def test_picks_are_distinct_and_as_many_as_asked(strategy):
    emb, which = blobs()
    picks = select.pick(strategy, emb, probs_unsure_in(which, 2), 12, seed=1)
    assert len(picks) == 12 and len(set(picks.tolist())) == 12
    assert select.pick(strategy, emb[:5], probs_unsure_in(which, 2)[:5], 12).size == 5


def test_margin_spreads_its_picks_over_clusters_where_plain_uncertainty_would_not():
    emb, which = blobs()
    p = probs_unsure_in(which, 2)
    plain = np.argsort(select.margin(p))[:BLOBS]
    assert set(which[plain]) == {2}            # the least certain: one burst of one pose
    picks = select.pick("margin", emb, p, BLOBS, seed=0)
    assert picks[0] in np.flatnonzero(which == 2)          # the least certain still first
    assert len(set(which[picks].tolist())) >= BLOBS - 1    # then one per cluster


def test_typical_covers_the_clusters_no_label_covers_and_picks_dense_points():
    emb, which = blobs()
    labeled = emb[which < 3][::20]               # blobs 0, 1, 2 have labels already
    picks = select.pick("typical", emb, np.full((len(emb), 4), 0.25), 3,
                        labeled_emb=labeled, seed=0)
    assert set(which[picks].tolist()) == {3, 4, 5}
    for i in picks:                              # typical: near its blob's centre
        members = emb[which == which[i]]
        centre = members.mean(0)
        dists = np.linalg.norm(members - centre, axis=1)
        assert np.linalg.norm(emb[i] - centre) <= np.quantile(dists, 0.5)


def test_auto_is_typical_while_few_labels_exist_then_margin():
    k = select.FEW_LABELS_PER_CLASS
    assert select.resolve("auto", 0, 17) == "typical"
    assert select.resolve("auto", k * 17 - 1, 17) == "typical"
    assert select.resolve("auto", k * 17, 17) == "margin"
    assert select.resolve("random", 0, 17) == "random"
    with pytest.raises(ValueError, match="unknown strategy"):
        select.resolve("entropy!", 0, 17)


def test_exact_duplicates_are_never_picked_twice():
    emb = np.zeros((30, 4))
    emb[15:] = 1.0
    picks = select.pick("typical", emb, np.full((30, 2), 0.5), 5, seed=0)
    assert len(set(picks.tolist())) == 5
