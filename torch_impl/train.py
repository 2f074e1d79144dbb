"""python -m torch_impl.train ARCH [flags]: train an architecture in torch (see shared/trainer.py)."""
from shared.errors import run_cli
from shared.trainer import train_main
from torch_impl.training import Backend


def main(argv: list[str] | None = None) -> dict:
    return train_main(argv, Backend)


if __name__ == "__main__":
    run_cli(main)
