"""`sit study`: the SiT paper's design-space study (Tables 2-6, Figs. 4-5) at a chosen scale.

``cells`` names the trained models and the budget, ``run`` trains and evaluates one
(cell, seed), ``claims`` turns measured means and 95% CIs into verdicts, ``paper`` holds the
paper's numbers, ``report`` writes study.md, cells.csv/json and the figures. See docs/study.md.
"""
