"""Data parallelism in torch: torch.distributed and DistributedDataParallel, one process per device, launched by torchrun.

`python -m torch_impl.train ARCH --devices N` runs torchrun's own launcher
(`torchrun --standalone --nproc-per-node N -m torch_impl.train ARCH ...`); on
several machines, run torchrun on each (docs/distributed.md). Every process
joins the process group (gloo on CPU, NCCL on GPU), takes its slice of each
global batch and trains the same model: DDP averages the gradients during
the backward pass, so each optimizer step is the single-device step on the
global batch. The twin is jax_impl/distributed.py.
"""
from __future__ import annotations

import copy
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol  # differentiable collectives (torch.distributed.nn.functional's successor)
from torch import nn

from shared.distributed import Parallel, bounded_wait, check_devices, cpu_count
from shared.errors import UserError

# The parts of a model its step calls by name, which DDP wraps one by one (replicated), each with whether a phase uses
# only part of it (then DDP must look for the unused parameters); an architecture not listed: the model itself is wrapped.
DDP_NETWORKS: dict[str, dict[str, bool]] = {
    "gan": {"generator": False, "discriminator": False},
    "aae": {"encoder": True, "decoder": False, "discriminator": False, "discriminator_cat": False},  # classification: not Q's z head
    "rnn": {"hid_fc": False, "out_fc": False},  # the batched step calls the cell's two layers, not the cell
}
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a collective's wait (process 0 evaluates while the others wait for the next step)


def launched() -> bool:
    """Whether torchrun (or a user setting its variables by hand) started this process as one of several."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def check_local_devices(devices: int, device: str) -> None:
    """More processes asked for than this machine has devices (GPUs, or CPU cores)."""
    if device != "cpu" and torch.cuda.is_available():
        check_devices(devices, torch.cuda.device_count(), "CUDA devices")
    elif device == "gpu":
        raise UserError("--device gpu: torch sees no CUDA device")
    else:
        check_devices(devices, cpu_count(), "CPU cores (one process each)")


def launch(argv: list[str], devices: int) -> None:
    """Run this training command in `devices` processes with torchrun's launcher; exit as the first failed one did.

    Each process prints its own one-line error; this one adds nothing.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun would set 1 thread per process and warn; the cores are shared out instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // devices)))
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={devices}", "--module", "torch_impl.train", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = [failure.exitcode for _, failure in sorted(e.failures.items())]
        raise SystemExit(next((c for c in codes if c > 0), 128 - min(codes))) from None


def start(devices: int | None, device: str, batchnorm: str, timeout: float) -> Parallel:
    """Join the process group if this process was launched as one of several; a Parallel either way."""
    if not launched():
        return Parallel(batchnorm=batchnorm)
    world, rank, local = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if devices not in (None, local):
        raise UserError(f"--devices {devices}: launched as one of {local} processes on this machine (torchrun's --nproc-per-node)")
    check_local_devices(local, device)
    gpu = device != "cpu" and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    with bounded_wait(timeout, f"process {rank} of {world} did not reach its peers at {address} within {timeout:g} s (--dist-timeout)"):
        dist.init_process_group("nccl" if gpu else "gloo", timeout=COLLECTIVE_TIMEOUT)
        dist.barrier()  # every peer is there
    return Parallel(replicas=world, rank=rank, processes=world, batchnorm=batchnorm)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class DistributedDataParallel(nn.parallel.DistributedDataParallel):
    """DDP whose wrapped network's attributes read through (model.hp, model.decoder), as the architectures' steps read them."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def replicated(model: nn.Module, networks: dict[str, bool], parallel: Parallel) -> nn.Module:
    """The model as a data-parallel step sees it: each of its `networks` (DDP_NETWORKS; the model itself if none) wrapped in DDP.

    DDP averages a network's gradients only when its forward runs through the
    wrapper, so a model whose step calls its parts (the GAN's generator and
    discriminator, the RNN's two layers) has each part wrapped. A network that
    a phase uses only in part (the semi-supervised AAE's classification phase
    never touches Q's z head: `networks[name]` True) needs find_unused_parameters. Per-replica
    BatchNorm statistics keep DDP's buffer broadcast before each forward: the running statistics
    are process 0's, as torch does by default. Parameters are shared with
    `model`, which the caller evaluates and saves.
    """
    if parallel.batchnorm == "global":
        sync_batchnorm(model)
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None

    def wrap(network: nn.Module, used_in_part: bool = False) -> DistributedDataParallel:
        return DistributedDataParallel(network, device_ids, forward_sync_buffers=parallel.batchnorm == "per-replica",
                                       find_unused_parameters=used_in_part)

    if not networks:
        return wrap(model)
    view = copy.copy(model)
    view._modules = dict(model._modules)  # the view's own table of children; the model keeps its own
    for name, used_in_part in networks.items():
        if getattr(model, name, None) is not None:
            view._modules[name] = wrap(getattr(model, name), used_in_part)
    return view


def mean_over_processes(losses: torch.Tensor) -> torch.Tensor:
    """The mean of every process's losses: the losses of the global batch (each process's is a mean over its slice)."""
    total = losses.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def any_process(flag: bool) -> bool:
    """Whether any process says so: every process stops after the same step."""
    value = torch.tensor([float(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gathered(values: object) -> list:
    """Every process's `values`, in rank order."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, values)
    return out


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """torch.nn.SyncBatchNorm's computation on CPU tensors, which it refuses in torch 2.13 ("expected input tensor to be on GPU").

    Train mode normalises with the mean and the biased variance of the global
    batch, every process's slice together: two sums all-reduced by torch's
    functional collectives, whose all-reduce has the all-reduce of the
    gradients for its gradient, so the backward pass is the global batch's.
    The running statistics take the global statistics (the variance unbiased
    over the global count), the same on every process. Eval mode is
    BatchNorm's.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {input.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * dist.get_world_size()
        mean = funcol.all_reduce(x.sum(dims), "sum", dist.group.WORLD) / count
        centered = x - mean.view(shape)
        var = funcol.all_reduce(centered.square().sum(dims), "sum", dist.group.WORLD) / count
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(var * (count / (count - 1)), alpha=m)
            self.num_batches_tracked.add_(1)
        return centered * torch.rsqrt(var + self.eps).view(shape) * self.weight.view(shape) + self.bias.view(shape)


def sync_batchnorm(model: nn.Module) -> None:
    """Every BatchNorm of `model` made global over the processes, in place, its parameters and buffers kept.

    torch.nn.SyncBatchNorm on GPUs; CpuSyncBatchNorm on the CPU.
    """
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, (nn.SyncBatchNorm, CpuSyncBatchNorm)):
            cls = nn.SyncBatchNorm if child.weight.is_cuda else CpuSyncBatchNorm
            synced = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            synced.weight, synced.bias = child.weight, child.bias
            synced.running_mean, synced.running_var, synced.num_batches_tracked = child.running_mean, child.running_var, child.num_batches_tracked
            synced.train(child.training)
            setattr(model, name, synced)
        else:
            sync_batchnorm(child)

