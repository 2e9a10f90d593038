"""Which frames are worth a person's time: the selection strategies behind `label suggest`.

Why two strategies and a switch (documented in docs/labeling.md):

- While few labels exist the model's uncertainty is itself unreliable: the least confident
  frames are outliers and near-duplicates of one confusing pose. ``typical`` (TypiClust,
  Hacohen et al. 2022) clusters the pool into more clusters than there are labels, takes the
  largest clusters that no label covers yet, and from each the most typical frame (densest
  neighbourhood). The picks cover the common poses first.
- Once there are labels to learn from, the model knows where it is unsure: ``margin`` takes
  the frames with the smallest gap between the two most probable classes (a pool ten times
  the budget), clusters those into as many clusters as picks, and takes the least certain
  frame of each cluster, so a burst of one confusing gesture costs one label, not fifty.
- ``random`` is the yardstick the two are measured against (bench/bench_labeling.py).

``auto`` uses ``typical`` below ``FEW_LABELS_PER_CLASS`` labels per class, then ``margin``.

All functions are pure NumPy/scikit-learn over an embedding (standardised keypoint
features of each frame, ``embedding``) and the model's probabilities.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("auto", "typical", "margin", "random")
FEW_LABELS_PER_CLASS = 10
MARGIN_POOL = 10      # margin: cluster the budget x this many least certain frames
NEIGHBOURS = 20       # typicality: neighbours considered
MAX_CLUSTERS = 500    # typical: k-means cost grows with k; as TypiClust caps it


def resolve(strategy: str, labeled: int, n_classes: int) -> str:
    """The strategy ``auto`` stands for with ``labeled`` labels; others are themselves."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy != "auto":
        return strategy
    return "typical" if labeled < FEW_LABELS_PER_CLASS * n_classes else "margin"


def embedding(features: np.ndarray, labeled: np.ndarray | None = None) -> np.ndarray:
    """Features standardised over pool and labeled frames together (so distances weigh
    every feature alike); returns the rows of both, pool first."""
    x = features if labeled is None or not len(labeled) else np.vstack([features, labeled])
    x = np.asarray(x, np.float64)
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (small: the model hesitates)."""
    p = np.sort(np.asarray(probs, np.float64), axis=1)
    return p[:, -1] - p[:, -2] if p.shape[1] > 1 else p[:, -1]


def pick(strategy: str, emb: np.ndarray, probs: np.ndarray, n: int, *,
         labeled_emb: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Indices into the pool (``emb``/``probs`` rows) of ``n`` distinct frames to label, in
    order of priority. ``labeled_emb``: the embedding of frames already labeled (they
    cover their clusters for ``typical``). ``strategy`` must be resolved (not ``auto``)."""
    n = min(int(n), len(emb))
    if n <= 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return rng.choice(len(emb), size=n, replace=False).astype(np.int64)
    if strategy == "typical":
        return _typical(emb, n, labeled_emb, seed)
    if strategy == "margin":
        return _margin_diverse(emb, probs, n, seed)
    raise ValueError(f"strategy {strategy!r} must be resolved first (resolve)")


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster ids of each row (k-means; mini-batch on big pools, as TypiClust does)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = max(1, min(k, len(x)))
    algo = (MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=2048)
            if len(x) > 5000 else KMeans(k, random_state=seed, n_init=3))
    return algo.fit_predict(x)


def typicality(x: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """1 / mean distance to the ``k`` nearest other rows (a density: high is typical)."""
    if len(x) < 2:
        return np.ones(len(x))
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x) - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return 1.0 / (dist[:, 1:].mean(1) + 1e-9)


def _typical(emb: np.ndarray, n: int, labeled_emb: np.ndarray | None,
             seed: int) -> np.ndarray:
    """TypiClust: |labeled| + n clusters (at most ``MAX_CLUSTERS``, at least n) over pool
    and labeled together; the n largest clusters with the fewest labels, the most typical
    unlabeled frame of each."""
    lab = np.zeros((0, emb.shape[1])) if labeled_emb is None else labeled_emb
    x = np.vstack([emb, lab])
    ids = _kmeans(x, max(n, min(len(lab) + n, MAX_CLUSTERS)), seed)
    pool_ids, lab_ids = ids[:len(emb)], ids[len(emb):]
    order = sorted(set(pool_ids.tolist()),
                   key=lambda c: (int(np.sum(lab_ids == c)), -int(np.sum(pool_ids == c)), c))
    picks: list[int] = []
    for c in order:
        members = np.flatnonzero(pool_ids == c)
        picks.append(int(members[np.argmax(typicality(emb[members]))]))
        if len(picks) == n:
            break
    return _fill(picks, n, emb, seed)


def _margin_diverse(emb: np.ndarray, probs: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The least certain ``n * MARGIN_POOL`` frames, in ``n`` clusters, the least certain
    frame of each cluster (clusters taken from the least certain down)."""
    gap = margin(probs)
    unsure = np.argsort(gap, kind="stable")[:n * MARGIN_POOL]
    ids = _kmeans(emb[unsure], n, seed)
    best = {}
    for pos, c in enumerate(ids.tolist()):
        best.setdefault(c, int(unsure[pos]))     # ``unsure`` is sorted: first is least sure
    picks = sorted(best.values(), key=lambda i: gap[i])
    return _fill(picks, n, emb, seed)


def _fill(picks: list[int], n: int, emb: np.ndarray, seed: int) -> np.ndarray:
    """``picks`` topped up to ``n`` (k-means may leave clusters empty) with the frames
    furthest from every pick (k-center greedy), so a top-up adds coverage, not repeats."""
    chosen = list(dict.fromkeys(picks))[:n] or [int(np.random.default_rng(seed)
                                                    .integers(len(emb)))]
    d = np.min([((emb - emb[c]) ** 2).sum(-1) for c in chosen], axis=0)
    d[chosen] = -1.0                      # never twice, even among exact duplicates
    while len(chosen) < n:
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, ((emb - emb[nxt]) ** 2).sum(-1))
        d[chosen] = -1.0
    return np.asarray(chosen, np.int64)
