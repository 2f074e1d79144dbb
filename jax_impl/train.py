"""python -m jax_impl.train ARCH [flags]: train an architecture in jax (see shared/trainer.py)."""
from jax_impl.training import Backend
from shared.errors import run_cli
from shared.trainer import train_main


def main(argv: list[str] | None = None) -> dict:
    return train_main(argv, Backend)


if __name__ == "__main__":
    run_cli(main)
