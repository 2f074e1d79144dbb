"""Data parallelism in JAX: one jit-compiled step over a batch sharded on a device mesh; several processes through jax.distributed.

`python -m jax_impl.train ARCH --devices N` trains on N local devices (on a
CPU, N devices that XLA simulates, `jax_num_cpu_devices`), one process; with
--coordinator, --num-processes and --process-id, several processes (one per
machine, or several on one) join through jax.distributed.initialize
(docs/distributed.md). The parameters and optimizer state are replicated on
a mesh with one axis, "data"; each global batch is sharded along it; and the
training step is the single-device one, jit-compiled: the compiler partitions
it and inserts the gradient all-reduce. The mesh's axis is of the Auto type
(classic automatic partitioning): with sharding in types (Explicit axes,
jax.make_mesh's default), the single-device code fails where a matmul
contracts over the sharded batch. The twin is torch_impl/distributed.py.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jax_impl.layers import BatchNorm
from shared.distributed import Parallel, bounded_wait, check_devices, cpu_count
from shared.errors import UserError

AXIS = "data"


def start(devices: int | None, device: str, batchnorm: str, timeout: float,
          coordinator: str | None = None, num_processes: int = 1, process_id: int = 0) -> Parallel:
    """Ask XLA for the local devices and join the other processes, before JAX starts a backend."""
    devices = devices or 1
    if coordinator is None and (num_processes != 1 or process_id != 0):
        raise UserError("--num-processes and --process-id need --coordinator HOST:PORT (process 0's address)")
    if not 0 <= process_id < num_processes:
        raise UserError(f"--process-id {process_id}: expected 0 to {num_processes - 1} (--num-processes {num_processes})")
    if device != "gpu" and devices > 1:
        check_devices(devices, cpu_count(), "CPU cores (one simulated device each)")
        try:
            jax.config.update("jax_num_cpu_devices", devices)
        except RuntimeError:  # JAX has started already in this process (a caller's): its CPU devices are what they are
            check_devices(devices, len(jax.local_devices(backend="cpu")), "CPU devices in this process, whose JAX backend has started")
    if coordinator is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        message = (f"process {process_id} of {num_processes} did not reach its peers through the coordinator {coordinator} "
                   f"within {timeout:g} s (--dist-timeout)")
        with bounded_wait(timeout, message):  # JAX's own deadline aborts the process: ours comes first
            jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=int(timeout) + 60)
    if devices > 1 and (device == "gpu" or (device == "auto" and gpus())):  # no GPU at all: select_device says so
        check_devices(devices, len(gpus()), "GPUs JAX sees")
    return Parallel(replicas=devices * num_processes, rank=process_id, processes=num_processes, batchnorm=batchnorm)


def gpus() -> list[jax.Device]:
    try:
        return jax.local_devices(backend="gpu")
    except RuntimeError:
        return []


def stop() -> None:
    if jax.process_count() > 1:
        jax.distributed.shutdown()


def make_mesh(platform: str, replicas: int) -> jax.sharding.Mesh:
    """A one-axis mesh of `replicas` devices: the first replicas / processes of each process's local devices."""
    per_process = replicas // jax.process_count()
    devices = [d for p in range(jax.process_count())
               for d in sorted((d for d in jax.devices(platform) if d.process_index == p), key=lambda d: d.id)[:per_process]]
    return jax.make_mesh((replicas,), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


class Sharding:
    """Where a data-parallel run's arrays live: the state replicated on every device, each batch split along "data"."""

    def __init__(self, mesh: jax.sharding.Mesh):
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.batch = NamedSharding(mesh, PartitionSpec(AXIS))

    @staticmethod
    def put(array: np.ndarray | jax.Array, sharding: NamedSharding) -> jax.Array:
        """A global array of `sharding` from the whole array, which every process holds (its devices take their parts)."""
        if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):  # a key array: its data, placed, then wrapped again
            return jax.random.wrap_key_data(Sharding.put(jax.random.key_data(array), sharding), impl=jax.random.key_impl(array))
        host = np.asarray(array)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def per_replica_batchnorm(model: nnx.Module, replicas: int) -> None:
    """Every BatchNorm of the model normalises each replica's slice of the batch with that slice's statistics."""
    for _, module in nnx.iter_graph(model):
        if isinstance(module, BatchNorm):
            module.replicas = replicas


def local(array: jax.Array) -> jax.Array:
    """A replicated array of several devices as this process's copy on one device; any other array as it is."""
    if len(array.sharding.device_set) > 1 and array.sharding.is_fully_replicated:
        return array.addressable_data(0)
    return array
