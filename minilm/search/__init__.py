"""Hyperparameter search: spaces, strategies (ask/tell) and the trial log.

    from minilm.search import Float, Int, Choice, Space, BayesianOptimization

    space = Space({"lr": Float(1e-4, 1e-2, log=True), "n_layers": Int(1, 4)})
    bo = BayesianOptimization(space, n_trials=20, seed=0)
    while not bo.finished:
        spec = bo.ask()
        bo.tell({**spec, "loss": objective(**spec["params"]), "status": "ok"})

``minilm.tune`` runs such a search over GPT training runs (``minilm search``).
See docs/search.md.
"""

from .bayes import (
    BayesianOptimization,
    GaussianProcess,
    expected_improvement,
    kernel,
    log_marginal_likelihood,
    normal_cdf,
    normal_pdf,
)
from .log import TrialLog, trial_record
from .space import Choice, Float, Int, Space
from .strategies import (
    GridSearch,
    Hyperband,
    RandomSearch,
    Strategy,
    SuccessiveHalving,
    hyperband_brackets,
    successive_halving_schedule,
)

__all__ = ["BayesianOptimization", "Choice", "Float", "GaussianProcess", "GridSearch",
           "Hyperband", "Int", "RandomSearch", "Space", "Strategy", "SuccessiveHalving",
           "TrialLog", "expected_improvement", "hyperband_brackets", "kernel",
           "log_marginal_likelihood", "normal_cdf", "normal_pdf", "successive_halving_schedule",
           "trial_record"]
