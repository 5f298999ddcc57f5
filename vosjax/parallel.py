"""Device mesh, shardings and multi-host start-up: everything about where arrays live.

One 1-D :class:`jax.sharding.Mesh` over ALL devices of all processes, axis
``"data"``. The training batch is split over it along axis 0 (each device
holds ``B / num_devices`` samples; each process feeds its own
``B / num_processes`` block, see :func:`shard_batch`). Parameters and
optimizer state are replicated, or, with FSDP, every leaf with at least
``min_size`` elements is split along its largest axis that the device count
divides (:func:`param_sharding`); XLA inserts the all-gathers /
reduce-scatters. The train step is one ``jax.jit`` with these shardings as
``in_shardings`` / ``out_shardings``, so the same program runs on 1 device, 8
forced CPU devices or several hosts and computes the same numbers (up to
floating-point summation order).

Multi-host: call :func:`initialize_distributed` first thing (before any JAX
computation). It reads ``--coordinator_address`` style arguments or the
environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``) and uses gloo collectives on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Shaped

from vosjax.errors import VosjaxError

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "fsdp_spec",
    "initialize_distributed",
    "local_batch_size",
    "make_mesh",
    "param_sharding",
    "put",
    "replicated_sharding",
    "shard_batch",
    "to_host",
]

DATA_AXIS = "data"


# ----------------------------------------------------------------------------- multi-host


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError as e:
        raise VosjaxError(f"initialize_distributed: environment variable {name}={text!r} is not an integer.") from e


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    *,
    timeout_s: int = 300,
) -> bool:
    """Join a multi-process JAX job (``jax.distributed.initialize``); False if single-process.

    Arguments left ``None`` come from ``JAX_COORDINATOR_ADDRESS`` (``host:port``
    of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. With no
    coordinator anywhere this is a no-op returning False (one process).
    Must run before any JAX computation. On CPU the cross-process
    collectives are gloo (``jax_cpu_collectives_implementation``).
    """
    fn = "initialize_distributed"
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if coordinator_address is None:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise VosjaxError(
                f"{fn}: num_processes={num_processes} / process_id={process_id} given without a "
                "coordinator; pass --coordinator_address host:port (process 0's address) or set "
                "JAX_COORDINATOR_ADDRESS."
            )
        return False
    if num_processes is None or process_id is None:
        raise VosjaxError(
            f"{fn}: coordinator {coordinator_address!r} given but num_processes={num_processes}, "
            f"process_id={process_id}; set both (--num_processes, --process_id or "
            "JAX_NUM_PROCESSES, JAX_PROCESS_ID)."
        )
    if ":" not in coordinator_address:
        raise VosjaxError(f"{fn}: coordinator_address must be host:port, got {coordinator_address!r}.")
    if not (isinstance(num_processes, int) and num_processes >= 1 and 0 <= process_id < num_processes):
        raise VosjaxError(
            f"{fn}: need num_processes >= 1 and 0 <= process_id < num_processes, got "
            f"num_processes={num_processes}, process_id={process_id}."
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=timeout_s,
        )
    except Exception as e:
        raise VosjaxError(
            f"{fn}: jax.distributed.initialize(coordinator_address={coordinator_address!r}, "
            f"num_processes={num_processes}, process_id={process_id}) failed: "
            f"{type(e).__name__}: {e}. Check that every process uses the same coordinator address "
            "and process count, that process 0 can bind the port, and that this runs before any "
            "other JAX call."
        ) from e
    return True


# ----------------------------------------------------------------------------- mesh and shardings


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all processes)."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise VosjaxError("make_mesh: no devices.")
    return Mesh(np.asarray(devs, dtype=object), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Axis 0 split over the data axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def fsdp_spec(shape: Sequence[int], num_shards: int, min_size: int) -> PartitionSpec:
    """Partition spec of one parameter under FSDP.

    Leaves with fewer than ``min_size`` elements are replicated; others are
    split along their largest axis divisible by ``num_shards`` (ties: the last
    such axis, usually the output channels); if none divides, replicated.
    """
    shape = tuple(int(s) for s in shape)
    if num_shards <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    best = None
    for axis, size in enumerate(shape):
        if size % num_shards == 0 and (best is None or size >= shape[best]):
            best = axis
    if best is None:
        return PartitionSpec()
    return PartitionSpec(*([None] * best + [DATA_AXIS]))


def param_sharding(tree: Any, mesh: Mesh, fsdp: bool = False, min_size: int = 2**16) -> Any:
    """A pytree of :class:`NamedSharding` matching ``tree`` (arrays or ``ShapeDtypeStruct``).

    Replicated unless ``fsdp``; then :func:`fsdp_spec` per leaf. Scalars are
    always replicated.
    """
    n = mesh.shape[DATA_AXIS]

    def one(x):
        shape = tuple(getattr(x, "shape", ()))
        spec = fsdp_spec(shape, n, min_size) if (fsdp and shape) else PartitionSpec()
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map(one, tree)


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
    """This process's share of a global batch; raises unless it splits evenly over devices."""
    n_dev = mesh.devices.size
    if global_batch % n_dev:
        raise VosjaxError(
            f"parallel: the global batch size {global_batch} must be a multiple of the device "
            f"count {n_dev} (the batch is split over all devices); change the batch_size of the "
            "data config."
        )
    return global_batch // jax.process_count()


def shard_batch(
    batch: Mapping[str, Shaped[np.ndarray, "b ..."]], mesh: Mesh
) -> dict[str, Shaped[jax.Array, "B ..."]]:
    """Assemble each process's block of the batch into global arrays sharded over ``"data"``.

    ``batch[k]`` is this process's ``[B / num_processes, ...]`` block (global
    batch ``B``), as :func:`vosjax.data.make_train_pipeline` yields; the result
    holds global ``[B, ...]`` arrays, process ``p``'s block at rows
    ``p * B/P .. (p + 1) * B/P - 1``.
    """
    sharding = batch_sharding(mesh)
    n_local = len(mesh.local_devices)
    out = {}
    for key, value in batch.items():
        arr = np.asarray(value)
        if arr.ndim == 0:
            raise VosjaxError(f"shard_batch: field {key!r} is a scalar; batch fields need a leading batch axis.")
        if arr.shape[0] % n_local:
            raise VosjaxError(
                f"shard_batch: field {key!r} has {arr.shape[0]} rows on this process, not a "
                f"multiple of its {n_local} local devices; make the global batch size a multiple "
                "of the device count."
            )
        global_shape = (arr.shape[0] * jax.process_count(),) + arr.shape[1:]
        out[key] = jax.make_array_from_process_local_data(sharding, arr, global_shape)
    return out


def put(tree: Any, shardings: Any) -> Any:
    """Place a pytree of host values (identical on every process) with the given shardings.

    Works for shardings that span several processes (each process keeps the
    slices its devices own).
    """

    def one(x, s):
        if isinstance(x, jax.Array) and x.sharding == s:
            return x
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.jit(lambda a: a, out_shardings=s)(x)
        arr = np.asarray(x)
        return jax.make_array_from_process_local_data(s, arr, arr.shape)

    return jax.tree_util.tree_map(one, tree, shardings)


def to_host(tree: Any) -> Any:
    """Every leaf as a NumPy array holding its GLOBAL value, on every process.

    Replicated arrays are read from a local copy; arrays split across
    processes are all-gathered.
    """
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        if x.is_fully_addressable:
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)
