"""mbc: de-identification, the anonymized Zarr store, ingest and research data access."""

__version__ = "0.1.0"
