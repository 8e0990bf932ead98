"""The flags of a multi-process run, shared by ``grnn fit-gmm`` and ``grnn train``:
``--coordinator``, ``--num-processes``, ``--process-id`` and ``--timeout``."""

from __future__ import annotations

from grnn_jax.em import distributed


def add_process_flags(group) -> None:
    """Adds the four flags to an argparse parser or argument group."""
    group.add_argument("--coordinator", help="HOST:PORT of process 0: join a multi-process run; 'auto' "
                                             "takes it from SLURM, Open MPI or a Cloud TPU (docs/scaling.md)")
    group.add_argument("--num-processes", type=int, default=None, help="processes in the run")
    group.add_argument("--process-id", type=int, default=None, help="this process's id, 0..num-processes-1")
    group.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for the coordinator and the other processes (default 60)")


def check_process_flags(args) -> bool:
    """True when the flags ask for a multi-process run; a one-line ValueError when they are
    incomplete or out of range. Touches neither JAX nor the network."""
    multi = (args.coordinator, args.num_processes, args.process_id)
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds; got {args.timeout}")
    if args.coordinator == "auto":
        return True
    if all(v is None for v in multi):
        return False
    if any(v is None for v in multi):
        raise ValueError("a multi-process run needs all of --coordinator HOST:PORT, --num-processes P "
                         "and --process-id I")
    distributed.parse_coordinator(args.coordinator)
    if args.num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1; got {args.num_processes}")
    if not 0 <= args.process_id < args.num_processes:
        raise ValueError(f"--process-id {args.process_id} must be in 0..{args.num_processes - 1} "
                         f"for --num-processes {args.num_processes}")
    return True


def join(args) -> None:
    """Joins the run the flags describe (:func:`grnn_jax.em.distributed.initialize`); call it
    after every check of files and flags, before any JAX computation."""
    distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout=args.timeout)
