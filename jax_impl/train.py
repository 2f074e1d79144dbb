"""python -m jax_impl.train ARCH [flags]: train an architecture in jax (see shared/trainer.py)."""
from functools import partial

from jax_impl.training import Backend
from shared.errors import run_cli
from shared.trainer import train_main

main = partial(train_main, backend_cls=Backend)  # main(argv) -> the run's metrics.json

if __name__ == "__main__":
    run_cli(main)
