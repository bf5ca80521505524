"""Search strategies as ask/tell objects.

Every strategy hands out trials and learns their results::

    spec = strategy.ask()     # {"trial": id, "params": {...}, "budget": b}, or None
    ...                       # train with spec["params"] for spec["budget"] steps
    strategy.tell({**spec, "loss": 3.21, "status": "ok"})    # or status "failed"
    strategy.finished         # True once every trial is asked and told

``ask()`` gives None while the strategy waits for results it needs (a rung of
successive halving) or when it has nothing more to hand out. Trial ids count up from 0
in the order trials are asked. Grid, random, successive halving and Hyperband hand out
trials that depend only on the seed and on the losses told, not on the order results
arrive; Bayesian optimisation fits its GP on the results in trial order, but what it
asks next depends on which results are in when it is asked (under MPI, on timing). A
search replayed from its log (:class:`minilm.search.TrialLog`) asks the logged trials
again. A failed trial (or a
loss that is not finite) ranks last.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .space import Space

__all__ = ["GridSearch", "Hyperband", "RandomSearch", "Strategy", "SuccessiveHalving",
           "hyperband_brackets", "successive_halving_schedule"]


def _loss_key(record: dict) -> float:
    """The loss used to rank: failed or non-finite trials rank last."""
    loss = record.get("loss")
    if record.get("status", "ok") != "ok" or loss is None or not math.isfinite(loss):
        return math.inf
    return float(loss)


class Strategy:
    """The ask/tell protocol and the bookkeeping every strategy shares: ``told`` holds
    the records told, by trial id; ``pending`` the ids asked but not yet told."""

    def __init__(self, space: Space) -> None:
        if not isinstance(space, Space):
            raise TypeError(f"{type(self).__name__}: space must be a Space, got "
                            f"{type(space).__name__}")
        self.space = space
        self.next_id = 0
        self.pending: dict[int, dict] = {}
        self.told: dict[int, dict] = {}

    def _spec(self, params: dict, budget: Any) -> dict:
        spec = {"trial": self.next_id, "params": dict(params), "budget": budget}
        self.pending[self.next_id] = spec
        self.next_id += 1
        return spec

    def ask(self) -> dict | None:
        raise NotImplementedError

    def tell(self, record: dict) -> None:
        trial = int(record["trial"])
        if trial not in self.pending:
            raise ValueError(f"{type(self).__name__}.tell: trial {trial} was not asked (or "
                             f"was told already); pending: {sorted(self.pending)}")
        del self.pending[trial]
        self.told[trial] = dict(record)
        self._told(self.told[trial])

    def _told(self, record: dict) -> None:
        """Hook: a strategy's own bookkeeping after a result arrives."""

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    def best(self) -> dict | None:
        """The told record with the lowest loss (None before any succeeds)."""
        ok = [r for r in self.told.values() if math.isfinite(_loss_key(r))]
        return min(ok, key=lambda r: (_loss_key(r), r["trial"])) if ok else None


class GridSearch(Strategy):
    """Every point of the Cartesian product of the dimensions' grids
    (:meth:`Space.grid`: ``points`` evenly spaced values per Float / Int, on the log
    scale with ``log``, every value of a Choice), in order, the last name fastest:
    prod_j |grid_j| trials, each at ``budget``."""

    def __init__(self, space: Space, points: int | dict = 3, budget: Any = None,
                 max_trials: int | None = None) -> None:
        super().__init__(space)
        self.points = space.grid(points)
        if max_trials is not None:
            self.points = self.points[:max_trials]
        self.budget = budget

    def ask(self) -> dict | None:
        if self.next_id >= len(self.points):
            return None
        return self._spec(self.points[self.next_id], self.budget)

    @property
    def finished(self) -> bool:
        return self.next_id >= len(self.points) and not self.pending


class RandomSearch(Strategy):
    """``n_trials`` points drawn independently from the space (uniform in each encoded
    coordinate: log-uniform for ``log`` dimensions) with ``np.random.default_rng(seed)``:
    the same seed gives the same trials (Bergstra & Bengio 2012)."""

    def __init__(self, space: Space, n_trials: int, seed: int = 0, budget: Any = None) -> None:
        super().__init__(space)
        if n_trials < 1:
            raise ValueError(f"RandomSearch: n_trials must be >= 1, got {n_trials}")
        self.n_trials, self.budget = int(n_trials), budget
        self.rng = np.random.default_rng(seed)

    def ask(self) -> dict | None:
        if self.next_id >= self.n_trials:
            return None
        return self._spec(self.space.sample(self.rng), self.budget)

    @property
    def finished(self) -> bool:
        return self.next_id >= self.n_trials and not self.pending


def successive_halving_schedule(n: int, min_budget: float, max_budget: float,
                                eta: float = 3) -> list[tuple[int, float]]:
    """The rungs ``[(n_i, r_i), ...]`` of successive halving::

        s     = floor(log_eta(max_budget / min_budget))
        n_i   = max(floor(n / eta^i), 1)      configurations in rung i = 0..s
        r_i   = min_budget * eta^i            budget of each

    (the last rung stops early if only one configuration is left)."""
    if eta <= 1:
        raise ValueError(f"successive halving: eta must be > 1, got {eta}")
    if not 0 < min_budget <= max_budget:
        raise ValueError(f"successive halving: need 0 < min_budget <= max_budget, got "
                         f"{min_budget}, {max_budget}")
    if n < 1:
        raise ValueError(f"successive halving: n must be >= 1, got {n}")
    s = int(math.floor(math.log(max_budget / min_budget) / math.log(eta) + 1e-9))
    rungs = []
    for i in range(s + 1):
        n_i = max(int(math.floor(n / eta ** i + 1e-9)), 1)
        rungs.append((n_i, min_budget * eta ** i))
        if n_i == 1:
            break
    return rungs


def _budget(r: float, integer: bool) -> Any:
    return int(round(r)) if integer else float(r)


class SuccessiveHalving(Strategy):
    """Successive halving (Jamieson & Talwalkar 2016): sample ``n`` configurations, train
    each for ``min_budget``, keep the best ``floor(n_i / eta)`` of each rung, multiply
    their budget by ``eta``, until ``max_budget`` (see
    :func:`successive_halving_schedule`). ``n`` defaults to ``eta^s``. Each rung trains
    its survivors again from scratch at the larger budget (a new trial id). Budgets are
    integers (training steps) when ``min_budget`` is an int."""

    def __init__(self, space: Space, min_budget: float, max_budget: float, eta: float = 3,
                 n: int | None = None, seed: int = 0, configs: list | None = None,
                 integer: bool | None = None) -> None:
        super().__init__(space)
        s = int(math.floor(math.log(max_budget / min_budget) / math.log(eta) + 1e-9)) \
            if eta > 1 and 0 < min_budget <= max_budget else 0
        n = n if n is not None else (len(configs) if configs is not None else
                                     int(round(eta ** s)))
        self.rungs = successive_halving_schedule(n, min_budget, max_budget, eta)
        self.eta = eta
        # integer budgets (training steps): each rung's budget is rounded only when it is
        # handed out, so the last rung is exactly max_budget
        self.integer = (isinstance(min_budget, int) and isinstance(max_budget, int)
                        if integer is None else bool(integer))
        rng = np.random.default_rng(seed)
        self.configs = list(configs) if configs is not None else [space.sample(rng)
                                                                  for _ in range(n)]
        self.rung = 0
        self.queue: list[int] = list(range(len(self.configs)))  # config indices to run now
        self.results: dict[int, dict] = {}  # config index -> record (current rung)
        self.trial_config: dict[int, int] = {}  # trial id -> config index

    def ask(self) -> dict | None:
        if not self.queue or self.rung >= len(self.rungs):
            return None
        c = self.queue.pop(0)
        budget = _budget(self.rungs[self.rung][1], self.integer)
        spec = self._spec(self.configs[c], budget)
        spec["rung"] = self.rung
        self.trial_config[spec["trial"]] = c
        return spec

    def _told(self, record: dict) -> None:
        c = self.trial_config[int(record["trial"])]
        self.results[c] = record
        if self.queue or self.pending:
            return  # the rung is not complete
        self.rung += 1
        if self.rung >= len(self.rungs):
            return
        keep = self.rungs[self.rung][0]
        ranked = sorted(self.results, key=lambda i: (_loss_key(self.results[i]),
                                                     self.results[i]["trial"]))
        self.queue = ranked[:keep]
        self.results = {}

    @property
    def finished(self) -> bool:
        return self.rung >= len(self.rungs) and not self.pending


def hyperband_brackets(min_budget: float, max_budget: float,
                       eta: float = 3) -> list[tuple[int, float]]:
    """The brackets ``[(n, r), ...]`` of Hyperband (Li et al. 2017), with budgets in
    units of ``min_budget``, ``R = max_budget / min_budget``::

        s_max = floor(log_eta R),   B = (s_max + 1) R
        for s = s_max, ..., 0:
            n = ceil(B / R * eta^s / (s + 1))    configurations
            r = R eta^-s                         first budget (times min_budget)

    each bracket being successive halving from (n, r) up to R."""
    if eta <= 1:
        raise ValueError(f"Hyperband: eta must be > 1, got {eta}")
    if not 0 < min_budget <= max_budget:
        raise ValueError(f"Hyperband: need 0 < min_budget <= max_budget, got {min_budget}, "
                         f"{max_budget}")
    R = max_budget / min_budget
    s_max = int(math.floor(math.log(R) / math.log(eta) + 1e-9))
    B = (s_max + 1) * R
    out = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil(B / R * eta ** s / (s + 1) - 1e-9))
        out.append((n, min_budget * R * eta ** -s))
    return out


class Hyperband(Strategy):
    """Hyperband (Li et al. 2017): the brackets of :func:`hyperband_brackets`, each a
    :class:`SuccessiveHalving` from ``n`` configurations at budget ``r`` to
    ``max_budget``, run one after the other (a bracket starts when the last one has
    finished, so that the trials asked depend only on the losses told). The most
    aggressive bracket (many configurations, small budget) comes first; the last is a
    plain random search at the full budget."""

    def __init__(self, space: Space, min_budget: float, max_budget: float, eta: float = 3,
                 seed: int = 0) -> None:
        super().__init__(space)
        self.integer = isinstance(min_budget, int) and isinstance(max_budget, int)
        self.brackets = hyperband_brackets(min_budget, max_budget, eta)
        self.eta, self.max_budget, self.seed = eta, max_budget, seed
        self.bracket = 0
        self.current = self._halving(0)
        self.trial_bracket: dict[int, tuple[int, int]] = {}  # our id -> (bracket, its id)

    def _halving(self, b: int) -> SuccessiveHalving:
        n, r = self.brackets[b]  # r unrounded: rounding it first could drop the last rung
        return SuccessiveHalving(self.space, float(r), float(self.max_budget), self.eta, n=n,
                                 seed=self.seed * 1009 + b, integer=self.integer)

    def ask(self) -> dict | None:
        while self.bracket < len(self.brackets):
            inner = self.current.ask()
            if inner is not None:
                spec = self._spec(inner["params"], inner["budget"])
                spec.update(bracket=self.bracket, rung=inner["rung"])
                self.trial_bracket[spec["trial"]] = (self.bracket, inner["trial"])
                return spec
            if not self.current.finished:
                return None  # waiting for this bracket's rung
            self.bracket += 1
            if self.bracket < len(self.brackets):
                self.current = self._halving(self.bracket)
        return None

    def _told(self, record: dict) -> None:
        b, inner = self.trial_bracket[int(record["trial"])]
        self.current.tell({**record, "trial": inner})

    @property
    def finished(self) -> bool:
        if self.pending:
            return False
        return self.bracket >= len(self.brackets) or (
            self.bracket == len(self.brackets) - 1 and self.current.finished)
