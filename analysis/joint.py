"""A joint scaling law E(N, S, U) over model size, samples seen and unique data.

Where ``analysis.fit`` fits error against compute on the lower envelope (how good the best run
at a compute is), this fits every run with a law of the three things a grid point chooses:

* ``N``, the model size: forward GMACs per image-text pair (``n_kind="gmacs"``, the default)
  or parameters in millions (``"params"``, from ``core/reference/arch_info.csv``). GMACs fit
  the paper's runs better (leave-one-out error: see README, "Planning"); ViT-B/32 and B/16 have
  the same parameters (151 M vs 150 M) but B/16 is 2.8x the compute and 4-7 points better.
* ``S``, pairs seen, in billions;
* ``U``, unique pairs in the dataset, in billions (``core.cost.unique_pairs`` of the data label).

Repeated data (Muennighoff et al. 2023, "Scaling data-constrained language models", eq. 5):
with ``R = max(S / U - 1, 0)`` repetitions beyond the first epoch, the effective samples seen
are ::

    S_eff = min(S, U) + U * R_star * (1 - exp(-R / R_star))

The first epoch counts fully; each further epoch is worth less, the value of the k-th
repetition decaying like exp(-k / R_star), so that ``S_eff`` never exceeds
``U * (1 + R_star)`` however long one trains. ``R_star`` (repetitions after which repeated data
has lost 1 - 1/e of its value) is fitted. With ``S <= U`` (one epoch or less), ``S_eff = S``.

Laws (``FORMS``; the linear coefficients are >= 0):

``chinchilla``
    E = E_inf + A N^-alpha + B S_eff^-beta (Hoffmann et al. 2022, with S_eff for S).
``product``
    E = E_inf + A N^-alpha S_eff^-beta: the paper's E = A C^alpha split into its two factors.
``capacity``
    E = E_inf + (A N^-alpha + D U^-delta) S_eff^-beta: a floor on the model term set by the
    unique data, both shrinking with data seen.
``floor`` (``DEFAULT_FORM``)
    E = E_inf + A N^-alpha S_eff^-beta + D U^-delta: the paper's runs are close to a product
    of N and S (at fixed data, larger models gain the same *relative* amount from more samples:
    a sum, Chinchilla's form, makes the gain shrink with N), and small data sets add an error
    that neither size nor samples remove (on LAION-80M ViT-L/14 gains less over B/32 than on
    LAION-400M and 2B: ``core/reference/zeroshot_results.csv``). Chosen by leave-one-out error,
    the criterion that does not look at the held-out models: lowest of the four on ImageNet,
    VTAB+, MS-COCO and Flickr30K; on ImageNet robustness ``chinchilla``'s is lower (README,
    "Planning").
``<form>_rho``
    the same with R_star N^-rho for R_star (larger models use up repeated data sooner, as the
    paper's ViT-L/14 on LAION-400M suggests); not better enough on ImageNet to pay for its
    parameter (measured: ``joint_loo.csv`` and ``joint_holdout.csv`` of
    ``python -m analysis --source paper``; README, "Planning").

Fit (Hoffmann et al.'s approach 3, with Besiroglu et al. 2024's corrections): the Huber loss
(delta = 1e-3) of log predicted - log measured error, **summed** over runs, minimised with
L-BFGS-B over (log E_inf, log A, ..., exponents, log R_star). Starts come from variable
projection (``starts="varpro"``): for fixed exponents and R_star every law is linear in its
coefficients, so on a grid of exponents and R_star the coefficients are solved exactly by
non-negative least squares of the relative error (weights 1/E, which is the log error to first
order), and the best grid nodes start L-BFGS on the Huber loss. ``starts="grid"`` is
Hoffmann's own grid of starting values instead; on the paper's runs both reach the same
minimum and variable projection takes a fraction of the time (README). Each fit records its
convergence (L-BFGS-B's flag, the largest gradient component) and how many starts reached the
best loss; parameters are kept unrounded (``joint_fit.csv``).

Intervals: a percentile bootstrap over runs (resampled with replacement, the whole fit re-run
on each resample) for every parameter and every derived quantity (held-out predictions, the
compute-optimal allocation of ``analysis.design``); a prediction interval adds to each
bootstrap prediction a log residual of the fit drawn at random.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd
from scipy import optimize

from analysis import extend
from analysis.fit import GROUP_KEYS
from core import cost
from core.reference import ARCH_INFO_CSV

try:  # scikit-learn's dependency (clip_benchmark needs it), so present wherever evaluation is
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

HUBER_DELTA = 1e-3
LEVEL = 0.95
DEFAULT_FORM = "floor"
ALLOCATION_FORM = "chinchilla"
"""The form ``python -m analysis optimal`` allocates a budget with. Where N and S enter as one
product N^-alpha S^-beta (``product``, ``floor``, ``capacity``), the error at a fixed compute
C ~ N S goes as N^(beta - alpha): monotone in N, so the "optimum" is always an end of the
searched range (on the paper's runs alpha > beta: always the largest model). A sum of an N and
an S term (``chinchilla``) has an interior optimum; ``DEFAULT_FORM`` stays the one that
predicts held-out runs best."""
N_KINDS = ("gmacs", "params")
JOINT_METRICS = ("acc1", "image_retrieval_recall@5", "mean_average_precision")
"""Metrics the joint law is fitted to (per target: top-1 error, or image retrieval 1 - R@5)."""
MIN_RUNS = 8
JOINT_BOOT = 50
"""Bootstrap resamples of the report's joint laws (each a whole refit)."""
SCALE = {"S": 1e9, "U": 1e9}
"""Units of the fit: S and U in billions of pairs, N in GMACs (or millions of parameters)."""

Term = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Form:
    """A law: a sum of non-negative coefficients times products of powers of N, S_eff, U."""

    name: str
    coefs: tuple[str, ...]
    terms: tuple[Term, ...]
    """Per coefficient, its (exponent, variable) factors; () is the constant E_inf."""
    formula: str
    rho: bool = False
    """R_star scales with model size, R_star * N^-rho: larger models use up repeats sooner."""

    @property
    def exponents(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for term in self.terms for e, _ in term))

    @property
    def params(self) -> tuple[str, ...]:
        return (*self.coefs, *self.exponents, "R_star", *(("rho",) if self.rho else ()))


FORMS = {
    "chinchilla": Form("chinchilla", ("E_inf", "A", "B"),
                       ((), (("alpha", "N"),), (("beta", "S"),)),
                       "E = E_inf + A N^-alpha + B S_eff^-beta"),
    "product": Form("product", ("E_inf", "A"), ((), (("alpha", "N"), ("beta", "S"))),
                    "E = E_inf + A N^-alpha S_eff^-beta"),
    "capacity": Form("capacity", ("E_inf", "A", "D"),
                     ((), (("alpha", "N"), ("beta", "S")), (("delta", "U"), ("beta", "S"))),
                     "E = E_inf + (A N^-alpha + D U^-delta) S_eff^-beta"),
    "floor": Form("floor", ("E_inf", "A", "D"),
                  ((), (("alpha", "N"), ("beta", "S")), (("delta", "U"),)),
                  "E = E_inf + A N^-alpha S_eff^-beta + D U^-delta"),
}  # fmt: skip
for _name in list(FORMS):
    _f = FORMS[_name]
    FORMS[_name + "_rho"] = Form(_name + "_rho", _f.coefs, _f.terms,
                                 _f.formula + ", R_star N^-rho", rho=True)  # fmt: skip

EXPONENT_BOUNDS = (1e-3, 5.0)
LOG_R_BOUNDS = (math.log(0.05), math.log(1e4))
LOG_COEF_BOUNDS = (-60.0, 60.0)
EXPONENT_GRID = np.geomspace(0.03, 2.0, 11)
RHO_BOUNDS = (-2.0, 2.0)
RHO_GRID = np.array([-0.5, 0.0, 0.5, 1.0])
LOG_R_GRID = np.log([0.25, 1, 2, 4, 8, 16, 32, 64, 256])


def seff(S: np.ndarray, U: np.ndarray, r_star: float) -> np.ndarray:
    """Effective samples seen (module docstring): ``S`` pairs seen of ``U`` unique ones."""
    S, U = np.asarray(S, float), np.asarray(U, float)
    reps = np.maximum(S / U - 1.0, 0.0)
    return np.minimum(S, U) + U * r_star * -np.expm1(-reps / r_star)


@dataclass(frozen=True)
class Data:
    """The runs of one fit: log N, S and U (fit units), and the measured errors."""

    lN: np.ndarray
    S: np.ndarray
    U: np.ndarray
    E: np.ndarray

    @classmethod
    def of(cls, N, S, U, E=None) -> Data:
        n = np.atleast_1d(np.asarray(N, float))
        e = np.full(n.shape, np.nan) if E is None else np.atleast_1d(np.asarray(E, float))
        return cls(np.log(n), np.atleast_1d(np.asarray(S, float)) / SCALE["S"],
                   np.atleast_1d(np.asarray(U, float)) / SCALE["U"], e)  # fmt: skip

    def take(self, idx) -> Data:
        return Data(self.lN[idx], self.S[idx], self.U[idx], self.E[idx])

    @property
    def repeats(self) -> bool:
        """Does any run see its data more than once (else R_star is not identified)?"""
        return bool(np.any(self.S > self.U * (1 + 1e-9)))


VARIABLES = ("N", "S", "U")


@cache
def _incidence(form: Form) -> np.ndarray:
    """(terms, exponents, variables) one-hot: term k has exponent j on variable v."""
    inc = np.zeros((len(form.terms), len(form.exponents), len(VARIABLES)))
    for k, term in enumerate(form.terms):
        for e, v in term:
            inc[k, form.exponents.index(e), VARIABLES.index(v)] = 1.0
    return inc


def _variables(data: Data, log_r: float, rho: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(log N, log S_eff, log U) as rows, and d log S_eff / d log R_star."""
    r = np.exp(log_r - rho * data.lN)
    reps = np.maximum(data.S / data.U - 1.0, 0.0)
    x = reps / r
    se = np.minimum(data.S, data.U) + data.U * r * -np.expm1(-x)
    dse = r * data.U * (-np.expm1(-x) - x * np.exp(-x))  # d S_eff / d log R_star
    return np.stack([data.lN, np.log(se), np.log(data.U)]), dse / se


def _log_basis(form: Form, expo: np.ndarray, logs: np.ndarray) -> np.ndarray:
    """(terms, runs): log of each term without its coefficient."""
    return -np.einsum("kjv,j,vn->kn", _incidence(form), expo, logs)


def _unpack(form: Form, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    k, m = len(form.coefs), len(form.exponents)
    return theta[:k], theta[k:k + m], float(theta[k + m]), float(theta[k + m + 1]) if form.rho else 0.0


def _lse(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log-sum-exp over axis 0 and the softmax weights."""
    top = t.max(axis=0)
    ex = np.exp(t - top)
    total = ex.sum(axis=0)
    return top + np.log(total), ex / total


def log_predict(form: Form, theta: np.ndarray, data: Data) -> np.ndarray:
    """log E of the law with parameters ``theta`` (log coefficients, exponents, log R_star)."""
    logc, expo, log_r, rho = _unpack(form, theta)
    logs, _ = _variables(data, log_r, rho)
    return _lse(logc[:, None] + _log_basis(form, expo, logs))[0]


def _loss_grad(theta: np.ndarray, form: Form, data: Data, free_r: bool) -> tuple[float, np.ndarray]:
    """Summed Huber loss of the log error, and its gradient."""
    logc, expo, log_r, rho = _unpack(form, theta)
    logs, dls_dr = _variables(data, log_r, rho)
    inc = _incidence(form)
    lp, w = _lse(logc[:, None] - np.einsum("kjv,j,vn->kn", inc, expo, logs))
    res = lp - np.log(data.E)
    a = np.abs(res)
    loss = float(np.where(a <= HUBER_DELTA, 0.5 * res**2, HUBER_DELTA * (a - 0.5 * HUBER_DELTA)).sum())
    psi = np.clip(res, -HUBER_DELTA, HUBER_DELTA)
    d_expo = -np.einsum("kn,kjv,vn->jn", w, inc, logs)
    s_power = np.einsum("kn,kj,j->n", w, inc[:, :, 1], expo)
    d_r = -s_power * dls_dr if free_r else np.zeros_like(lp)
    rows = [w, d_expo, d_r[None]] + ([(-d_r * data.lN)[None]] if form.rho else [])
    return loss, np.vstack(rows) @ psi


def _bounds(form: Form, free_r: bool, log_r: float) -> list[tuple[float, float]]:
    r_bounds = LOG_R_BOUNDS if free_r else (log_r, log_r)
    rho_bounds = [RHO_BOUNDS if free_r else (0.0, 0.0)] if form.rho else []
    return ([LOG_COEF_BOUNDS] * len(form.coefs) + [EXPONENT_BOUNDS] * len(form.exponents)
            + [r_bounds] + rho_bounds)  # fmt: skip


# ---- starts: variable projection ----------------------------------------------------------


@cache
def _subsets(k: int) -> tuple[tuple[int, ...], ...]:
    return tuple(s for n in range(1, k + 1) for s in itertools.combinations(range(k), n))


def _nnls_batch(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative least squares of ``X c = 1`` for a batch ``X`` (G, runs, k): the best
    feasible least-squares solution over every support (exact for small k). (coefs, SSE)."""
    G, _, k = X.shape
    best_sse = np.full(G, np.inf)
    best_c = np.zeros((G, k))
    ones = np.ones(X.shape[1])
    for sub in _subsets(k):
        Xs = X[:, :, sub]
        gram = np.einsum("gni,gnj->gij", Xs, Xs) + 1e-12 * np.eye(len(sub))
        rhs = np.einsum("gni,n->gi", Xs, ones)
        with np.errstate(all="ignore"):
            c = np.linalg.solve(gram, rhs[..., None])[..., 0]
        sse = ((np.einsum("gni,gi->gn", Xs, c) - 1.0) ** 2).sum(axis=1)
        ok = np.all(c >= 0, axis=1) & np.isfinite(sse) & (sse < best_sse)
        best_sse[ok] = sse[ok]
        full = np.zeros((G, k))
        full[:, sub] = c
        best_c[ok] = full[ok]
    return best_c, best_sse


def profile_starts(form: Form, data: Data, n_starts: int, free_r: bool, log_r0: float,
                   coarse: bool = False) -> list[np.ndarray]:  # fmt: skip
    """The ``n_starts`` best nodes of the exponent x R_star grid, coefficients solved exactly
    (relative-error NNLS), as starting parameter vectors; ``coarse``: every other node."""
    step = 2 if coarse else 1
    r_grid = LOG_R_GRID[::step] if free_r else np.array([log_r0])
    rho_grid = RHO_GRID if form.rho and free_r else np.array([0.0])
    expos = list(itertools.product(*([EXPONENT_GRID[::step]] * len(form.exponents))))
    nodes, sses = [], []
    for log_r, rho in itertools.product(r_grid, rho_grid):  # S_eff shared by the exponents
        logs, _ = _variables(data, float(log_r), float(rho))
        basis = np.stack([
            np.exp(_log_basis(form, np.asarray(ex, float), logs)).T for ex in expos
        ]) / data.E[None, :, None]  # fmt: skip
        coefs, sse = _nnls_batch(basis)
        nodes += [(ex, c, log_r, rho) for ex, c in zip(expos, coefs, strict=True)]
        sses.append(sse)
    order = np.argsort(np.concatenate(sses))[:n_starts]
    floor = 1e-10 * float(data.E.min())
    return [np.concatenate([np.log(np.maximum(nodes[i][1], floor)), nodes[i][0], [nodes[i][2]],
                            [nodes[i][3]] if form.rho else []]) for i in order]  # fmt: skip


def grid_starts(form: Form, free_r: bool, log_r0: float) -> list[np.ndarray]:
    """Hoffmann's grid of starting values (every combination), for comparison."""
    coefs = [[-3.0, -1.0]] + [[-1.0, 1.0, 3.0]] * (len(form.coefs) - 1)
    expos = [[0.1, 0.4, 1.0]] * len(form.exponents)
    rs = [[0.0, 2.0, 4.0]] if free_r else [[log_r0]]
    rhos = [[0.0, 0.5]] if form.rho else []
    return [np.array(c, float) for c in itertools.product(*coefs, *expos, *rs, *rhos)]


def single_threaded() -> contextlib.AbstractContextManager:
    """BLAS on one thread: the fits' matrices are tiny, and on shared cores OpenBLAS's thread
    pool makes every L-BFGS-B step many times slower."""
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ---- the fit ------------------------------------------------------------------------------


@dataclass
class Law:
    """A fitted joint law: its form, parameters and how the optimiser ended."""

    form: Form
    theta: np.ndarray
    loss: float
    converged: bool
    grad_max: float
    n_starts: int
    n_agree: int
    """Starts whose L-BFGS ended within 1e-6 (relative) of the best loss."""
    r_free: bool
    n_kind: str = "gmacs"
    n_runs: int = 0
    seconds: float = 0.0
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """log measured - log predicted error of the runs it was fitted on."""

    @property
    def params(self) -> dict[str, float]:
        """Unrounded parameters in the fit's units (N in GMACs or M params, S, U in 1e9)."""
        logc, expo, log_r, rho = _unpack(self.form, self.theta)
        out = {name: float(np.exp(v)) for name, v in zip(self.form.coefs, logc, strict=True)}
        out.update({k: float(v) for k, v in zip(self.form.exponents, expo, strict=True)})
        out["R_star"] = float(np.exp(log_r)) if self.r_free else float("nan")
        if self.form.rho:
            out["rho"] = rho if self.r_free else float("nan")
        return out

    def predict(self, N, S, U) -> np.ndarray:
        """Error at model size ``N``, ``S`` pairs seen of ``U`` unique pairs (raw units)."""
        return np.exp(log_predict(self.form, self.theta, Data.of(N, S, U)))


def fit_law(
    form: Form | str,
    data: Data,
    starts: str = "varpro",
    n_starts: int = 6,
    n_kind: str = "gmacs",
    warm: np.ndarray | None = None,
) -> Law:
    """Fit ``form`` to ``data`` (module docstring); ``starts``: ``varpro`` or ``grid``;
    ``warm``: a parameter vector to start from as well, beside the best nodes of a coarser
    variable-projection grid (a bootstrap refit starts from the full fit's optimum)."""
    form = FORMS[form] if isinstance(form, str) else form
    t0 = time.perf_counter()
    free_r = data.repeats
    log_r0 = math.log(16.0)  # unused when free; R_star is not identified without repeats
    if starts == "varpro":
        inits = profile_starts(form, data, n_starts, free_r, log_r0, coarse=warm is not None)
        if warm is not None:
            inits = [np.array(warm, float), *inits]
    elif starts == "grid":
        inits = grid_starts(form, free_r, log_r0)
    else:
        raise ValueError(f"unknown starts {starts!r}: expected varpro or grid")
    bounds = _bounds(form, free_r, log_r0)
    results = []
    with warnings.catch_warnings(), np.errstate(all="ignore"), single_threaded():
        warnings.simplefilter("ignore")
        for x0 in inits:
            x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
            res = optimize.minimize(_loss_grad, x0, args=(form, data, free_r), jac=True,
                                    method="L-BFGS-B", bounds=bounds,
                                    options={"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-10})  # fmt: skip
            if np.isfinite(res.fun):
                results.append(res)
    if not results:
        raise RuntimeError(f"joint law {form.name}: no start gave a finite loss")
    best = min(results, key=lambda r: r.fun)
    agree = sum(r.fun <= best.fun * (1 + 1e-6) + 1e-12 for r in results)
    _, grad = _loss_grad(best.x, form, data, free_r)
    resid = np.log(data.E) - log_predict(form, best.x, data)
    return Law(form, best.x, float(best.fun), bool(best.success), float(np.abs(grad).max()),
               len(results), int(agree), free_r, n_kind, len(data.E),
               time.perf_counter() - t0, resid)  # fmt: skip


def bootstrap(
    form: Form | str, data: Data, n_boot: int, seed: int = 0, n_starts: int = 2,
    warm: Law | None = None,
) -> list[Law]:
    """Laws refitted on ``n_boot`` resamples of the runs (with replacement), each from
    ``warm``'s optimum (the fit on every run) and the ``n_starts`` best nodes of a coarse
    variable-projection grid; resamples on which no fit is possible (one model size, one
    samples value) are skipped."""
    rng = np.random.default_rng(seed)
    n, laws = len(data.E), []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        sample = data.take(idx)
        if len(np.unique(sample.lN)) < 2 or len(np.unique(sample.S)) < 2:
            continue
        try:
            theta = warm.theta if warm is not None else None
            laws.append(fit_law(form, sample, n_starts=n_starts, warm=theta))
        except RuntimeError:
            continue
    return laws


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of finite ``values`` (NaN, NaN when fewer than 10)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 10:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def prediction_interval(
    laws: Sequence[Law], residuals: np.ndarray, N, S, U, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """95 % bootstrap prediction interval at each (N, S, U): each bootstrap law's prediction
    times exp of a residual of the full fit drawn at random (where one new run should fall)."""
    if len(laws) < 10:
        nan = np.full(np.atleast_1d(np.asarray(N, float)).shape, np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    preds = np.stack([law.predict(N, S, U) for law in laws])
    noise = rng.choice(residuals, size=preds.shape) if len(residuals) else 0.0
    draws = preds * np.exp(noise)
    lo, hi = np.percentile(draws, [50 * (1 - LEVEL), 50 * (1 + LEVEL)], axis=0)
    return lo, hi


# ---- the runs of a results frame ----------------------------------------------------------


@cache
def _arch_params() -> dict[str, float]:
    table = pd.read_csv(ARCH_INFO_CSV)
    return dict(zip(table["model"], table["mparams"], strict=True))


def joint_points(points: pd.DataFrame, n_kind: str = "gmacs") -> tuple[pd.DataFrame, list[str]]:
    """``points`` (``analysis.fit.error_points``) with ``N`` and ``U`` columns, restricted to
    ``JOINT_METRICS``; runs whose N or U is unknown are dropped with a message."""
    if n_kind not in N_KINDS:
        raise ValueError(f"unknown n_kind {n_kind!r}: expected one of {N_KINDS}")
    problems: list[str] = []
    sel = points[points["metric"].isin(JOINT_METRICS)].copy()
    if sel.empty:
        return sel.assign(N=[], U=[]), problems
    labels = sel["data_label"].astype(str)
    sel["U"] = [cost.unique_pairs(d) for d in labels]
    if n_kind == "gmacs":
        sel["N"] = sel["gmacs"].astype(float)
    else:
        sel["N"] = sel["arch"].map(_arch_params()).astype(float)
    # families too small for a joint law (the paper's 3 OpenAI models) need no message here
    sizes = sel.groupby(["family", "task", "metric"])["run_id"].transform("size")
    labels = labels[sizes >= MIN_RUNS]
    missing_u = sorted(set(labels[sel.loc[labels.index, "U"].isna()]))
    if missing_u:
        problems.append(f"joint law: unique pairs unknown for data {', '.join(missing_u)} "
                        "(no conf/data with that label); those runs left out")  # fmt: skip
    missing_n = sorted(set(sel.loc[~(sel["N"] > 0) & (sizes >= MIN_RUNS), "arch"].astype(str)))
    if missing_n:
        problems.append(f"joint law: N ({n_kind}) unknown for {', '.join(missing_n)}; left out")
    keep = sel["U"].notna() & (sel["N"] > 0) & (sel["samples_seen"] > 0)
    out = sel[keep].copy()
    out["U"] = out["U"].astype(float)
    return out.reset_index(drop=True), problems


def data_of(runs: pd.DataFrame) -> Data:
    return Data.of(runs["N"], runs["samples_seen"], runs["U"], runs["error"])


# ---- judged on a results frame: full fit, held-out models, leave-one-out ------------------

FIT_COLUMNS = (
    "family", "task", "metric", "form", "formula", "n_kind", "parameter", "value", "low",
    "high", "n_runs", "loss", "converged", "grad_max", "n_agree", "n_starts", "n_boot", "note",
)  # fmt: skip
HOLDOUT_COLUMNS = (
    "family", "task", "metric", "form", "n_kind", "train_models", "heldout_model", "data_label",
    "run_id", "samples_seen", "compute", "error", "predicted", "pi_low", "pi_high",
    "rel_error", "inside_pi", "paper_predicted", "paper_rel_error", "n_fit",
)  # fmt: skip
LOO_COLUMNS = (
    "family", "task", "metric", "form", "n_kind", "model_label", "data_label", "run_id",
    "gmacs", "samples_seen", "U", "compute", "error", "predicted", "rel_error",
)  # fmt: skip
BOTTLENECK_COLUMNS = (
    "family", "task", "metric", "form", "model_label", "data_label", "samples_from",
    "samples_to", "error_from", "error_to", "measured_gain", "predicted_gain", "gain_low",
    "gain_high",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "family", "task", "metric", "form", "n_kind", "n_runs", "heldout", "holdout_mean_abs_rel",
    "paper_holdout_mean_abs_rel", "loo_mean_abs_rel", "loo_max_abs_rel", "fit_mean_abs_rel",
    "bottleneck",
)  # fmt: skip


@dataclass
class Fitted:
    """One group's joint law: the law on every run, its bootstrap, and the runs."""

    law: Law
    boot: list[Law]
    runs: pd.DataFrame


@dataclass
class JointResult:
    """Everything ``joint_analysis`` made: the CSVs' frames, the fitted laws, problems."""

    fits: pd.DataFrame
    holdout: pd.DataFrame
    loo: pd.DataFrame
    bottleneck: pd.DataFrame
    summary: pd.DataFrame
    laws: dict[tuple[str, ...], Fitted] = field(default_factory=dict)
    """(family, task, metric, form) -> the fit on every run."""
    problems: list[str] = field(default_factory=list)


def _fit_rows(key: dict, fitted: Fitted) -> list[dict]:
    law, boot = fitted.law, fitted.boot
    values = law.params
    rows = []
    for name, value in values.items():
        lo, hi = interval(np.array([b.params[name] for b in boot]))
        note = ""
        if name in law.form.exponents and (math.isclose(value, EXPONENT_BOUNDS[1], rel_tol=1e-6)
                                           or value <= EXPONENT_BOUNDS[0] * (1 + 1e-6)):
            note = "at its bound"
        if name == "R_star" and not law.r_free:
            note = "not identified: no run repeats its data"
        rows.append({**key, "formula": law.form.formula, "parameter": name, "value": value,
                     "low": lo, "high": hi, "n_runs": law.n_runs, "loss": law.loss,
                     "converged": law.converged, "grad_max": law.grad_max,
                     "n_agree": law.n_agree, "n_starts": law.n_starts, "n_boot": len(boot),
                     "note": note})  # fmt: skip
    return rows


def _models_by_size(runs: pd.DataFrame) -> list[str]:
    return list(runs.groupby("model_label")["gmacs"].max().sort_values().index)


def _holdout_rows(key: dict, runs: pd.DataFrame, form: str, n_boot: int, seed: int,
                  paper: pd.DataFrame) -> list[dict]:  # fmt: skip
    """Fit on all but the largest max(1, n - 3) models (``extend.holdout``'s split), predict
    those, beside the paper method's prediction of the same runs."""
    models = _models_by_size(runs)
    n_out = max(1, len(models) - 3)
    big = models[-n_out:]
    train = runs[~runs["model_label"].isin(big)]
    test = runs[runs["model_label"].isin(big)]
    if train["N"].nunique() < 2 or len(train) < MIN_RUNS or test.empty:
        return []
    data = data_of(train)
    law = fit_law(form, data)
    boot = bootstrap(form, data, n_boot, seed, warm=law)
    pred = law.predict(test["N"], test["samples_seen"], test["U"])
    lo, hi = prediction_interval(boot, law.residuals, test["N"], test["samples_seen"], test["U"])
    by_run = paper.set_index("run_id")["predicted"] if not paper.empty else pd.Series(dtype=float)
    rows = []
    for i, (_, run) in enumerate(test.iterrows()):
        p_pred = float(by_run.get(run["run_id"], np.nan))
        rows.append({**key, "train_models": ", ".join(models[:-n_out]),
                     "heldout_model": run["model_label"], "data_label": run["data_label"],
                     "run_id": run["run_id"], "samples_seen": run["samples_seen"],
                     "compute": run["compute"], "error": run["error"], "predicted": pred[i],
                     "pi_low": lo[i], "pi_high": hi[i],
                     "rel_error": (pred[i] - run["error"]) / run["error"],
                     "inside_pi": bool(lo[i] <= run["error"] <= hi[i]) if np.isfinite(lo[i]) else None,
                     "paper_predicted": p_pred,
                     "paper_rel_error": (p_pred - run["error"]) / run["error"],
                     "n_fit": len(train)})  # fmt: skip
    return rows


def _loo_rows(key: dict, runs: pd.DataFrame, form: str, full: Law) -> list[dict]:
    """Each run predicted by the law fitted on the others, started (as a bootstrap refit)
    from the full fit's optimum and the best nodes of a coarse grid."""
    data = data_of(runs)
    rows = []
    for i in range(len(runs)):
        rest = data.take(np.r_[0:i, i + 1:len(runs)])
        run = runs.iloc[i]
        if len(np.unique(rest.lN)) < 2:
            continue
        law = fit_law(form, rest, n_starts=3, warm=full.theta)
        pred = float(law.predict(run["N"], run["samples_seen"], run["U"])[0])
        rows.append({**key, **{c: run[c] for c in ("model_label", "data_label", "run_id", "gmacs",
                                                   "samples_seen", "U", "compute", "error")},
                     "predicted": pred, "rel_error": (pred - run["error"]) / run["error"]})  # fmt: skip
    return rows


def _gain(law: Law, pair: tuple[list, list, list]) -> float:
    """Relative error drop from the first to the second of two (N, S, U) points."""
    e = law.predict(*pair)
    return float((e[0] - e[1]) / e[0])


def _bottleneck_rows(key: dict, fitted: Fitted) -> list[dict]:
    """Per (model, data): measured and predicted relative gain from the second-largest to the
    largest samples seen (the paper's bottleneck: ViT-L/14 on LAION-400M, 13B -> 34B)."""
    rows = []
    for (model, data_label), g in fitted.runs.groupby(["model_label", "data_label"], sort=False):
        if g["samples_seen"].nunique() < 2:
            continue
        g = g.sort_values("samples_seen")
        a, b = g.iloc[-2], g.iloc[-1]
        pair = ([a["N"], b["N"]], [a["samples_seen"], b["samples_seen"]], [a["U"], b["U"]])
        lo, hi = interval(np.array([_gain(law, pair) for law in fitted.boot]))
        rows.append({**{k: key[k] for k in ("family", "task", "metric", "form")},
                     "model_label": model, "data_label": data_label,
                     "samples_from": a["samples_seen"], "samples_to": b["samples_seen"],
                     "error_from": a["error"], "error_to": b["error"],
                     "measured_gain": (a["error"] - b["error"]) / a["error"],
                     "predicted_gain": _gain(fitted.law, pair), "gain_low": lo,
                     "gain_high": hi})  # fmt: skip
    return rows


def bottleneck_verdict(table: pd.DataFrame, model: str = "ViT-L/14") -> str:
    """Does the law show the paper's bottleneck: ``model``'s gain from its last samples step
    on LAION-400M under half its gain on LAION-2B, as measured?"""
    sel = table[table["model_label"] == model].set_index("data_label")
    if not {"LAION-400M", "LAION-2B"} <= set(sel.index):
        return ""
    small, large = sel.loc["LAION-400M"], sel.loc["LAION-2B"]
    measured = small["measured_gain"] < 0.5 * large["measured_gain"]
    predicted = small["predicted_gain"] < 0.5 * large["predicted_gain"]
    return (f"{'yes' if predicted == measured else 'no'}: {model} 400M "
            f"{100 * small['predicted_gain']:.1f}% vs 2B {100 * large['predicted_gain']:.1f}% "
            f"predicted ({100 * small['measured_gain']:.1f}% vs "
            f"{100 * large['measured_gain']:.1f}% measured)")


def joint_analysis(
    points: pd.DataFrame,
    forms: Sequence[str] = (DEFAULT_FORM, "chinchilla"),
    n_kind: str = "gmacs",
    n_boot: int = 100,
    seed: int = 0,
    loo: bool = True,
    paper_holdout: pd.DataFrame | None = None,
) -> JointResult:
    """Fit each form to every (family, task, metric) group of ``points`` with at least
    ``MIN_RUNS`` runs; judge it on held-out models and by leave-one-out; tables as the CSVs.

    ``paper_holdout``: ``analysis.extend.holdout(points, ("paper",))``, whose predictions
    are put beside the joint law's (computed here when None)."""
    runs_all, problems = joint_points(points, n_kind)
    if paper_holdout is None:
        paper_holdout = extend.holdout(points, methods=("paper",)) if not points.empty else pd.DataFrame()
    fit_rows: list[dict] = []
    ho_rows: list[dict] = []
    loo_rows: list[dict] = []
    bn_rows: list[dict] = []
    laws: dict[tuple[str, ...], Fitted] = {}
    few: dict[str, list[str]] = {}
    with single_threaded():
        for (family, task, _, metric), runs in runs_all.groupby(list(GROUP_KEYS), sort=False):
            runs = runs.reset_index(drop=True)
            if len(runs) < MIN_RUNS or runs["N"].nunique() < 2 or runs["samples_seen"].nunique() < 2:
                few.setdefault(str(family), []).append(f"{task} ({len(runs)} runs)")
                continue
            paper = paper_holdout
            if not paper.empty:
                paper = paper[(paper["family"] == family) & (paper["task"] == task)
                              & (paper["metric"] == metric)]  # fmt: skip
            for form in forms:
                key = {"family": family, "task": task, "metric": metric, "form": form,
                       "n_kind": n_kind}  # fmt: skip
                data = data_of(runs)
                law = fit_law(form, data, n_kind=n_kind)
                fitted = Fitted(law, bootstrap(form, data, n_boot, seed, warm=law), runs)
                laws[(str(family), str(task), str(metric), form)] = fitted
                fit_rows += _fit_rows(key, fitted)
                bn_rows += _bottleneck_rows(key, fitted)
                ho_rows += _holdout_rows(key, runs, form, n_boot, seed, paper)
                if loo:
                    loo_rows += _loo_rows(key, runs, form, law)
    for family, which in few.items():
        problems.append(f"joint law: family {family} not fitted (needs >= {MIN_RUNS} runs over "
                        f">= 2 model sizes and samples values): {', '.join(which)}")  # fmt: skip
    result = JointResult(
        pd.DataFrame(fit_rows, columns=list(FIT_COLUMNS)),
        pd.DataFrame(ho_rows, columns=list(HOLDOUT_COLUMNS)),
        pd.DataFrame(loo_rows, columns=list(LOO_COLUMNS)),
        pd.DataFrame(bn_rows, columns=list(BOTTLENECK_COLUMNS)),
        pd.DataFrame(columns=list(SUMMARY_COLUMNS)), laws, problems,
    )  # fmt: skip
    result.summary = summarize(result)
    return result


def summarize(result: JointResult) -> pd.DataFrame:
    """One row per fitted (family, task, metric, form): held-out, LOO and fit errors."""
    rows = []
    def sel(t: pd.DataFrame, key: tuple[str, ...]) -> pd.DataFrame:
        if t.empty:
            return t
        return t[(t["family"] == key[0]) & (t["task"] == key[1]) & (t["metric"] == key[2])
                 & (t["form"] == key[3])]  # fmt: skip

    for (family, task, metric, form), fitted in result.laws.items():
        key = (family, task, metric, form)
        ho, lo, bn = (sel(t, key) for t in (result.holdout, result.loo, result.bottleneck))
        nan = float("nan")
        rows.append({
            "family": family, "task": task, "metric": metric, "form": form,
            "n_kind": fitted.law.n_kind, "n_runs": fitted.law.n_runs,
            "heldout": ", ".join(dict.fromkeys(ho["heldout_model"])) if not ho.empty else "",
            "holdout_mean_abs_rel": ho["rel_error"].abs().mean() if not ho.empty else nan,
            "paper_holdout_mean_abs_rel": ho["paper_rel_error"].abs().mean() if not ho.empty else nan,
            "loo_mean_abs_rel": lo["rel_error"].abs().mean() if not lo.empty else nan,
            "loo_max_abs_rel": lo["rel_error"].abs().max() if not lo.empty else nan,
            "fit_mean_abs_rel": float(np.abs(np.expm1(-fitted.law.residuals)).mean()),
            "bottleneck": bottleneck_verdict(bn) if not bn.empty else "",
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
