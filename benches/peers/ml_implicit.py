"""The `implicit` library's ALS on the same train/test split as `lakehouse-bench ml`.

Usage: python ml_implicit.py TRAIN TEST --factors F --iterations N --regularization L
       --alpha A --threads T

TRAIN and TEST are tab-separated `user item weight` files written by the bench. Every
pair gets confidence 1 + A * weight (the same as lakehouse-ml's ALS), passed to implicit
with its own alpha at 1. Prints `PEER <name> <value>` lines: training seconds (best of
three fits, seeds 0-2) and precision@10, recall@10 and NDCG@10 (means of the three fits)
over the test users known in TRAIN, excluding their training items, computed the same
way as lakehouse-ml's `evaluate` (binary relevance; recall over all the user's held-out
items; NDCG against the ideal ranking of min(k, held-out) hits).
"""

import argparse
import os
import time

# implicit asks for a single-threaded BLAS: it parallelises over rows itself.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from implicit.cpu.als import AlternatingLeastSquares  # noqa: E402
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender  # noqa: E402


def read(path):
    data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    return data[:, 0].astype(np.int64), data[:, 1].astype(np.int64), data[:, 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("train")
    p.add_argument("test")
    p.add_argument("--factors", type=int, default=32)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--regularization", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--neighbours", type=int, default=50)
    a = p.parse_args()

    tu, ti, tw = read(a.train)
    su, si, _ = read(a.test)
    users = np.unique(np.concatenate([tu, su]))
    items = np.unique(np.concatenate([ti, si]))
    uix = {u: n for n, u in enumerate(users)}
    iix = {i: n for n, i in enumerate(items)}
    rows = np.array([uix[u] for u in tu])
    cols = np.array([iix[i] for i in ti])
    conf = (1.0 + a.alpha * tw).astype(np.float32)
    user_items = sp.csr_matrix((conf, (rows, cols)), shape=(len(users), len(items)))

    held = {}
    for u, i in zip(su, si):
        held.setdefault(uix[u], set()).add(iix[i])
    known = np.diff(user_items.indptr) > 0
    evaluated = [u for u in sorted(held) if known[u]]

    def metrics(ids):
        p, r, n = [], [], []
        for u, rec in zip(evaluated, ids):
            rel = held[u]
            gains = [1.0 / np.log2(rank + 2) for rank, i in enumerate(rec.tolist()) if i in rel]
            ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(a.k, len(rel))))
            p.append(len(gains) / a.k)
            r.append(len(gains) / len(rel))
            n.append(sum(gains) / ideal if ideal > 0 else 0.0)
        return np.mean(p), np.mean(r), np.mean(n)

    best, precisions, recalls, ndcgs = None, [], [], []
    for seed in range(3):
        m = AlternatingLeastSquares(
            factors=a.factors,
            regularization=a.regularization,
            alpha=1.0,
            iterations=a.iterations,
            num_threads=a.threads,
            random_state=seed,
        )
        start = time.perf_counter()
        m.fit(user_items, show_progress=False)
        took = time.perf_counter() - start
        if best is None or took < best:
            best = took
        ids, _ = m.recommend(
            np.array(evaluated), user_items[evaluated], N=a.k, filter_already_liked_items=True
        )
        p_, r_, n_ = metrics(ids)
        precisions.append(p_)
        recalls.append(r_)
        ndcgs.append(n_)
    precision = float(np.mean(precisions))

    def precision_of(model):
        ids, _ = model.recommend(
            np.array(evaluated), user_items[evaluated], N=a.k, filter_already_liked_items=True
        )
        return float(
            np.mean([len(held[u] & set(r.tolist())) / a.k for u, r in zip(evaluated, ids)])
        )

    # Item-item with the parameters of lakehouse-ml's ItemItem::bm25() and ::cosine(),
    # on unit weights (the bench's weights are 1).
    ones = user_items.copy()
    ones.data[:] = 1.0
    bm25 = BM25Recommender(K=a.neighbours, K1=100, B=0.8, num_threads=a.threads)
    bm25.fit(ones, show_progress=False)
    cosine = CosineRecommender(K=a.neighbours, num_threads=a.threads)
    cosine.fit(ones, show_progress=False)
    print(f"PEER implicit_bm25_precision_at_{a.k} {precision_of(bm25):.6f}")
    print(f"PEER implicit_cosine_precision_at_{a.k} {precision_of(cosine):.6f}")
    print(f"PEER implicit_train_s {best:.6f}")
    print(f"PEER implicit_precision_at_{a.k} {precision:.6f}")
    print(f"PEER implicit_recall_at_{a.k} {float(np.mean(recalls)):.6f}")
    print(f"PEER implicit_ndcg_at_{a.k} {float(np.mean(ndcgs)):.6f}")
    print(f"PEER implicit_users {len(evaluated)}")


if __name__ == "__main__":
    main()
