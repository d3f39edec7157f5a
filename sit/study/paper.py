"""The SiT paper's numbers for the study's cells (FID-50K, SiT-B/2, ImageNet 256, 400K steps, NFE
250: Heun for the ODE, Euler-Maruyama for the SDE; Ma et al. 2024, Tables 2-6).
Keys are (cell name, evaluation): "ode" (Tables 2-4 and Table 5's ODE column), "ddpm", and
"sde:W" for the SDE with w_t = W (Table 5: w_KL; Table 6: every W)."""

from __future__ import annotations

TABLE2 = {("ddpm", "ddpm"): 44.2, ("vp-score", "ode"): 43.6}
TABLE3 = {("vp-score", "ode"): 43.6, ("vp-score-lambda", "ode"): 39.1, ("vp-velocity", "ode"): 39.8}
TABLE4 = {("vp-velocity", "ode"): 39.8, ("linear-velocity", "ode"): 34.8, ("gvp-velocity", "ode"): 34.6}
TABLE5 = {  # (ODE, SDE with w_KL)
    "vp-velocity": (39.8, 37.8),
    "linear-velocity": (34.8, 33.6),
    "gvp-velocity": (34.6, 32.9),
}
TABLE6 = {  # w_KL, sigma_t, sin^2(pi t), w_KL,eta; the paper's VP score row is L_s_lambda
    "vp-velocity": (37.8, 38.7, 39.2, 41.1),
    "vp-score-lambda": (35.7, 37.1, 37.7, 38.9),
    "gvp-velocity": (32.9, 33.4, 33.6, 33.2),
    "gvp-score": (37.8, 33.5, 33.2, 33.3),
    "linear-velocity": (33.6, 33.5, 33.3, 33.0),
    "linear-score": (41.0, 35.3, 34.4, 34.9),
}
METRIC = "FID-50K (ImageNet 256, SiT-B/2, 400K steps, NFE 250)"


def paper_value(cell: str, key: str) -> float | None:
    """The paper's FID for (cell, evaluation), or None where the paper has no such number."""
    for table in (TABLE2, TABLE3, TABLE4):
        if (cell, key) in table:
            return table[(cell, key)]
    if key == "sde:kl" and cell in TABLE5:
        return TABLE5[cell][1]
    if key.startswith("sde:") and cell in TABLE6:
        w = key.split(":", 1)[1]
        names = ("kl", "sigma", "sin2", "kl_eta")
        if w in names:
            return TABLE6[cell][names.index(w)]
    return None
