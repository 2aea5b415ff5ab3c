"""Materialise interrupt-bench episodes as a Hugging Face Hub dataset (parquet + card)."""

from dataset_builder.build import BuildReport, build_dataset

__all__ = ["BuildReport", "build_dataset"]
