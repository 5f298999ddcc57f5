"""vosjax: semi-supervised video object segmentation in JAX/Flax.

Subpackages and modules (see README.md for a tour):

- ``vosjax.ops``: pure array kernels (memory readout, window attention,
  aggregation, boxes).
- ``vosjax.learners``, ``vosjax.correction``: functional optimizers that run
  inside ``jit``.
- ``vosjax.losses``, ``vosjax.metrics``: training objectives and the DAVIS
  evaluation protocol.
- ``vosjax.models``, ``vosjax.inference``, ``vosjax.data``: networks, the
  propagation engine and the input pipelines.
"""

from vosjax.errors import VosjaxError

__version__ = "0.1.0"

__all__ = ["VosjaxError", "__version__"]
