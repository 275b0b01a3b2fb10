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
    # locuslab/EqR states no count; this is its EqRModel built with config/train/eqr_sudoku.yaml
    # (arch/eqr.yaml + mlp_t) on Sudoku, counted with sum(p.numel() for p in model.parameters())
    assert meta_count("eqr", "7m") == 4_855_298


def eqr_count(d: int, layers: int, vocab: int, seq: int, mixer: str) -> int:
    """EqR's parameters by hand: token embedding, output head, q-head (with bias), and per block the
    mixer (attention: fused qkv + out; MLP: a SwiGLU across the sequence) and the channel SwiGLU, whose
    inner widths round 8/3 of the input up to a multiple of 256."""

    def swiglu(n: int) -> int:  # gate and up (n -> 2 * inner), down (inner -> n)
        inner = -(round(4 * n * 2 / 3) // -256) * 256
        return 3 * n * inner

    mix = 4 * d * d if mixer == "attention" else swiglu(seq)
    return 2 * vocab * d + 2 * d + 2 + layers * (mix + swiglu(d))


def test_eqr_presets_sizes():
    assert meta_count("eqr", "7m") == eqr_count(512, 2, 11, 81, "mlp")
    # no reference 27M: TRM 27m's network (8 attention layers), so TRM's and HRM's count
    assert meta_count("eqr", "27m") == eqr_count(512, 8, 11, 81, "attention") == meta_count("trm", "27m")
    assert meta_count("eqr", "7m", "maze") == eqr_count(512, 2, 6, 900, "mlp")
    tiny = build("eqr", "tiny")
    assert tiny.config.prefix_len == 0 and tiny.embed.puzzle is None and tiny.config.mixer == "mlp"
    assert not list(tiny.buffers())  # no fixed initial-state buffers (and no RoPE with the MLP mixer)


def test_chosen_presets_sizes():
    # HRM-7M has TRM-7M's two blocks (1 + 1); TRM-27M has HRM-27M's eight; the Attractor is TRM's net
    assert meta_count("hrm", "7m") == meta_count("trm", "7m")
    assert meta_count("trm", "27m") == meta_count("hrm", "27m")
    for size in ("tiny", "7m", "27m"):
        for puzzle in ("sudoku", "maze"):
            assert meta_count("attractor", size, puzzle) == meta_count("trm", size, puzzle)
    # attractor_mlp is TRM-MLP's network (equal mixers)
    for size in ("tiny", "7m"):
        for puzzle in ("sudoku", "maze"):
            assert meta_count("attractor_mlp", size, puzzle) == meta_count("trm_mlp", size, puzzle)
    assert build("attractor_mlp", "tiny").config.mixer == "mlp"
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


@pytest.mark.parametrize("model", list(PRESETS))
@pytest.mark.parametrize("d", [32, 128])
def test_tiny_presets_build_at_other_widths(model, d):
    """The scaling study's width axis (``+model.arch.d_model=d``) builds every tiny preset; a puzzle row
    set by the preset is the full width of the prefix at that width."""
    torch.manual_seed(0)
    net = build(model, "tiny", "sudoku", d_model=d)
    assert net.config.d_model == d
    if model.startswith("attractor"):  # the Attractor's puzzle row fills its prefix at every width
        assert net.embed.puzzle.table.shape[1] == net.config.prefix_len * d
    with torch.no_grad():
        out = net(
            net.initial_state(2),
            {
                "inputs": torch.ones(2, 81, dtype=torch.int32),
                "puzzle_identifiers": torch.zeros(2, dtype=torch.int32),
            },
        )
    assert out.logits.shape == (2, 81, 11) and torch.isfinite(out.logits).all()


def test_presets_reject_unknown_names_and_fields():
    with pytest.raises(ValueError, match="unknown model"):
        preset_config("gpt", "7m")
    with pytest.raises(ValueError, match="no '27m' preset"):
        preset_config("trm_mlp", "27m")
    with pytest.raises(ValueError, match="unknown puzzle"):
        preset_config("trm", "7m", "arc")
    with pytest.raises(ValueError, match="unknown TRMConfig fields: n_head"):
        preset_config("trm", "7m", n_head=4)
    with pytest.raises(ValueError, match="unknown EqRConfig fields: prefix_len"):
        preset_config("eqr", "7m", prefix_len=16)  # EqR has no puzzle prefix
    assert preset_config("trm", "tiny", "maze", seq_len=36).seq_len == 36


def test_summary_prints_every_preset(capsys):
    summary.main(["--puzzle", "sudoku"])
    out = capsys.readouterr().out
    assert "| trm | 7m | sudoku | 6,828,034 |" in out
    assert "| hrm | 27m | sudoku | 27,275,266 |" in out
    assert "| trm_mlp | 7m | sudoku | 5,028,866 |" in out
    assert "| eqr | 7m | sudoku | 4,855,298 |" in out
    assert out.count("| sudoku |") == sum(len(s) for s in PRESETS.values())
