"""Evaluation statistics: pass@k, bootstrap intervals, paired tests, a stable dev/test split, fair
best-temperature selection and the paper's effective-temperature fit (section 3.4).

Everything is per problem: a benchmark score is the mean over problems of a per-problem score
(e.g. pass@1 estimated from n samples), and all resampling is over problems, the unit that was
drawn from a population. numpy only; scipy is used for the Wilcoxon test when it is installed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------
# pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), as the product prod_{i=n-c+1..n} (1 - k/i), which never forms the
    huge binomials."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every size-k subset holds a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_per_problem(
    correct_counts: Sequence[int] | np.ndarray, n: int | Sequence[int] | np.ndarray, k: int
) -> np.ndarray:
    """pass@k for each problem; `n` is one sample count for all or one per problem."""
    cs, ns = np.broadcast_arrays(np.asarray(correct_counts), np.asarray(n))
    out = [pass_at_k(int(ni), int(ci), k) for ci, ni in zip(cs.ravel(), ns.ravel(), strict=True)]
    return np.array(out, dtype=np.float64).reshape(cs.shape)


# ----------------------------------------------------------------------------------------------
# bootstrap

_CHUNK = 2_000_000  # resampled values held in memory at once


def _bootstrap_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of n_boot resamples of x (with replacement), in chunks so big benchmarks fit."""
    m = len(x)
    rows = max(1, _CHUNK // m)
    out = np.empty(n_boot)
    for i in range(0, n_boot, rows):
        j = min(n_boot, i + rows)
        out[i:j] = x[rng.integers(0, m, size=(j - i, m))].mean(axis=1)
    return out


def bootstrap_ci(
    per_problem_scores: Sequence[float] | np.ndarray, n_boot: int = 10_000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean over problems and its percentile-bootstrap 1-alpha interval."""
    x = np.asarray(per_problem_scores, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("need a non-empty 1-D array of per-problem scores")
    means = _bootstrap_means(x, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(lo), float(hi)


# ----------------------------------------------------------------------------------------------
# paired comparison

EXACT_MAX = 16  # sign-flip test enumerates all 2**m flips up to this many non-zero differences


def sign_flip_p_value(diffs: Sequence[float] | np.ndarray, n_perm: int = 10_000, seed: int = 0) -> tuple[float, str]:
    """Two-sided paired permutation test of mean(diffs) == 0. Under the null each problem's
    difference is as likely to have either sign, so flip signs and see how often the mean is at
    least as extreme. Zero differences are unchanged by a flip and drop out. Exact enumeration
    when there are few non-zero differences, otherwise seeded Monte Carlo with the +1 correction
    that keeps the p-value valid (Phipson & Smyth 2010)."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[d != 0]
    m = len(d)
    if m == 0:
        return 1.0, "exact"
    obs = abs(d.sum())
    tol = 1e-9 * np.abs(d).sum()  # float sums of the same multiset differ in the last bits
    if m <= EXACT_MAX:
        signs = 1.0 - 2.0 * ((np.arange(2**m)[:, None] >> np.arange(m)) & 1)  # row j: bits of j
        return float(np.mean(np.abs(signs @ d) >= obs - tol)), "exact"
    rng = np.random.default_rng(seed)
    hits = 0
    rows = max(1, _CHUNK // m)
    for i in range(0, n_perm, rows):
        signs = rng.choice((-1.0, 1.0), size=(min(rows, n_perm - i), m))
        hits += int(np.sum(np.abs(signs @ d) >= obs - tol))
    return (hits + 1) / (n_perm + 1), "monte_carlo"


def _wilcoxon_p(d: np.ndarray) -> float | None:
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return None
    if not np.any(d != 0):
        return 1.0  # scipy refuses all-zero differences; there is no evidence of a shift
    return float(wilcoxon(d).pvalue)


def paired_comparison(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    n_boot: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Compare two systems on the same problems (arrays aligned by problem). Reports b - a: the
    mean difference, its bootstrap CI (problems resampled jointly, which keeps the pairing and so
    the much smaller paired variance), a sign-flip permutation p-value and, with scipy, the
    Wilcoxon signed-rank p-value."""
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two aligned non-empty 1-D arrays, got shapes {a.shape} and {b.shape}")
    d = b - a
    mean_diff, lo, hi = bootstrap_ci(d, n_boot=n_boot, alpha=alpha, seed=seed)
    p, method = sign_flip_p_value(d, n_perm=n_boot, seed=seed)
    return {
        "n_problems": len(d),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "mean_diff": mean_diff,
        "ci_lo": lo,
        "ci_hi": hi,
        "alpha": alpha,
        "p_value": p,
        "p_method": method,
        "wilcoxon_p": _wilcoxon_p(d),
        "wins": int(np.sum(d > 0)),  # problems where b beats a
        "losses": int(np.sum(d < 0)),
        "ties": int(np.sum(d == 0)),
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (in their order): the i-th smallest of m becomes
    max over j <= i of min(1, (m - j + 1) * p_(j)). Rejecting where the adjusted p < alpha keeps the chance
    of any false rejection in the family below alpha, whatever the dependence between the tests."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)):
        raise ValueError(f"need a 1-D sequence of p-values in [0, 1], got {p_values!r}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted.tolist()


# ----------------------------------------------------------------------------------------------
# dev/test split and fair temperature selection


def _unit_hash(seed: int, pid: Hashable) -> float:
    """A uniform number in [0, 1) fixed by (seed, str(id)): independent of any other id."""
    h = hashlib.sha256(f"{seed}:{pid}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def dev_test_split(problem_ids: Iterable[Hashable], dev_fraction: float = 0.3, seed: int = 0) -> tuple[list, list]:
    """Split ids into (dev, test), each in input order. An id goes to dev when the hash of
    (seed, id) falls below dev_fraction, so its side never depends on the other ids or their
    order, and adding problems never moves existing ones. The price: the dev share is
    dev_fraction only in expectation. Ids are compared by str(), so 7 and "7" are the same."""
    if not 0.0 <= dev_fraction <= 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1], got {dev_fraction}")
    dev, test = [], []
    for pid in problem_ids:
        (dev if _unit_hash(seed, pid) < dev_fraction else test).append(pid)
    return dev, test


def _mean_over(scores: Mapping[Hashable, float], ids: Sequence[Hashable], T: float) -> np.ndarray:
    missing = [i for i in ids if i not in scores]
    if missing:
        raise ValueError(f"T={T}: no score for {len(missing)} problem(s), e.g. {missing[:3]}")
    return np.array([scores[i] for i in ids], dtype=np.float64)


def best_on_dev(scores_by_T: Mapping[float, Mapping[Hashable, float]], dev_ids: Sequence[Hashable]) -> float:
    """The temperature select_temperature will pick: the best mean on dev, ties -> lower T."""
    return _argmax_lowest({T: float(_mean_over(s, dev_ids, T).mean()) for T, s in scores_by_T.items()})


def _argmax_lowest(mean_by_T: Mapping[float, float]) -> float:
    """The T with the best mean; means equal up to float rounding tie, and the lowest T wins."""
    top = max(mean_by_T.values())
    return min(T for T, v in mean_by_T.items() if v >= top - 1e-12)


def select_temperature(
    scores_by_T: Mapping[float, Mapping[Hashable, float]],
    dev_ids: Sequence[Hashable],
    test_ids: Sequence[Hashable],
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict:
    """The fair best-temperature baseline: pick T by its mean on dev (ties -> lower T), then report
    that T's test score with a bootstrap CI. Picking T on the test set itself is also reported
    (oracle_*), only to show how much that would inflate the baseline. Temperatures decoded on dev
    only (the two-phase eval protocol) have no test score; the oracle then is None."""
    if not scores_by_T or not dev_ids or not test_ids:
        raise ValueError("need at least one temperature and non-empty dev and test sets")
    Ts = sorted(scores_by_T)
    dev = {T: float(_mean_over(scores_by_T[T], dev_ids, T).mean()) for T in Ts}
    test = {
        T: float(_mean_over(scores_by_T[T], test_ids, T).mean())
        for T in Ts
        if all(i in scores_by_T[T] for i in test_ids)
    }
    best = _argmax_lowest(dev)
    mean, lo, hi = bootstrap_ci(_mean_over(scores_by_T[best], test_ids, best), n_boot=n_boot, seed=seed)
    oracle = _argmax_lowest(test) if len(test) == len(Ts) else None
    return {
        "best_T": best,
        "dev_score": dev[best],
        "test_score": mean,
        "test_ci_lo": lo,
        "test_ci_hi": hi,
        "dev_by_T": dev,
        "test_by_T": test,
        "oracle_T": oracle,  # chosen on test: optimistic, for reference only
        "oracle_test_score": None if oracle is None else test[oracle],
        "n_dev": len(dev_ids),
        "n_test": len(test_ids),
    }


# ----------------------------------------------------------------------------------------------
# effective temperature (paper section 3.4)


def effective_temperature_fit(
    t_train: Sequence[float] | np.ndarray, t_eval: Sequence[float] | np.ndarray, score: Sequence[float] | np.ndarray
) -> dict:
    """Least-squares fit score = a + b*T_eff + c*T_eff^2 with T_eff = T_train * T_eval: if SSD's
    effect were just a temperature shift, scores across (T_train, T_eval) would collapse onto one
    curve of their product. Returns the coefficients, R^2 and, when the parabola opens downward,
    the peak T_eff and its predicted score (the paper finds R^2 = 0.75, peak near T_eff = 1.2)."""
    tt, te, y = (np.asarray(v, dtype=np.float64).ravel() for v in (t_train, t_eval, score))
    if not len(tt) == len(te) == len(y):
        raise ValueError(f"t_train, t_eval and score differ in length: {len(tt)}, {len(te)}, {len(y)}")
    x = tt * te
    if len(np.unique(x)) < 3:
        raise ValueError("a quadratic needs at least 3 distinct T_eff values")
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    (a, b, c), *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ np.array([a, b, c])
    ss_res, ss_tot = float(resid @ resid), float(((y - y.mean()) ** 2).sum())
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:  # constant scores: a perfect fit explains everything there is, anything else is undefined
        r2 = 1.0 if ss_res < 1e-24 else float("nan")
    peak = -b / (2 * c) if c < 0 else None
    return {
        "a": float(a),
        "b": float(b),
        "c": float(c),
        "r2": float(r2),
        "peak_T_eff": None if peak is None else float(peak),
        "peak_score": None if peak is None else float(a + b * peak + c * peak * peak),
        "n": len(y),
    }
