"""Spark: a study's tables and queries in, the same results out, computed by Apache Spark.

`engine` runs the helpers' SQL on a Spark session (`Study.on(spark)`); `ingest` flattens a raw archive
inside Spark and commits the files it wrote to the study. Needs `pip install skintrack[spark]` and Java 17.
"""
