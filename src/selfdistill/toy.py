"""The paper's toy simulation (appendix C.4), computed exactly: no sampling, no Monte Carlo.

A 16-token "model" writes a program in five steps: root -> fork -> lock -> lock -> lock -> PASS.
At the root, tokens 0 and 1 start the two (structurally identical) paths and token 2 fails; at
every later state token 0 is correct and every other token fails. So with a decoder q,

    success = (q_root[0] + q_root[1]) * q_fork[0] * q_lock[0] ** 3

The precision-exploration conflict in miniature: locks want a low temperature (kill the
distractor tail), the fork wants a high one (its correct token is not the mode), and one global
temperature must compromise. The SSD student, the teacher tempered at T_train and cut to top-p
during sampling, has its lock tails removed for good, so a high evaluation temperature no longer
hurts the locks and the student can afford the temperature the fork wants.

Every number is a closed-form function of the temperature except at the points where a top-p
support changes size; `best_temperature` finds those breakpoints exactly and maximises each smooth
piece in between, so the reported optima are exact to ~1e-9 in T.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB = 16
N_LOCKS = 3

# Head probabilities of tokens 0..3 as stated in the paper; tokens 4..15 are a geometric tail.
LOCK_HEAD = (0.750, 0.055, 0.050, 0.037)
FORK_HEAD = (0.148, 0.280, 0.140, 0.144)
ROOT_HEAD = (0.200, 0.190, 0.329, 0.126)
LOCK_ENTROPY_BITS = 1.61
FORK_ENTROPY_BITS = 2.81

T_TRAIN = 0.9  # the student's sampling temperature
TOP_P_TRAIN = 0.85  # ... and its sampling truncation
TOP_P_EVAL = 0.80
TOP_P_SWEEP = (0.65, 0.70, 0.75, 0.80, 0.85, 0.90)
# Evaluation temperatures searched. At T -> 0 both models decode the root greedily into its
# failing token 2, so the lower end is immaterial; 4.0 covers every optimum in TOP_P_SWEEP.
T_MIN, T_MAX = 0.05, 4.0

# What the paper reports, kept only to print next to our numbers and to test against.
# Nothing below reads these.
PAPER = {
    "teacher_best_success": 0.0832,
    "teacher_best_T": 0.639,
    "student_best_success": 0.1377,
    "student_best_T": 2.091,
    "student_lock_support": [0.948, 0.052],
    "student_fork_support_size": 5,
    "student_fork_correct_prob": 0.169,
    "sweep_gain_pp_range": [1.4, 5.4],
}


# ----------------------------------------------------------------------------------------------
# distributions


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def with_geometric_tail(head: tuple[float, ...], ratio: float) -> np.ndarray:
    """Head probabilities, then VOCAB - len(head) tokens whose probabilities fall off by `ratio`
    per token and together hold the residual mass 1 - sum(head)."""
    w = ratio ** np.arange(VOCAB - len(head), dtype=np.float64)
    return np.concatenate([np.asarray(head, dtype=np.float64), (1.0 - sum(head)) * w / w.sum()])


def fit_tail_ratio(head: tuple[float, ...], entropy: float) -> float:
    """The tail ratio in (0, 1] whose full 16-token distribution has `entropy` bits. Entropy
    rises monotonically with the ratio (the tail flattens toward uniform), so bisect."""
    lo, hi = 1e-9, 1.0
    h_lo, h_hi = (entropy_bits(with_geometric_tail(head, r)) for r in (lo, hi))
    if not h_lo <= entropy <= h_hi:
        raise ValueError(f"entropy {entropy} bits is outside [{h_lo:.3f}, {h_hi:.3f}] for head {head}")
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if entropy_bits(with_geometric_tail(head, mid)) < entropy else (lo, mid)
    return 0.5 * (lo + hi)


def temper(p: np.ndarray, T: float) -> np.ndarray:
    """p ** (1/T), renormalised: softmax(log p / T). Zero stays zero (a truncated student)."""
    logp = np.full_like(p, -np.inf)
    np.log(p, out=logp, where=p > 0)
    z = logp / T
    z -= z.max()
    q = np.exp(z)
    return q / q.sum()


def top_p_support(p: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the nucleus, vLLM/HF style: sort descending, keep the smallest prefix whose
    cumulative mass reaches the threshold (the token that crosses it is kept). Ties go to the lower
    token id (stable sort); the toy's probabilities have no ties."""
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order])
    # The 1e-12 slack keeps a prefix whose mass equals the threshold up to rounding (0.7999999999).
    k = int(np.searchsorted(cum, threshold - 1e-12)) + 1
    keep = np.zeros(p.shape, dtype=bool)
    keep[order[:k]] = True
    return keep


def top_p(p: np.ndarray, threshold: float) -> np.ndarray:
    q = np.where(top_p_support(p, threshold), p, 0.0)
    return q / q.sum()


def decode(p: np.ndarray, T: float, p_eval: float) -> np.ndarray:
    """The evaluation decoder: temperature first, then top-p (vLLM's order)."""
    return top_p(temper(p, T), p_eval)


# ----------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class Toy:
    root: np.ndarray
    fork: np.ndarray
    lock: np.ndarray

    def states(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.root, self.fork, self.lock

    def map(self, f) -> Toy:
        return Toy(*(f(s) for s in self.states()))


@dataclass(frozen=True)
class ToySpec:
    lock_head: tuple[float, ...] = LOCK_HEAD
    fork_head: tuple[float, ...] = FORK_HEAD
    root_head: tuple[float, ...] = ROOT_HEAD
    lock_entropy: float = LOCK_ENTROPY_BITS
    fork_entropy: float = FORK_ENTROPY_BITS
    # The paper states no root entropy. The root is a branching decision, i.e. a fork, so by
    # default it reuses the fork's fitted tail ratio (None). This choice does not move any
    # headline number: every root-tail ratio up to ~0.89 gives identical results (see
    # root_tail_invariance()), because at the optima the root's top-p nucleus never reaches its
    # tail. Only a nearly flat root tail (ratio >~ 0.89, root entropy >~ 2.78 bits) lets the
    # teacher's second local optimum near T = 0.8 overtake the one at T = 0.64.
    root_tail_ratio: float | None = None
    t_train: float = T_TRAIN
    top_p_train: float = TOP_P_TRAIN


def make_teacher(spec: ToySpec = ToySpec()) -> Toy:
    fork_ratio = fit_tail_ratio(spec.fork_head, spec.fork_entropy)
    root_ratio = fork_ratio if spec.root_tail_ratio is None else spec.root_tail_ratio
    return Toy(
        root=with_geometric_tail(spec.root_head, root_ratio),
        fork=with_geometric_tail(spec.fork_head, fork_ratio),
        lock=with_geometric_tail(spec.lock_head, fit_tail_ratio(spec.lock_head, spec.lock_entropy)),
    )


def make_student(teacher: Toy, t_train: float = T_TRAIN, top_p_train: float = TOP_P_TRAIN) -> Toy:
    """SSD's student in the infinite-data limit: SFT on samples drawn at (t_train, top_p_train)
    converges to exactly that sampling distribution."""
    return teacher.map(lambda p: top_p(temper(p, t_train), top_p_train))


def success(toy: Toy, T: float, p_eval: float = TOP_P_EVAL) -> float:
    r, f, l = (decode(p, T, p_eval) for p in toy.states())
    return float((r[0] + r[1]) * f[0] * l[0] ** N_LOCKS)


def success_curve(toy: Toy, Ts: np.ndarray, p_eval: float = TOP_P_EVAL) -> np.ndarray:
    return np.array([success(toy, float(T), p_eval) for T in Ts])


# ----------------------------------------------------------------------------------------------
# exact best temperature
#
# Tempering keeps each state's token order and only sharpens or flattens it, so the mass of its
# top k tokens falls monotonically as T rises (the power family is ordered by majorization) and
# crosses p_eval at most once. Those crossings cut [T_MIN, T_MAX] into pieces on which every
# nucleus is fixed and success is smooth; at a crossing the top k reach p_eval exactly, so the
# smaller nucleus applies: each piece includes its right end. Optima of this toy sit precisely
# on such right ends (one more token joins a nucleus and success drops), which is why a plain
# grid search reports a T slightly below them.


def _topk_mass(sorted_p: np.ndarray, k: int, T: float) -> float:
    q = temper(sorted_p, T)
    return float(q[:k].sum())


def support_breakpoints(p: np.ndarray, p_eval: float, t_lo: float = T_MIN, t_hi: float = T_MAX) -> list[float]:
    """Temperatures in (t_lo, t_hi) where the top-p nucleus of temper(p, T) changes size."""
    s = np.sort(p[p > 0])[::-1]
    out = []
    for k in range(1, len(s)):
        f = lambda T: _topk_mass(s, k, T) - p_eval  # noqa: E731 - decreasing in T
        if f(t_lo) > 0 > f(t_hi):
            lo, hi = t_lo, t_hi
            for _ in range(100):  # bisect in log T: the crossings span two decades
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
            out.append(hi if f(hi) >= 0 else lo)  # the side where the smaller nucleus holds
    return out


def _piece_success(toy: Toy, masks: tuple[np.ndarray, ...], T: float) -> float:
    """Success with each nucleus frozen to `masks`: the smooth function of one piece."""
    r, f, l = (temper(np.where(m, p, 0.0), T) for p, m in zip(toy.states(), masks))
    return float((r[0] + r[1]) * f[0] * l[0] ** N_LOCKS)


def _golden_max(f, a: float, b: float, tol: float = 1e-10) -> tuple[float, float]:
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    x = 0.5 * (a + b)
    return f(x), x


def best_temperature(
    toy: Toy, p_eval: float = TOP_P_EVAL, t_lo: float = T_MIN, t_hi: float = T_MAX, grid: int = 48
) -> tuple[float, float]:
    """(max success, argmax T) over [t_lo, t_hi], exact: on each fixed-nucleus piece a fine grid
    finds the best bracket and golden-section refines it; each piece's right end is a candidate
    too."""
    cuts = sorted({t for p in toy.states() for t in support_breakpoints(p, p_eval, t_lo, t_hi)})
    edges = [t_lo, *cuts, t_hi]
    best = (-1.0, float("nan"))
    for a, b in zip(edges[:-1], edges[1:]):
        mid = math.sqrt(a * b)
        masks = tuple(top_p_support(temper(p, mid), p_eval) for p in toy.states())
        f = lambda T: _piece_success(toy, masks, T)  # noqa: E731
        ts = np.linspace(a, b, grid)
        vals = [f(t) for t in ts]
        i = int(np.argmax(vals))
        cand = [(vals[-1], b)]  # the right end: attained, see the note above
        if 0 < i < grid - 1:
            cand.append(_golden_max(f, ts[i - 1], ts[i + 1]))
        best = max(best, *cand)
    return best


# ----------------------------------------------------------------------------------------------
# the experiment


def root_tail_invariance(ratios: tuple[float, ...] = (0.3, 0.5, 0.7, 0.85)) -> list[dict]:
    """Headline numbers under other root-tail choices: shows the unstated root entropy is moot."""
    out = []
    for r in ratios:
        teacher = make_teacher(ToySpec(root_tail_ratio=r))
        t_s, t_T = best_temperature(teacher)
        s_s, s_T = best_temperature(make_student(teacher))
        out.append({"root_tail_ratio": r, "root_entropy_bits": entropy_bits(teacher.root),
                    "teacher_best_success": t_s, "teacher_best_T": t_T,
                    "student_best_success": s_s, "student_best_T": s_T})
    return out


def run(spec: ToySpec = ToySpec(), sweep: tuple[float, ...] = TOP_P_SWEEP) -> dict:
    teacher = make_teacher(spec)
    student = make_student(teacher, spec.t_train, spec.top_p_train)
    t_s, t_T = best_temperature(teacher)
    s_s, s_T = best_temperature(student)
    lock_support = student.lock[student.lock > 0]
    top_p_sweep = []
    for p in sweep:
        (tb, tT), (sb, sT) = best_temperature(teacher, p), best_temperature(student, p)
        top_p_sweep.append({"top_p": p, "teacher_best": tb, "teacher_best_T": tT,
                            "student_best": sb, "student_best_T": sT, "gain_pp": 100 * (sb - tb)})
    return {
        "teacher_best_success": t_s,
        "teacher_best_T": t_T,
        "student_best_success": s_s,
        "student_best_T": s_T,
        "student_lock_support": sorted(lock_support.tolist(), reverse=True),
        "student_fork_support_size": int((student.fork > 0).sum()),
        "student_fork_correct_prob": float(student.fork[0]),
        "top_p_sweep": top_p_sweep,
        "tail_ratios": {"lock": fit_tail_ratio(spec.lock_head, spec.lock_entropy),
                        "fork": fit_tail_ratio(spec.fork_head, spec.fork_entropy)},
        "entropy_bits": {k: entropy_bits(v) for k, v in zip(("root", "fork", "lock"), teacher.states())},
        "teacher": {k: v.tolist() for k, v in zip(("root", "fork", "lock"), teacher.states())},
        "student": {k: v.tolist() for k, v in zip(("root", "fork", "lock"), student.states())},
    }


def comparison_rows(res: dict) -> list[tuple[str, str, str]]:
    """(quantity, ours, paper) rows for the printed table."""
    gains = [row["gain_pp"] for row in res["top_p_sweep"]]
    return [
        ("teacher best success", f"{100 * res['teacher_best_success']:.2f}%", f"{100 * PAPER['teacher_best_success']:.2f}%"),
        ("teacher best T", f"{res['teacher_best_T']:.3f}", f"{PAPER['teacher_best_T']:.3f}"),
        ("student best success", f"{100 * res['student_best_success']:.2f}%", f"{100 * PAPER['student_best_success']:.2f}%"),
        ("student best T", f"{res['student_best_T']:.3f}", f"{PAPER['student_best_T']:.3f}"),
        ("student lock support", " / ".join(f"{100 * x:.1f}%" for x in res["student_lock_support"]),
         " / ".join(f"{100 * x:.1f}%" for x in PAPER["student_lock_support"])),
        ("student fork support", f"{res['student_fork_support_size']} tokens, correct {100 * res['student_fork_correct_prob']:.1f}%",
         f"{PAPER['student_fork_support_size']} tokens, correct {100 * PAPER['student_fork_correct_prob']:.1f}%"),
        ("gain over top-p 0.65-0.90", f"+{min(gains):.2f} to +{max(gains):.2f} pp",
         f"+{PAPER['sweep_gain_pp_range'][0]} to +{PAPER['sweep_gain_pp_range'][1]} pp"),
    ]


def print_table(res: dict) -> None:
    rows = comparison_rows(res)
    sweep = [(f"{r['top_p']:.2f}", f"{100 * r['teacher_best']:.2f}% @ {r['teacher_best_T']:.3f}",
              f"{100 * r['student_best']:.2f}% @ {r['student_best_T']:.3f}", f"{r['gain_pp']:+.2f}")
             for r in res["top_p_sweep"]]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"{'quantity':28} {'ours':28} paper")
        for q, o, p in rows:
            print(f"{q:28} {o:28} {p}")
        print(f"\n{'top-p':6} {'teacher best':18} {'student best':18} gain (pp)")
        for row in sweep:
            print(f"{row[0]:6} {row[1]:18} {row[2]:18} {row[3]}")
        return
    console = Console()
    t = Table(title="SSD toy simulation (appendix C.4), exact")
    for col in ("quantity", "ours", "paper"):
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    console.print(t)
    s = Table(title="best over T, per evaluation top-p")
    for col in ("top-p", "teacher best", "student best", "gain (pp)"):
        s.add_column(col)
    for row in sweep:
        s.add_row(*row)
    console.print(s)


def plot(res: dict, path: Path, spec: ToySpec = ToySpec()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher = make_teacher(spec)
    student = make_student(teacher, spec.t_train, spec.top_p_train)
    Ts = np.linspace(0.2, 3.0, 1401)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, toy, color in (("teacher", teacher, "tab:gray"), ("SSD student", student, "tab:blue")):
        key = "teacher" if name == "teacher" else "student"
        ax.plot(Ts, 100 * success_curve(toy, Ts), color=color, label=name)
        ax.plot(res[f"{key}_best_T"], 100 * res[f"{key}_best_success"], "o", color=color)
        ax.annotate(f"{100 * res[f'{key}_best_success']:.2f}% @ T={res[f'{key}_best_T']:.3f}",
                    (res[f"{key}_best_T"], 100 * res[f"{key}_best_success"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=8, color=color)
    ax.set_ylim(0, 100 * res["student_best_success"] * 1.15)  # room for the labels
    ax.set(xlabel="evaluation temperature", ylabel="success (%)",
           title=f"success vs T (eval top-p {TOP_P_EVAL})")
    ax.legend()
    ps = [r["top_p"] for r in res["top_p_sweep"]]
    ax2.plot(ps, [100 * r["teacher_best"] for r in res["top_p_sweep"]], "o-", color="tab:gray", label="teacher")
    ax2.plot(ps, [100 * r["student_best"] for r in res["top_p_sweep"]], "o-", color="tab:blue", label="SSD student")
    ax2.set(xlabel="evaluation top-p", ylabel="best success over T (%)", title="best-T success vs eval top-p")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(out_dir: str | None = None) -> dict:
    res = run()
    res["root_tail_invariance"] = root_tail_invariance()
    res["paper"] = PAPER
    print_table(res)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "toy.json").write_text(json.dumps(res, indent=2))
        plot(res, out / "toy_curves.png")
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else None)
