"""Datasets: phenotype joins, shards (write) and streaming (read)."""

from neurofm.datasets.phenotype import join_phenotype, read_phenotype, subject_key

__all__ = ["join_phenotype", "read_phenotype", "subject_key"]
