"""The results report in rooms by idea; report.py is the command (`python report.py --runs-dir ...`).

runs.py       reading run folders (config.json, summary.json, metrics and mask counts, as CSVs or series.npz)
              and the success definitions
store.py      the compact form of committed results (series.npz: pack_runs.py writes it, runs.py reads it)
paper.py      the paper's numbers (paper_reference.csv) and names: tasks, exp_names, tables
arms.py       runs grouped into arms (cells), and the runs set apart
stats.py      interval estimates (rliable IQM, P(X > Y), stratified bootstrap) and the separation verdict rules
curves.py     curves interpolated onto a common step grid
markdown.py   how numbers, intervals, tables and figure links are written
tables.py     the paper's tables filled with our arms, and the tables of incomplete and set-apart runs
figures.py    every figure but the KL section's
sections/     the report's sections: the paper's tables with their figures, rank agreement, heat maps, statistics,
              vocabulary, action heads, KL early stop, code provenance
document.py   report.md from start to end: header, conventions, then the sections in order
"""
