"""The study's report: study.md (measured tables beside the paper's, one verdict per claim),
cells.csv / cells.json (every (cell, evaluation) with mean, 95% CI, seeds, settings) and PNGs."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from sit.study import paper
from sit.study.cells import CELL_BY_NAME, FIG5_CELL, W_CHOICES
from sit.study.claims import Claim, Stat, best_depends, best_is, claim_of, stat
from sit.study.config import CONFIG_NAME, read_identity
from sit.study.eval_sampler import spec_method
from sit.study.records import load_results

W_LABEL = {"kl": "w_KL", "sigma": "σ_t", "sin2": "sin²(πt)", "kl_eta": "w_KL,η"}
TABLES = {  # title, [(cell, evaluation)]
    "Table 2": ("Discrete vs. continuous (ODE / DDPM)", [("ddpm", "ddpm"), ("vp-score", "ode")]),
    "Table 3": ("Effect of parameterization (SBDM-VP, ODE)", [("vp-score", "ode"), ("vp-score-lambda", "ode"),
                                                              ("vp-velocity", "ode")]),
    "Table 4": ("Effect of interpolant (velocity, ODE)", [("vp-velocity", "ode"), ("linear-velocity", "ode"),
                                                          ("gvp-velocity", "ode")]),
    "Table 5": ("ODE vs. SDE (w_KL), same NFE", [(c, k) for c in ("vp-velocity", "linear-velocity", "gvp-velocity")
                                                 for k in ("ode", "sde:kl")]),
}
T6_CELLS = ("vp-velocity", "vp-score-lambda", "vp-score", "gvp-velocity", "gvp-score", "linear-velocity", "linear-score")


class Measured:
    """Per-seed results folded into Stats: fd / accuracy of (cell, evaluation), C(v), curves."""

    def __init__(self, results: list[dict]):
        self.results = results
        self.by_cell: dict[str, list[dict]] = {}
        for r in results:
            self.by_cell.setdefault(r["cell"], []).append(r)

    def values(self, cell: str, key: str, field: str = "fd") -> list:
        return [r.get("evals", {}).get(key, {}).get(field) for r in self.by_cell.get(cell, [])
                if key in r.get("evals", {})]

    def get(self, name: str, field: str = "fd") -> Stat | None:
        cell, key = name.split("/", 1)
        return stat(self.values(cell, key, field))

    def path_length(self, cell: str) -> dict[int, Stat | None]:
        steps: dict[int, list] = {}
        for r in self.by_cell.get(cell, []):
            for p in r.get("path_length", []):
                steps.setdefault(int(p["step"]), []).append(p["C"])
        return {s: stat(v) for s, v in sorted(steps.items())}

    def curve(self, cell: str) -> dict[str, dict[int, Stat | None]]:
        acc: dict[str, dict[int, list]] = {}
        for r in self.by_cell.get(cell, []):
            for name, pts in r.get("nfe_curve", {}).items():
                for nfe, v in pts.items():
                    acc.setdefault(name, {}).setdefault(int(nfe), []).append(v)
        return {n: {k: stat(v) for k, v in sorted(p.items())} for n, p in acc.items()}


def study_claims(m: Measured) -> list[Claim]:
    """One verdict per claim of the paper (Sections 3.1-3.2, Figs. 4-5)."""
    g = m.get
    vel = ("vp-velocity", "linear-velocity", "gvp-velocity")
    out = [
        claim_of("Table 2", "continuous beats discrete (VP score L_s vs. DDPM L_s^N)", [("vp-score/ode", "ddpm/ddpm")], g),
        claim_of("Table 3", "L_sλ and L_v beat L_s (SBDM-VP)",
                 [("vp-score-lambda/ode", "vp-score/ode"), ("vp-velocity/ode", "vp-score/ode")], g),
        claim_of("Table 4", "Linear and GVP beat VP (velocity models)",
                 [("linear-velocity/ode", "vp-velocity/ode"), ("gvp-velocity/ode", "vp-velocity/ode")], g),
        claim_of("Table 5", "SDE (w_KL) beats ODE at equal NFE", [(f"{c}/sde:kl", f"{c}/ode") for c in vel], g),
    ]
    per_model = {c: {w: g(f"{c}/sde:{w}") for w in W_CHOICES} for c in T6_CELLS if c in m.by_cell}
    v, d = best_depends(per_model)
    out.append(Claim("Table 6", "the best w_t depends on the model", v, d))
    for cells, w, text in ((("vp-velocity", "vp-score-lambda", "gvp-velocity"), "kl", "w_KL is the best w_t for SBDM-VP and GVP"),
                           (("linear-velocity",), "kl_eta", "w_KL,η is the best w_t for the Linear velocity model")):
        from sit.study.claims import all_of

        vs = [best_is(per_model[c], w) if c in per_model else "not measured" for c in cells]
        det = "; ".join(f"{c}: {x} ({', '.join(f'{W_LABEL[k]} {s}' for k, s in per_model.get(c, {}).items())})"
                        for c, x in zip(cells, vs))
        out.append(Claim("Table 6", text, all_of(vs), det))
    final = {c: (list(m.path_length(c).values()) or [None])[-1] for c in vel}
    out.append(claim_of("Fig. 4", "Linear and GVP have a shorter path length C(v) than VP (end of training)",
                        [("linear-velocity", "vp-velocity"), ("gvp-velocity", "vp-velocity")], final.get))
    curves = m.curve(FIG5_CELL)
    if curves.get("ode") and curves.get("sde:kl"):
        lo, hi = min(curves["ode"]), max(curves["ode"])
        pts = {"ode@lo": curves["ode"].get(lo), "sde@lo": curves["sde:kl"].get(lo),
               "ode@hi": curves["ode"].get(hi), "sde@hi": curves["sde:kl"].get(hi)}
        out.append(claim_of("Fig. 5", f"the ODE beats the SDE (w_KL) at few NFE ({lo})", [("ode@lo", "sde@lo")], pts.get))
        out.append(claim_of("Fig. 5", f"the SDE (w_KL) beats the ODE at many NFE ({hi})", [("sde@hi", "ode@hi")], pts.get))
    return out


def _num(x, nd=4):
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def rows(m: Measured) -> list[dict]:
    """One row per (cell, evaluation): mean / 95% CI of FD and accuracy over seeds and settings."""
    out = []
    for cell, rs in m.by_cell.items():
        keys = list(dict.fromkeys(k for r in rs for k in r.get("evals", {})))
        for key in keys:
            fd, acc = m.get(f"{cell}/{key}"), m.get(f"{cell}/{key}", "accuracy")
            specs = [r["evals"][key] for r in rs if key in r.get("evals", {})]
            sp = specs[0]
            out.append({
                "cell": cell, "eval": key, "fd_mean": _num(fd.mean if fd else None),
                "fd_ci95": _num(fd.half if fd else None), "accuracy_mean": _num(acc.mean if acc else None),
                "accuracy_ci95": _num(acc.half if acc else None), "n_seeds": fd.n if fd else 0,
                "seeds": " ".join(str(r["seed"]) for r in rs if key in r.get("evals", {})),
                "steps": rs[0].get("steps"), "batch": rs[0].get("batch"),
                "wall_s_mean": _num(sum(r["wall_s"]["total"] for r in rs) / len(rs), 1),
                "nfe": sp.get("nfe"), "sampler": spec_method(sp),
                "w": sp.get("w", ""), "eta": " ".join(str(s.get("eta")) for s in specs) if "eta" in sp else "",
                "samples": sp.get("samples"), "errors": sum(1 for s in specs if s.get("error")),
                "paper_fid": paper.paper_value(cell, key),
            })
    return out


def _cell(m: Measured, cell: str, key: str) -> str:
    s, a = m.get(f"{cell}/{key}"), m.get(f"{cell}/{key}", "accuracy")
    if s is None:
        return "not run"
    return f"{s}" + (f" (acc {a.mean:.2f})" if a else "")


def _label(cell: str) -> str:
    c = CELL_BY_NAME[cell]
    return f"{c.label} {c.objective} (`{cell}`)"


def tables_md(m: Measured) -> str:
    lines = []
    for name, (title, items) in TABLES.items():
        lines += [f"### {name}: {title}", "", "| model | eval | measured FD (95% CI) | paper FID |", "|---|---|---|---|"]
        for cell, key in items:
            p = paper.paper_value(cell, key)
            lines.append(f"| {_label(cell)} | {key} | {_cell(m, cell, key)} | {p if p is not None else '–'} |")
        lines += ["", f"![{name}](fig_{name.lower().replace(' ', '')}.png)", ""]
    lines += ["### Table 6: SDE diffusion coefficient w_t (same NFE)", "",
              "| model | " + " | ".join(W_LABEL[w] for w in W_CHOICES) + " | chosen η |",
              "|---|" + "---|" * (len(W_CHOICES) + 1)]
    for cell in T6_CELLS:
        if cell not in m.by_cell and cell not in paper.TABLE6:
            continue
        cols = []
        for w in W_CHOICES:
            p = paper.paper_value(cell, f"sde:{w}")
            cols.append(f"{_cell(m, cell, 'sde:' + w)} [paper {p if p is not None else '–'}]")
        etas = [r.get("eta") for r in m.by_cell.get(cell, [])]
        lines.append(f"| {_label(cell)} | " + " | ".join(cols) + f" | {' '.join(str(e) for e in etas) or '–'} |")
    lines += ["", "![Table 6](fig_table6.png)", ""]
    return "\n".join(lines)


def claims_md(claims: list[Claim]) -> str:
    lines = ["| source | claim | verdict at this scale | evidence (FD mean ± 95% CI over seeds) |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c.source} | {c.text} | **{c.verdict}** | {c.detail} |")
    return "\n".join(lines)


def _settings_md(out: Path, m: Measured) -> str:
    ident = read_identity(out, CONFIG_NAME) or {}
    b, t, mc = ident.get("budget", {}), ident.get("train", {}), ident.get("model", {})
    data = t.get("latents") or t.get("data") or f"embedded {t.get('dataset')}"
    done = {c: len(rs) for c, rs in m.by_cell.items()}
    return "\n".join([
        f"- data: {data}; network depth {mc.get('depth')}, width {mc.get('hidden_size')}, patch {mc.get('patch_size')} "
        f"(the DDPM cell learns the variance: 2C output channels); lr {t.get('lr')}, EMA {t.get('ema_decay')}",
        f"- budget per trained model: {b.get('steps')} steps × batch {b.get('batch')}; seeds per cell {b.get('seeds')}; "
        f"NFE {b.get('nfe')} (ODE: Heun {b.get('nfe', 0) // 2} steps; SDE: Euler–Maruyama {b.get('nfe')} steps, "
        f"last step 'mean'; DDPM: {b.get('nfe')} respaced steps); guidance scale {b.get('cfg_scale')}",
        f"- quality: {_metric_line(ident)} of {b.get('samples_per_class')} samples per class"
        + ("" if _latent(ident) else "; class accuracy beside it"),
        f"- w_KL,η: η chosen per model from {b.get('etas')} on separate noise, L_t from {b.get('lt_points')} times × "
        f"{b.get('lt_samples')} held-out samples (sit.lt)",
        f"- finished (cell: seeds): {done}",
    ])


def _latent(ident: dict) -> bool:
    t = ident.get("train", {})
    return bool(t.get("latents") or t.get("data"))


def _metric_line(ident: dict) -> str:
    """What the study's FD is (sit.study.scoring decides it; read back from the identity)."""
    if not _latent(ident):
        return ("classifier-feature Fréchet distance (sit.evaluate.scorers.classifier; lower is better; "
                "not an Inception FID)")
    sc = ident.get("scoring", {})
    ref = f"the reference batch {sc.get('ref')}" if sc.get("ref") else f"up to {sc.get('ref_images')} training images"
    return (f"Inception FID (sit.evaluate.scorers.inception) of VAE-decoded samples against {ref}"
            + ("; FD-DINOv2 in cells.json" if sc.get("dinov2") else ""))


def _axis_label(out: Path) -> str:
    ident = read_identity(out, CONFIG_NAME) or {}
    return "Inception FID (lower is better)" if _latent(ident) else "classifier-feature FD (lower is better)"


def _ci_words(stats) -> str:
    """"95% CI over seeds" when some bar has >= 2 seeds, else say there is no interval."""
    n = max((s.n for s in stats if s is not None), default=0)
    return "95% CI over seeds" if n >= 2 else "one seed: no interval"


def _err(s: Stat | None) -> float:
    return s.half if s is not None and math.isfinite(s.half) else 0.0


def _bars(ax, labels, stats, paper_vals=None, color="C0", ylabel="classifier-feature FD (lower is better)"):
    """Measured FD per row with seed dots; the paper's FID-50K is written under each label (text,
    not a second axis: the two numbers are on different scales and must not be compared)."""
    import numpy as np

    x = np.arange(len(labels))
    means = [s.mean if s else float("nan") for s in stats]
    ax.bar(x, means, yerr=[_err(s) for s in stats], color=color, alpha=0.7, capsize=4,
           label=f"measured FD ({_ci_words(stats)})")
    for i, s in enumerate(stats):
        if s:
            ax.plot([i] * s.n, s.values, "k.", ms=4)
    if paper_vals and any(v is not None for v in paper_vals):
        labels = [f"{lab}\n(paper {v:g})" if v is not None else lab for lab, v in zip(labels, paper_vals)]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.2)   # room for the legend
    ax.legend(loc="upper left", fontsize=8)


def figures(m: Measured, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sit.io import save_figure

    made = []
    ylabel = _axis_label(out)
    for name, (title, items) in TABLES.items():
        fig, ax = plt.subplots(figsize=(6.5, 4.4))
        _bars(ax, [f"{c}\n{k}" for c, k in items], [m.get(f"{c}/{k}") for c, k in items],
              [paper.paper_value(c, k) for c, k in items], ylabel=ylabel)
        ax.set_title(f"{name}: {title}", fontsize=10)
        fig.tight_layout()   # room for the "(paper FID)" line under each label
        made.append(save_figure(fig, out / f"fig_{name.lower().replace(' ', '')}.png"))
        plt.close(fig)
    cells = [c for c in T6_CELLS if c in m.by_cell]
    if cells:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(W_CHOICES)
        for j, w in enumerate(W_CHOICES):
            st = [m.get(f"{c}/sde:{w}") for c in cells]
            xs = [i + (j - 1.5) * width for i in range(len(cells))]
            ax.bar(xs, [s.mean if s else float("nan") for s in st], width, yerr=[_err(s) for s in st], capsize=3,
                   label=W_LABEL[w])
        ax.set_xticks(range(len(cells)), cells, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(f"Table 6: SDE w_t per model ({_ci_words([m.get(f'{c}/sde:{w}') for c in cells for w in W_CHOICES])})",
                     fontsize=10)
        ax.set_ylim(bottom=0)   # an FD is >= 0; wide two-seed intervals would only push the axis down
        ax.set_ylim(top=ax.get_ylim()[1] * 1.15)
        ax.legend(fontsize=8, ncol=len(W_CHOICES), loc="upper center")
        made.append(save_figure(fig, out / "fig_table6.png"))
        plt.close(fig)
    made += _curves(m, out, plt, save_figure, ylabel)
    return made


def _curves(m: Measured, out: Path, plt, save_figure, ylabel: str) -> list[Path]:
    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    all_pl = [s for c in ("vp-velocity", "linear-velocity", "gvp-velocity") for s in (m.path_length(c) or {}).values()]
    for c in ("vp-velocity", "linear-velocity", "gvp-velocity"):
        pl = m.path_length(c)
        if pl:
            ax.errorbar(list(pl), [s.mean for s in pl.values()], yerr=[_err(s) for s in pl.values()], marker="o",
                        capsize=3, label=c)
    ax.set_xlabel("training step")
    ax.set_ylabel("path length C(v) = ∫ E|v|² dt")
    ax.set_title(f"Fig. 4: path length over training ({_ci_words(all_pl)})", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    made.append(save_figure(fig, out / "fig4_path_length.png"))
    plt.close(fig)
    curves = m.curve(FIG5_CELL)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curves.items():
        ok = {k: s for k, s in pts.items() if s is not None}
        ax.errorbar(list(ok), [s.mean for s in ok.values()], yerr=[_err(s) for s in ok.values()], marker="o",
                    capsize=3, label=name.replace("sde:", "SDE ").replace("ode", "ODE (Heun)"))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({k for p in curves.values() for k in p}), [str(k) for k in sorted({k for p in curves.values() for k in p})])
    ax.set_xlabel("NFE")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Fig. 5: quality vs NFE ({FIG5_CELL}; "
                 f"{_ci_words([s for p in curves.values() for s in p.values() if s is not None])})", fontsize=10)
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    made.append(save_figure(fig, out / "fig5_nfe.png"))
    plt.close(fig)
    return made


def write_report(out: Path) -> Path:
    """Merge every finished (cell, seed) of the study folder ``out`` into study.md, cells.csv,
    cells.json and the figures; returns the path of study.md."""
    from sit.io import write_json, write_text_atomic

    out = Path(out)
    m = Measured(load_results(out))
    rs = rows(m)
    claims = study_claims(m)
    write_json(out / "cells.json", {"rows": rs, "claims": [c.__dict__ for c in claims], "results": m.results})
    buf = io.StringIO()
    fields = list(rs[0]) if rs else ["cell", "eval"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rs)
    write_text_atomic(out / "cells.csv", buf.getvalue())
    figures(m, out)
    md = ["# SiT design-space study", "",
          "Each claim of the paper is tested at this scale: *holds* when the 95% confidence intervals over "
          "seeds are separated in the paper's direction, *does not hold* when they are separated the other way, "
          "*inconclusive* when they overlap. The paper's numbers are FID-50K on ImageNet 256 with SiT-B/2 "
          f"({paper.METRIC}); the measured numbers are a different metric at a much smaller scale, so compare "
          "orderings, not values.", "", "## Settings", "", _settings_md(out, m), "", "## Claims", "",
          claims_md(claims), "", "## Tables", "", tables_md(m), "## Figures", "",
          "![Fig. 4](fig4_path_length.png)", "", "![Fig. 5](fig5_nfe.png)", ""]
    return write_text_atomic(out / "study.md", "\n".join(md))
