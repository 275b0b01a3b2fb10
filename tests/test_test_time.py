"""Test-time breadth: selectors on hand-built trajectories, a scripted reasoner whose every trajectory
is known in advance, and real TRMs checked against one-trajectory evaluation and separate runs."""

from collections import namedtuple
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from _tiny_runs import SUDOKU4, sudoku4_dataset, tiny_model
from torch import nn

from reasoners import evaluate as ev
from reasoners import test_time as tt
from reasoners.data import to_batch
from reasoners.supervision import rollout

# ----------------------------------------------------------------------------- selectors alone


def hand_built(n_puzzles=2, K=4) -> tt.BreadthStep:
    """Two puzzles x 4 trajectories with every quantity chosen so each selector's pick is known."""
    L = 3
    preds = np.zeros((n_puzzles * K, L), dtype=np.int64)
    # puzzle 0: answers A A B B (a tie: A appears first); puzzle 1: C D D D
    for r, a in enumerate([1, 1, 2, 2, 3, 4, 4, 4]):
        preds[r] = a
    return tt.BreadthStep(
        preds=preds,
        confidence=np.array([0.1, 0.9, 0.3, 0.2, 5.0, -1.0, 0.0, 2.0]),
        convergence=np.array([0.5, 0.4, 0.01, 0.3, 0.2, 0.2, 0.1, 0.9]),
        first_halt=np.array([3, 2, 2, 4, 1, 4, 4, 4]),
        first_conf=np.array([0.0, 0.5, 0.7, 0.0, 1.0, 0.0, 0.0, 0.0]),
        halt_preds=preds,
    )


def test_selectors_pick_the_known_trajectory():
    step = hand_built()
    pick = {s: tt.select(step, 2, 4, 4, s).tolist() for s in tt.SELECTORS}
    assert pick["convergence"] == [2, 6]  # least change: row 2 (0.01), row 6 (0.1)
    assert pick["q_head"] == [1, 4]  # most confident: 0.9, 5.0
    assert pick["first_halt"] == [2, 4]  # rows 1 and 2 halt at step 2; row 2's head is surer
    assert pick["majority"] == [0, 5]  # A ties B and comes first; D has 3 votes (first at row 5)
    # only the first k trajectories take part
    assert tt.select(step, 2, 4, 2, "convergence").tolist() == [1, 4]  # ties (0.2, 0.2) go to the lower
    assert tt.select(step, 2, 4, 1, "majority").tolist() == [0, 4]
    with pytest.raises(ValueError, match="unknown selector 'best'"):
        tt.select(step, 2, 4, 4, "best")


# ----------------------------------------------------------------------------- a scripted reasoner


@dataclass
class ScriptedConfig:
    halt_max_steps: int = 4
    q_continue: bool = False


class Scripted(nn.Module):
    """A reasoner whose behaviour is set by its initial state h (B, 1, 1), zero unless perturbed.

    It answers with the label where h > 0 and with the question (wrong) otherwise; its halting logit
    is h (so it fires at step 1 where h > 0); its logits drift by |h| per step, so the trajectory
    that moves least is the one with the smallest |h|."""

    State = namedtuple("State", "h step")

    def __init__(self, vocab_size=6):
        super().__init__()
        self.config = ScriptedConfig()
        self.vocab_size = vocab_size

    def initial_state(self, batch_size, device=None):
        z = torch.zeros(batch_size, 1, 1, device=device)
        return self.State(z, z.clone())

    def forward(self, state, batch):
        h = state.h[:, 0, 0]
        step = state.step[:, 0, 0].round() + 1
        inputs, labels = batch["inputs"].long(), batch["labels"].long()
        answer = torch.where((h > 0)[:, None], labels, inputs)
        logits = 10.0 * nn.functional.one_hot(answer, self.vocab_size).float()
        logits = logits + (h.abs() * step)[:, None, None]
        q = torch.stack([h, torch.zeros_like(h)], -1)
        return self.State(state.h, step.view(-1, 1, 1)), logits, q, {}


def expected_offsets(puzzles, K, seed, sigma):
    """h of every (puzzle, trajectory), drawn here from the documented row seeds."""
    h = np.zeros((len(puzzles), K))
    for i, p in enumerate(puzzles):
        for k in range(1, K):
            g = torch.Generator().manual_seed(tt.row_seed(seed, p, k))
            h[i, k] = sigma * torch.randn((1, 1), generator=g).item()
    return h


def test_scripted_trajectories_give_every_strategy_its_known_score(tmp_path, torch_one_thread):
    sudoku4_dataset(tmp_path / "data", n=10)
    split = ev.load_test_split(tmp_path / "data", SUDOKU4)
    rows = np.arange(10)
    K, seed, sigma = 5, 7, 0.5
    r = tt.breadth_rollout(
        Scripted(),
        SUDOKU4,
        split,
        rows,
        [3],
        tt.Breadth(K, init_noise=sigma, seed=seed),
        ks=[1, 3, 5],
        batch_size=7,
    )
    h = expected_offsets(rows, K, seed, sigma)
    right = h > 0
    assert 0 < right[:, 1:].mean() < 1  # some noisy trajectories right, some wrong
    for k in (1, 3, 5):
        s = r.scores[(3, k)]
        hk, rk = h[:, :k], right[:, :k]
        assert not s["single"]["exact"].any()  # trajectory 0 is plain: h = 0, answers the question
        np.testing.assert_array_equal(s["pass_at_k"]["exact"], rk.any(1))
        np.testing.assert_array_equal(s["q_head"]["exact"], rk[np.arange(10), hk.argmax(1)])
        np.testing.assert_array_equal(s["convergence"]["exact"], rk[np.arange(10), np.abs(hk).argmin(1)])
        np.testing.assert_array_equal(s["first_halt"]["exact"], rk.any(1))  # a right one halts at step 1
        np.testing.assert_array_equal(s["majority"]["exact"], rk.sum(1) > (k - rk.sum(1)))
    assert r.calls_per_trajectory == {3: None}  # no network stacks to count


# ----------------------------------------------------------------------------- real reasoners


@pytest.fixture
def trm_split(tmp_path, torch_one_thread):
    """A tiny TRM in float64: the batch-layout comparisons below are exact, and a different batch size
    may take other kernels whose float32 rounding could flip a near-tied argmax on another CPU."""
    sudoku4_dataset(tmp_path / "data", n=12)
    return tiny_model("trm").eval().double(), ev.load_test_split(tmp_path / "data", SUDOKU4)


def test_one_plain_trajectory_is_the_ordinary_evaluation(trm_split):
    model, split = trm_split
    rows = np.arange(12)
    plain = tt.score_rollout(model, SUDOKU4, split, rows, [2, 5], batch_size=5)
    for noise in (dict(), dict(init_noise=0.7, step_noise=0.3)):  # trajectory 0 is never perturbed
        r = tt.breadth_rollout(model, SUDOKU4, split, rows, [2, 5], tt.Breadth(1, **noise), batch_size=5)
        for d in (2, 5):
            for strategy in ("single", *tt.SELECTORS, "pass_at_k"):
                got = r.scores[(d, 1)][strategy]
                want = plain.steps[d]
                for m in ("exact", "valid", "cell"):
                    np.testing.assert_array_equal(got[m], want[m], err_msg=f"{strategy} {m} at {d}")
            assert r.calls_per_trajectory[d] == plain.calls[d]
    # first to halt with one trajectory at halt_max_steps is the halting-step answer
    r = tt.breadth_rollout(model, SUDOKU4, split, rows, [4], tt.Breadth(1))
    np.testing.assert_array_equal(r.scores[(4, 1)]["first_halt"]["cell"], plain.at_halt["cell"])


def test_calls_are_counted_as_the_recursion_makes_them(trm_split):
    """TRM makes T (n + 1) network calls per supervision step (docs/reference.md, "HRM and TRM")."""
    model, split = trm_split
    c = model.config
    plain = tt.score_rollout(model, SUDOKU4, split, np.arange(12), [1, 3], batch_size=5)
    per_step = c.T_cycles * (c.n_inner + 1)
    assert plain.calls == {1: per_step, 3: 3 * per_step}
    hrm = tiny_model("hrm").eval()
    h = hrm.config
    got = tt.score_rollout(hrm, SUDOKU4, split, np.arange(12), [2], batch_size=5).calls[2]
    assert got == 2 * h.H_cycles * (h.L_cycles + 1)


def test_batched_trajectories_equal_separate_runs(trm_split):
    """K trajectories as rows of one batch give what each trajectory gives run alone over the puzzles
    with its own seeds; the batch size does not matter; the first k of a K-way run are the k-way run."""
    model, split = trm_split
    rows = np.arange(12)
    breadth = tt.Breadth(4, init_noise=0.8, step_noise=0.2, seed=3)
    one_batch = tt.breadth_rollout(model, SUDOKU4, split, rows, [3], breadth, ks=[2, 4], batch_size=256)
    small = tt.breadth_rollout(model, SUDOKU4, split, rows, [3], breadth, ks=[2, 4], batch_size=4)
    two = tt.breadth_rollout(model, SUDOKU4, split, rows, [3], tt.Breadth(2, 0.8, 0.2, 3), batch_size=8)
    for strategy, scores in one_batch.scores[(3, 4)].items():
        for m in ("exact", "valid", "cell"):
            np.testing.assert_array_equal(scores[m], small.scores[(3, 4)][strategy][m])
            np.testing.assert_array_equal(
                one_batch.scores[(3, 2)][strategy][m], two.scores[(3, 2)][strategy][m]
            )
    # each trajectory alone, through rollout, with its row generators
    batch = to_batch(split, rows)
    cell = []
    for k in range(4):
        ks = np.full(12, k)
        noise = tt.RowNoise(rows, ks, 3)
        state = tt.initial_states(model, noise, ks, 0.8, "cpu")
        perturb = tt.step_perturbation(model, noise, ks, 0.2, "cpu")
        last = list(rollout(model, batch, 3, state=state, perturb=perturb))[-1]
        preds = last.logits.argmax(-1).numpy()
        cell.append((preds == split.labels).mean(1))
    cell = np.stack(cell, 1)
    assert len(np.unique(cell.round(6), axis=1)[0]) > 1  # the noise makes the trajectories differ
    np.testing.assert_allclose(one_batch.scores[(3, 4)]["pass_at_k"]["cell"], cell.max(1))
    np.testing.assert_allclose(one_batch.scores[(3, 4)]["single"]["cell"], cell[:, 0])


def test_initial_noise_is_drawn_from_each_rows_generator(trm_split):
    model, _ = trm_split
    puzzles, ks = np.array([5, 5, 9]), np.array([0, 1, 2])
    state = tt.initial_states(model, tt.RowNoise(puzzles, ks, 11), ks, 0.5, "cpu")
    base = model.initial_state(1)
    for r, (p, k) in enumerate(zip(puzzles, ks, strict=True)):
        g = torch.Generator().manual_seed(tt.row_seed(11, p, k))
        for name, field in zip(model.State._fields, state, strict=True):
            noise = torch.randn(field.shape[1:], generator=g) if k > 0 else 0
            want = getattr(base, name)[0] + 0.5 * noise
            torch.testing.assert_close(field[r], want, rtol=0, atol=0, msg=f"row {r} {name}")


def test_bad_breadth_values_fail_clearly(trm_split):
    model, split = trm_split
    for kwargs, message in [
        (dict(trajectories=0), "number of trajectories K must be an integer >= 1, got 0"),
        (dict(trajectories=2.5), "K must be an integer"),
        (dict(init_noise=-1.0), "init_noise must be a finite number >= 0"),
        (dict(step_noise=float("inf")), "step_noise must be a finite number >= 0"),
        (dict(seed=-2), "seed must be a non-negative integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            tt.Breadth(**kwargs)
    rows = np.arange(4)
    with pytest.raises(ValueError, match="unknown selector 'vote'"):
        tt.breadth_rollout(model, SUDOKU4, split, rows, [2], tt.Breadth(2), selectors=["vote"])
    with pytest.raises(ValueError, match=r"every breadth k must be in 1..2"):
        tt.breadth_rollout(model, SUDOKU4, split, rows, [2], tt.Breadth(2), ks=[1, 4])
    with pytest.raises(ValueError, match="depths must be positive"):
        tt.breadth_rollout(model, SUDOKU4, split, rows, [0], tt.Breadth(2))


def test_convergence_score_is_eqrs(trm_split):
    """The score breadth ranks by equals EqR's own convergence score (reasoners.eqr, written from
    the reference's selector) on a real rollout's logits."""
    from reasoners.eqr import convergence_score as eqr_score

    model, split = trm_split
    outs = list(rollout(model, to_batch(split, np.arange(12)), 6))
    logits = [o.logits for o in outs]
    changes = [tt.logit_change(b, a) for a, b in zip(logits[:-1], logits[1:], strict=True)]
    for s in range(2, 7):
        np.testing.assert_allclose(
            tt.convergence_score(changes[: s - 1], 12), eqr_score(logits[:s]).numpy(), rtol=1e-5
        )


def test_eqr_rows_are_reproducible_whatever_the_batch(tmp_path, torch_one_thread):
    """EqR draws its initial state and its recursion noise; breadth and the one-trajectory evaluation
    give every row its own generators, so batching changes nothing and K = 1 is the evaluation."""
    sudoku4_dataset(tmp_path / "data", n=8)
    split = ev.load_test_split(tmp_path / "data", SUDOKU4)
    model = tiny_model("eqr").eval().double()  # float64: exact across batch layouts on any CPU
    rows = np.arange(8)
    plain = tt.score_rollout(model, SUDOKU4, split, rows, [3], batch_size=3)
    again = tt.score_rollout(model, SUDOKU4, split, rows, [3], batch_size=8)
    one = tt.breadth_rollout(model, SUDOKU4, split, rows, [3], tt.Breadth(1), batch_size=5)
    for m in ("exact", "valid", "cell"):
        np.testing.assert_array_equal(plain.steps[3][m], again.steps[3][m])
        np.testing.assert_array_equal(one.scores[(3, 1)]["single"][m], plain.steps[3][m])
    wide = tt.breadth_rollout(model, SUDOKU4, split, rows, [3], tt.Breadth(3), batch_size=256)
    narrow = tt.breadth_rollout(model, SUDOKU4, split, rows, [3], tt.Breadth(3), batch_size=3)
    for strategy, got in wide.scores[(3, 3)].items():
        np.testing.assert_array_equal(got["cell"], narrow.scores[(3, 3)][strategy]["cell"])
    assert model.noise_generator is None  # left as it was
