"""Eq. 3 costs (multiplications) per layer for both networks, and the plan table.

de Gusmão et al. count C_in·(k/s)²·(h/s − k/s + 1)²·C_out multiplications for a valid,
stride-1 conv. The same count for any stride, padding and groups is
C_out · C_in/groups · k_h·k_w · H_out·W_out with the output size that shape propagation measured,
which is what `conv_mults` computes; for the paper's case the two agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .plan import Plan

__all__ = ["LayerCost", "CostTable", "cost_table", "format_table"]


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str  # "conv" or "fc"
    kernel: tuple[int, int]
    small_kernel: tuple[int, int]
    out_hw: tuple[int, int]
    small_out_hw: tuple[int, int]
    mults: int
    small_mults: int

    @property
    def s(self) -> float:
        return math.sqrt(math.prod(self.kernel) / math.prod(self.small_kernel))


@dataclass(frozen=True)
class CostTable:
    rows: tuple[LayerCost, ...]
    total: int
    small_total: int
    s1: float  # target size / pre-train size

    @property
    def speedup(self) -> float:
        return self.total / self.small_total if self.small_total else float("inf")

    @property
    def bounds(self) -> tuple[float, float]:
        """Eq. 4 summed over layers: M(l,1)/s⁴ < M(l,s) ≤ M(l,1)/s², as speed-up bounds.

        Each layer uses its own s: k/k' where its kernel shrinks, and the input ratio s1 where it
        does not (a kept 1x1 conv only sees smaller maps). The bounds are
        ΣM / Σ(M/s²) ≤ speed-up < ΣM / Σ(M/s⁴).
        """
        def s(row: LayerCost) -> float:
            return row.s if row.s > 1 else self.s1

        low = sum(r.mults / s(r) ** 2 for r in self.rows)
        high = sum(r.mults / s(r) ** 4 for r in self.rows)
        return (self.total / low if low else 1.0, self.total / high if high else 1.0)

    def to_dict(self) -> dict:
        rows = [{**asdict(r), "s": r.s} for r in self.rows]
        return {"rows": rows, "total": self.total, "small_total": self.small_total, "s1": self.s1,
                "speedup": self.speedup, "bounds": list(self.bounds)}


def cost_table(plan: Plan) -> CostTable:
    """Per-layer multiplications of the target and the pre-train network (batch 1)."""
    rows = []
    for c in plan.convs:
        per_pixel = c.out_channels * (c.in_channels // c.groups)
        rows.append(LayerCost(c.name, "conv", tuple(c.kernel), tuple(c.small_kernel), tuple(c.out_hw),
                              tuple(c.small_out_hw), per_pixel * math.prod(c.kernel) * math.prod(c.out_hw),
                              per_pixel * math.prod(c.small_kernel) * math.prod(c.small_out_hw)))
    for f in plan.fcs:
        outs = f.out_features
        rows.append(LayerCost(f.name, "fc", tuple(f.hw), tuple(f.small_hw), (1, 1), (1, 1),
                              outs * f.channels * math.prod(f.hw), outs * f.channels * math.prod(f.small_hw)))
    total = sum(r.mults for r in rows)
    small = sum(r.small_mults for r in rows)
    return CostTable(tuple(rows), total, small, plan.target_size / plan.input_size)


def _hw(hw) -> str:
    return f"{hw[0]}x{hw[1]}"


def format_table(plan: Plan, table: CostTable | None = None) -> str:
    """The `msurg plan` table: one row per conv, then the FC interfaces, then totals."""
    table = table or cost_table(plan)
    width = max([len(r.name) for r in table.rows] + [5])
    head = (f"{'layer':<{width}}  {'kernel':>9}  {'s':>5}  {'target HxW':>10}  {'pre HxW':>8}  {'target mults':>14}  "
            f"{'pre mults':>14}")
    lines = [f"{plan.source.spec}: target {plan.target_size}px -> pre-train {plan.input_size}px", head, "-" * len(head)]
    for r in table.rows:
        kern = ("" if r.kind == "conv" else "fc ") + f"{_hw(r.kernel)}>{_hw(r.small_kernel)}"
        lines.append(f"{r.name:<{width}}  {kern:>9}  {r.s:5.2f}  {_hw(r.out_hw):>10}  {_hw(r.small_out_hw):>8}  "
                     f"{r.mults:>14,}  {r.small_mults:>14,}")
    lo, hi = table.bounds
    lines += ["-" * len(head),
              f"{'total':<{width}}  {'':>9}  {'':>5}  {'':>10}  {'':>8}  {table.total:>14,}  {table.small_total:>14,}",
              f"predicted speed-up (Eq. 3): {table.speedup:.2f}x   Eq. 4 bounds: {lo:.2f}x <= speed-up < {hi:.2f}x "
              f"(each layer's s = k/k', or the input ratio {table.s1:.3f} where the kernel is kept)"]
    if plan.resamples:
        lines.append(f"{len(plan.resamples)} feature maps are cropped/padded so that merges fit: "
                     + ", ".join(f"{r.node}[{r.arg}] {_hw(r.from_hw)}->{_hw(r.to_hw)}" for r in plan.resamples))
    return "\n".join(lines)
