"""Stage 2, the tables: raw responses in, tidy Parquet tables out.

Takes response files of every API version (plus manifest and subjects CSVs), flattens them as the
schema declares, and gives out the study store and its DuckDB views (`metrics`, `metrics_wide`, ...).
"""
