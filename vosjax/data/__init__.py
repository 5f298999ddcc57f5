"""Data sources (synthetic videos, DAVIS / YouTube-VOS folders, static images, TFDS) and grain pipelines."""
