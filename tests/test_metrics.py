from __future__ import annotations

import math

import numpy as np
import pytest

from selfdistill import metrics as M

# ---------------------------------------------------------------------------- pass@k


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_known_values():
    assert M.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert M.pass_at_k(10, 0, 5) == 0.0
    assert M.pass_at_k(10, 10, 1) == 1.0
    assert M.pass_at_k(10, 10, 10) == 1.0
    assert M.pass_at_k(10, 1, 10) == 1.0  # k = n: any correct sample is drawn
    assert M.pass_at_k(10, 8, 3) == 1.0  # n - c < k


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 50])
def test_pass_at_k_matches_combinatorics(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert M.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    # C(2000, 1000) overflows a float; the product form does not.
    assert M.pass_at_k(2000, 1, 1000) == pytest.approx(0.5)
    assert 0.0 < M.pass_at_k(2000, 3, 10) < 1.0


@pytest.mark.parametrize("n,c,k", [(5, 1, 6), (5, 1, 0), (5, 6, 1), (5, -1, 1)])
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ValueError):
        M.pass_at_k(n, c, k)


def test_pass_at_k_per_problem_mixed_n():
    out = M.pass_at_k_per_problem([0, 3, 5, 2], [10, 10, 5, 4], k=1)
    assert out == pytest.approx([0.0, 0.3, 1.0, 0.5])
    out = M.pass_at_k_per_problem(np.array([1, 2]), 4, k=2)
    assert out == pytest.approx([brute_pass_at_k(4, 1, 2), brute_pass_at_k(4, 2, 2)])


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_mean_and_shrinks():
    rng = np.random.default_rng(1)
    small, big = rng.random(30), rng.random(3000)
    m1, lo1, hi1 = M.bootstrap_ci(small, n_boot=2000)
    m2, lo2, hi2 = M.bootstrap_ci(big, n_boot=2000)
    assert lo1 <= m1 <= hi1 and lo2 <= m2 <= hi2
    assert m1 == pytest.approx(small.mean())
    assert (hi2 - lo2) < (hi1 - lo1) / 5  # ~ 1/sqrt(100) of the width
    # The interval is about mean +- 1.96 standard errors.
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * big.std() / math.sqrt(len(big)), rel=0.1)


def test_bootstrap_ci_is_seeded():
    x = np.random.default_rng(2).random(50)
    assert M.bootstrap_ci(x, n_boot=500, seed=3) == M.bootstrap_ci(x, n_boot=500, seed=3)
    assert M.bootstrap_ci([0.5] * 10, n_boot=100) == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------- paired comparison


def test_paired_detects_real_shift():
    rng = np.random.default_rng(4)
    a = rng.random(200)
    b = np.clip(a + 0.05 + 0.05 * rng.standard_normal(200), 0, 1)  # big spread across problems, small shift
    r = M.paired_comparison(a, b, n_boot=2000)
    assert r["p_method"] == "monte_carlo"
    assert r["mean_diff"] == pytest.approx((b - a).mean())
    assert r["ci_lo"] > 0 and r["p_value"] < 0.01
    assert r["wilcoxon_p"] is None or r["wilcoxon_p"] < 0.01


def test_paired_null_is_not_significant():
    rng = np.random.default_rng(5)
    a = rng.random(200)
    b = a + 0.05 * rng.standard_normal(200)
    r = M.paired_comparison(a, b, n_boot=2000)
    assert r["ci_lo"] < 0 < r["ci_hi"] and r["p_value"] > 0.05


def test_sign_flip_exact_small():
    # Three positive differences: of the 8 sign patterns only all-plus and all-minus reach |sum| = 3.
    p, method = M.sign_flip_p_value(np.array([1.0, 1.0, 1.0, 0.0]))
    assert method == "exact" and p == pytest.approx(2 / 8)
    assert M.sign_flip_p_value(np.zeros(5)) == (1.0, "exact")
    r = M.paired_comparison([0, 0, 1], [0, 0, 1])
    assert r["p_value"] == 1.0 and r["ties"] == 3 and r["mean_diff"] == 0.0


def test_paired_rejects_misaligned():
    with pytest.raises(ValueError):
        M.paired_comparison([1, 2, 3], [1, 2])


# ---------------------------------------------------------------------------- split and T selection


def test_split_deterministic_and_stable():
    ids = [f"lc-{i}" for i in range(500)]
    dev, test = M.dev_test_split(ids, 0.3, seed=0)
    assert (dev, test) == M.dev_test_split(ids, 0.3, seed=0)
    assert set(dev).isdisjoint(test) and set(dev) | set(test) == set(ids)
    assert 0.22 < len(dev) / len(ids) < 0.38
    # Order does not matter, and adding problems moves none of the old ones.
    dev_r, _ = M.dev_test_split(ids[::-1], 0.3, seed=0)
    assert set(dev_r) == set(dev)
    dev_more, test_more = M.dev_test_split(ids + [f"new-{i}" for i in range(300)], 0.3, seed=0)
    assert set(dev) <= set(dev_more) and set(test) <= set(test_more)
    # Another seed is another split.
    assert set(M.dev_test_split(ids, 0.3, seed=1)[0]) != set(dev)


def test_select_temperature_uses_dev_only():
    dev, test = ["d1", "d2", "d3"], ["t1", "t2", "t3"]
    scores = {
        1.4: {"d1": 0.5, "d2": 0.5, "d3": 0.5, "t1": 0.3, "t2": 0.3, "t3": 0.3},  # ties 0.6 on dev
        1.0: {"d1": 0.25, "d2": 0.25, "d3": 0.25, "t1": 0.9, "t2": 0.9, "t3": 0.75},  # best on test
        0.6: {"d1": 1.0, "d2": 0.5, "d3": 0.0, "t1": 0.0, "t2": 0.25, "t3": 0.5},  # best on dev
    }
    r = M.select_temperature(scores, dev, test, n_boot=500)
    assert r["best_T"] == 0.6  # ties 1.4 on dev (0.5 each), lower T wins; 1.0 is never chosen
    assert r["dev_score"] == 0.5
    assert r["test_score"] == pytest.approx(0.25)
    assert r["test_ci_lo"] <= r["test_score"] <= r["test_ci_hi"]
    assert r["oracle_T"] == 1.0 and r["oracle_test_score"] == pytest.approx(0.85)
    assert r["dev_by_T"][1.0] == pytest.approx(0.25)
    # Dev alone decides: changing test scores cannot change the pick.
    scores[0.6] = {**scores[0.6], "t1": 0.0, "t2": 0.0, "t3": 0.0}
    assert M.select_temperature(scores, dev, test, n_boot=100)["best_T"] == 0.6


def test_select_temperature_missing_score_is_an_error():
    with pytest.raises(ValueError, match="no score"):
        M.select_temperature({1.0: {"a": 1.0}}, ["a"], ["b"])


# ---------------------------------------------------------------------------- effective temperature


def test_effective_temperature_fit_recovers_quadratic():
    tt, te = np.meshgrid([0.6, 0.9, 1.2, 1.5], [0.5, 0.8, 1.1])
    x = tt * te
    y = 0.1 + 0.8 * x - 0.35 * x**2
    r = M.effective_temperature_fit(tt, te, y)
    assert (r["a"], r["b"], r["c"]) == pytest.approx((0.1, 0.8, -0.35), abs=1e-9)
    assert r["r2"] == pytest.approx(1.0)
    assert r["peak_T_eff"] == pytest.approx(0.8 / 0.7)
    assert r["peak_score"] == pytest.approx(0.1 + 0.8**2 / (4 * 0.35))
    assert r["n"] == 12


def test_effective_temperature_fit_noisy_and_convex():
    rng = np.random.default_rng(6)
    tt, te = rng.uniform(0.5, 1.5, 60), rng.uniform(0.5, 1.5, 60)
    x = tt * te
    y = 0.3 + 0.5 * x - 0.2 * x**2 + 0.02 * rng.standard_normal(60)
    r = M.effective_temperature_fit(tt, te, y)
    assert 0 < r["r2"] < 1 and r["peak_T_eff"] == pytest.approx(1.25, abs=0.3)
    convex = M.effective_temperature_fit([1, 1, 1], [0.5, 1.0, 1.5], [0.5, 0.2, 0.5])
    assert convex["c"] > 0 and convex["peak_T_eff"] is None and convex["peak_score"] is None
    with pytest.raises(ValueError):
        M.effective_temperature_fit([1, 1], [1, 2], [0.1, 0.2])


def test_pass_at_k_small_cases_by_hand():
    # 1 - C(n-c, k) / C(n, k), worked by hand
    assert M.pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # C(2,2)=1 of C(4,2)=6 pairs hold no correct sample
    assert M.pass_at_k(3, 1, 2) == pytest.approx(2 / 3)  # pairs {12, 13, 23}, the correct one is 1: two of three
    assert M.pass_at_k(8, 1, 5) == pytest.approx(35 / 56)  # C(7,5)=21 of C(8,5)=56 miss it
    assert M.pass_at_k(8, 2, 5) == pytest.approx(1 - 6 / 56)  # C(6,5)=6


# ---------------------------------------------------------------------------- Holm


def test_holm_known_values():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06, back in input order
    assert M.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert M.holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])  # two endpoints: the smaller doubled, the larger as is
    assert M.holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])  # the step-down keeps adjusted p monotone
    assert M.holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])
    assert M.holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1
    assert M.holm([0.05]) == [0.05] and M.holm([]) == []
    with pytest.raises(ValueError):
        M.holm([1.5])
