"""Verdicts on the paper's claims from means and 95% confidence intervals over seeds.

A comparison "a beats b" (lower is better) *holds* when a's CI lies entirely below b's, *does not
hold* when it lies entirely above, and is *inconclusive* when the CIs overlap (or a side has
fewer than 2 seeds). A claim made of several comparisons holds when all hold, does not hold when
any does not hold, and is inconclusive otherwise. CIs: mean +- t_{0.975, n-1} s / sqrt(n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive (CIs overlap)"
NOT_MEASURED = "not measured"

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30 (then the normal 1.96 is within 2%)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1 (got {df})")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Stat:
    """Mean and 95% CI half-width of per-seed values (half = inf with one value)."""

    mean: float
    half: float
    n: int
    values: tuple[float, ...]

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def __str__(self) -> str:
        return f"{self.mean:.3g} ± {self.half:.2g}" if math.isfinite(self.half) else f"{self.mean:.3g} (n=1)"


def stat(values: Sequence[float | None]) -> Stat | None:
    """Stat of the finite values (None when there are none)."""
    v = tuple(float(x) for x in values if x is not None and math.isfinite(float(x)))
    if not v:
        return None
    n = len(v)
    mean = sum(v) / n
    if n < 2:
        return Stat(mean, math.inf, 1, v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    return Stat(mean, t975(n - 1) * sd / math.sqrt(n), n, v)


def beats(a: Stat | None, b: Stat | None) -> str:
    """Does a beat b (lower is better)?"""
    if a is None or b is None:
        return NOT_MEASURED
    if a.n < 2 or b.n < 2:
        return INCONCLUSIVE
    if a.hi < b.lo:
        return HOLDS
    if a.lo > b.hi:
        return FAILS
    return INCONCLUSIVE


def all_of(verdicts: Sequence[str]) -> str:
    if not verdicts or any(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    if any(v == FAILS for v in verdicts):
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def best_is(stats: dict[str, Stat | None], name: str) -> str:
    """Is ``name`` the best (lowest) of ``stats``? Holds when its CI lies below every other's,
    does not hold when another's CI lies entirely below it."""
    if name not in stats or len(stats) < 2:
        return NOT_MEASURED
    return all_of([beats(stats[name], s) for k, s in stats.items() if k != name])


def resolved_best(stats: dict[str, Stat | None]) -> str | None:
    """The option whose CI lies below all others' CIs, or None when no option is separated."""
    for k in stats:
        if best_is(stats, k) == HOLDS:
            return k
    return None


def best_depends(per_model: dict[str, dict[str, Stat | None]]) -> tuple[str, str]:
    """"The best option depends on the model": holds when two models have separated, different
    best options; does not hold when every model has a separated best and they are all the same;
    inconclusive otherwise. Returns (verdict, detail)."""
    if len(per_model) < 2 or any(not s or any(v is None for v in s.values()) for s in per_model.values()):
        return NOT_MEASURED, "needs two or more models with every option measured"
    best = {m: resolved_best(s) for m, s in per_model.items()}
    detail = "; ".join(f"{m}: {b or 'no separated best'}" for m, b in best.items())
    found = {b for b in best.values() if b is not None}
    if len(found) >= 2:
        return HOLDS, detail
    if len(found) == 1 and all(b is not None for b in best.values()):
        return FAILS, detail
    return INCONCLUSIVE, detail


@dataclass(frozen=True)
class Claim:
    source: str                        # "Table 4"
    text: str                          # the paper's claim
    verdict: str
    detail: str


def claim_of(source: str, text: str, pairs: Sequence[tuple[str, str]], get: Callable[[str], Stat | None]) -> Claim:
    """A claim made of "a beats b" comparisons, with a and b named keys of ``get``."""
    vs, parts = [], []
    for a, b in pairs:
        sa, sb = get(a), get(b)
        v = beats(sa, sb)
        vs.append(v)
        parts.append(f"{a} {sa if sa else 'n/a'} vs {b} {sb if sb else 'n/a'}: {v}")
    return Claim(source, text, all_of(vs), "; ".join(parts))
