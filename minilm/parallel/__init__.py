"""Distributed training over MPI: the communicator and process grid (``comm``), data
parallelism and ZeRO-1, tensor parallelism, pipeline parallelism. With one process (or
without mpi4py) everything runs unchanged."""

from .comm import (
    Communicator,
    ProcessGrid,
    Request,
    install_abort_handler,
    is_mpi_run,
    world,
)

__all__ = ["Communicator", "ProcessGrid", "Request", "install_abort_handler", "is_mpi_run",
           "world"]
