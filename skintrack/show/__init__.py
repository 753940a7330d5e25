"""Stage 4, showing it: the analysis's DataFrames in, figures and documents out.

Takes what `skintrack.analysis` computed and gives out matplotlib figures (PNG, SVG, PDF)
and the self-contained HTML/PDF report; no SQL and no statistics are computed here.
"""
