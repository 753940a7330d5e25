"""Stage 3, the analysis: the study's tables in, numbers out.

Takes a study store (`skintrack.open`) and gives out per-person trends, capture QC and the trial
statistics as DataFrames: every number in a chart, report or export is computed here.
"""
