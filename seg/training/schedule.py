"""Learning-rate schedules over a budget that may be in steps or in minutes.

nnU-Net's poly schedule, ``lr = lr0 · (1 − step / total)^0.9``, reaches 0 at the last step, so ``total`` must be the
number of steps the run will train. With ``max_epochs`` it is known; with a wall-time budget (``--max-minutes``,
``trainer.max_time``) it is not, and a schedule over ``max_epochs`` would stop with the learning rate still high.
:class:`TimeBudget` re-estimates ``total`` every 20 steps as the steps done plus the time left divided by the
measured time per step (validation included), never beyond the epoch-based total, so the rate reaches 0 as the
time runs out. Cosine annealing uses the same budget.
"""

from __future__ import annotations

import math

import torch
from pytorch_lightning.callbacks import Callback, Timer

SCHEDULES = ("poly", "cosine", "constant")


class StepBudget:
    """The total number of steps a schedule spans (mutable: :class:`TimeBudget` updates it)."""

    def __init__(self, total: int) -> None:
        self.total = max(1, int(total))

    def poly(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.total) ** 0.9

    def cosine(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total) / self.total))


class BudgetLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` over a :class:`StepBudget`. Its state dict holds plain types only (the step, the rates), so a
    checkpoint stays loadable with ``weights_only=True``; the budget is re-derived on resume."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: str, total_steps: int) -> None:
        self.budget = StepBudget(total_steps)  # what TimeBudget updates
        super().__init__(optimizer, self.budget.poly if schedule == "poly" else self.budget.cosine)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas", "budget")}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in ("lr_lambdas", "budget")})


def budget_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int) -> BudgetLR:
    """The step-interval scheduler of ``schedule`` (poly or cosine) over ``total_steps`` (see :class:`TimeBudget`)."""
    return BudgetLR(optimizer, schedule, total_steps)


class TimeBudget(Callback):
    """Under a wall-time budget, keep each step-interval scheduler's :class:`StepBudget` at the steps the run will
    reach (module docstring); without ``max_time`` it does nothing."""

    every = 20

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is None or timer.time_remaining("train") is None or step < self.every or step % self.every:
            return
        elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train")
        reachable = step + int(remaining * step / max(elapsed, 1e-9))
        for config in trainer.lr_scheduler_configs:
            budget = getattr(config.scheduler, "budget", None)
            if budget is not None:
                budget.total = max(step + 1, min(int(trainer.estimated_stepping_batches), reachable))
