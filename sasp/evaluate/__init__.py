"""``sasp compare``: evaluate a baseline and a SasP arm on the same samples.

    from sasp.evaluate import Arm, Prediction, compare

    summary = compare(reader, [Arm("lisa", predict_off, {...}), Arm("lisa+sasp", predict_on, {...})],
                      "runs/reasonseg_val", batch_size=4, num_workers=4)
    summary.delta_giou, summary.delta_giou_ci

Rows go to ``out_dir`` as they are computed (a killed run resumes where it stopped); under
``torchrun`` each process takes every world_size-th sample and rank 0 merges. See
``sasp.evaluate.harness`` for the flow, ``sasp.metrics`` for the definitions.
"""
from .arms import Arm, ArmError, Prediction, Predictor, arms_from_factory, check_arms, load_entry_point
from .harness import LimitedReader, compare, finish, fingerprint_of
from .rows import RunError, RunMismatchError
from .stats import ArmStats, Summary, paired_bootstrap, summarize

__all__ = [
    "Arm",
    "ArmError",
    "ArmStats",
    "LimitedReader",
    "Prediction",
    "Predictor",
    "RunError",
    "RunMismatchError",
    "Summary",
    "arms_from_factory",
    "check_arms",
    "compare",
    "finish",
    "fingerprint_of",
    "load_entry_point",
    "paired_bootstrap",
    "summarize",
]
