"""Every preset builds; tiny ones train a step on CPU; big ones are counted on the meta device."""

from __future__ import annotations

import pytest
import torch

from reasoners import summary
from reasoners.presets import PRESETS, build, count_parameters, preset_config
from reasoners.supervision import initial_carry, train_step

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def meta_count(model: str, size: str, puzzle: str = "sudoku") -> int:
    with torch.device("meta"):
        return count_parameters(build(model, size, puzzle))


def test_reference_presets_have_reference_counts():
    assert meta_count("trm", "7m") == 6_828_034
    assert meta_count("trm_mlp", "7m") == 5_028_866
    assert meta_count("hrm", "27m") == 27_275_266


def test_chosen_presets_sizes():
    # HRM-7M has TRM-7M's two blocks (1 + 1); TRM-27M has HRM-27M's eight; the Attractor is TRM's net
    assert meta_count("hrm", "7m") == meta_count("trm", "7m")
    assert meta_count("trm", "27m") == meta_count("hrm", "27m")
    for size in ("tiny", "7m", "27m"):
        for puzzle in ("sudoku", "maze"):
            assert meta_count("attractor", size, puzzle) == meta_count("trm", size, puzzle)
    # maze: vocab 6 instead of 11 -> embedding and output head shrink by 5 * d each
    assert meta_count("trm", "7m") - meta_count("trm", "7m", "maze") == 2 * 5 * 512


@pytest.mark.parametrize("model", list(PRESETS))
def test_tiny_preset_trains_one_step_on_cpu(model):
    torch.manual_seed(0)
    net = build(model, "tiny", "sudoku").train()
    with torch.no_grad():
        net.q_head.weight.normal_()
    g = torch.Generator().manual_seed(0)
    batch = {
        "inputs": torch.randint(1, 11, (2, 81), generator=g),
        "labels": torch.randint(2, 11, (2, 81), generator=g),
        "puzzle_identifiers": torch.zeros(2, dtype=torch.int32),
    }
    carry = initial_carry(net, batch)
    carry, loss, metrics, out = train_step(net, carry, batch)
    assert out["logits"].shape == (2, 81, 11) and torch.isfinite(loss)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{model}: no gradient reaches {name}"
    assert all(s.grad_fn is None for s in carry.state)


def test_presets_reject_unknown_names_and_fields():
    with pytest.raises(ValueError, match="unknown model"):
        preset_config("gpt", "7m")
    with pytest.raises(ValueError, match="no '27m' preset"):
        preset_config("trm_mlp", "27m")
    with pytest.raises(ValueError, match="unknown puzzle"):
        preset_config("trm", "7m", "arc")
    with pytest.raises(ValueError, match="unknown TRMConfig fields: n_head"):
        preset_config("trm", "7m", n_head=4)
    assert preset_config("trm", "tiny", "maze", seq_len=36).seq_len == 36


def test_summary_prints_every_preset(capsys):
    summary.main(["--puzzle", "sudoku"])
    out = capsys.readouterr().out
    assert "| trm | 7m | sudoku | 6,828,034 |" in out
    assert "| hrm | 27m | sudoku | 27,275,266 |" in out
    assert "| trm_mlp | 7m | sudoku | 5,028,866 |" in out
    assert out.count("| sudoku |") == sum(len(s) for s in PRESETS.values())
