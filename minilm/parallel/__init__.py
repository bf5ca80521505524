"""Distributed training over MPI: the communicator and process grid (``comm``), data
parallelism and ZeRO-1, tensor parallelism, pipeline parallelism; one GPU per rank and
collectives on device arrays (``gpu``). With one process (or without mpi4py) everything
runs unchanged."""

from .comm import (
    Communicator,
    ProcessGrid,
    Request,
    install_abort_handler,
    is_mpi_run,
    world,
)
from .data_parallel import DataParallel, LocalSGD
from .gpu import cuda_aware_mpi, local_rank, select_device, setup_rank_device
from .tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelGPT,
    VocabParallelEmbedding,
    copy_to_tp_region,
    full_state_dict,
    gather_from_tp_region,
    load_full_state_dict,
    reduce_from_tp_region,
    scatter_to_tp_region,
    tensor_parallel_block,
    tensor_parallel_gpt,
    vocab_parallel_cross_entropy,
)
from .zero import Zero1Optimizer, ZeroRedundancyOptimizer

__all__ = ["Communicator", "ProcessGrid", "Request", "install_abort_handler", "is_mpi_run",
           "world"]
__all__ += ["cuda_aware_mpi", "local_rank", "select_device", "setup_rank_device"]
__all__ += ["DataParallel", "LocalSGD", "Zero1Optimizer", "ZeroRedundancyOptimizer"]
__all__ += ["ColumnParallelLinear", "RowParallelLinear", "TensorParallelGPT",
            "VocabParallelEmbedding", "copy_to_tp_region", "full_state_dict",
            "gather_from_tp_region", "load_full_state_dict", "reduce_from_tp_region",
            "scatter_to_tp_region", "tensor_parallel_block", "tensor_parallel_gpt",
            "vocab_parallel_cross_entropy"]
from .pipeline import (  # noqa: E402
    PipelineStage,
    bubble_fraction,
    build_stage,
    format_schedule,
    make_schedule,
    partition_balanced,
    run_pipeline,
    simulate_schedule,
    sync_tied_gradients,
)
from .pipeline import full_state_dict as pipeline_full_state_dict  # noqa: E402
from .pipeline import load_full_state_dict as load_pipeline_state_dict  # noqa: E402
from .pipeline import train_step as pipeline_train_step  # noqa: E402

__all__ += ["PipelineStage", "bubble_fraction", "build_stage", "format_schedule",
            "load_pipeline_state_dict", "make_schedule", "partition_balanced",
            "pipeline_full_state_dict", "pipeline_train_step", "run_pipeline",
            "simulate_schedule", "sync_tied_gradients"]
