"""`python -m data_gen.sudoku`: the written dataset, determinism, split hygiene, --from-csv, errors."""

from __future__ import annotations

import csv
import json

import numba
import numpy as np
import pytest

from data_gen import sudoku as G
from data_gen.format import read_public_csv, read_split
from puzzles import sudoku as S
from tests._sudoku_oracles import plain_count

CLIMB = ("--screen-iters", "1500", "--climb-iters", "3000", "--islands", "2")


SMALL = (
    "--n",
    "12",
    "--test-n",
    "6",
    "--num-aug",
    "2",
    "--screen-iters",
    "300",
    "--climb-iters",
    "500",
    "--islands",
    "1",
)


def build(tmp_path, name, *extra):
    out = tmp_path / name
    rc = G.main(["--out", str(out), "--quiet", *extra])
    assert rc == 0
    return out


def files_of(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sudoku")
    return build(tmp, "d", "--n", "40", "--test-n", "20", "--num-aug", "3", *CLIMB, "--seed", "5")


def test_written_dataset_has_the_reference_format(small_set):
    meta_fields = {
        "pad_id",
        "ignore_label_id",
        "blank_identifier_id",
        "vocab_size",
        "seq_len",
        "num_puzzle_identifiers",
        "total_groups",
        "mean_puzzle_examples",
        "total_puzzles",
        "sets",
    }
    assert json.loads((small_set / "identifiers.json").read_text()) == ["<blank>"]
    train, test = read_split(small_set / "train"), read_split(small_set / "test")
    for split, groups, per in ((train, 40, 4), (test, 20, 1)):
        meta = json.loads((small_set / ("train" if per == 4 else "test") / "dataset.json").read_text())
        assert set(meta) == meta_fields
        assert meta["vocab_size"] == 11 and meta["seq_len"] == 81 and meta["sets"] == ["all"]
        assert meta["total_groups"] == groups and meta["total_puzzles"] == groups * per
        assert split.inputs.shape == (groups * per, 81) and split.inputs.dtype == np.uint8
        assert split.labels.dtype == np.uint8 and split.puzzle_identifiers.dtype == np.int32
        assert np.array_equal(split.puzzle_indices, np.arange(groups * per + 1))
        assert np.array_equal(split.group_indices, np.arange(0, groups * per + 1, per))
        assert (split.puzzle_identifiers == 0).all()
        # tokens: 1 blank, 2..10 digits; labels have no blank; every example is a valid puzzle/solution
        puzzles = split.inputs.astype(np.int8) - 1
        sols = split.labels.astype(np.int8) - 1
        assert split.inputs.min() >= 1 and split.labels.min() >= 2
        assert S.check_solution(puzzles, sols).all()


def test_csv_matches_arrays_and_every_puzzle_is_unique(small_set):
    train = read_split(small_set / "train")
    rows = read_public_csv(small_set / "train.csv")
    assert len(rows) == 40
    originals = train.inputs[train.group_indices[:-1]].astype(np.int8) - 1
    for (src, q, a, rating, _), p in zip(rows, originals, strict=True):
        assert src in ("gridloop-easy", "gridloop-hard")
        assert q == S.format_grid(p) and rating >= 0
        assert plain_count(S.parse(q), limit=2) == 1  # independent of the library's solver
        assert S.format_grid(S.solve(q)) == a


def test_no_test_puzzle_is_a_symmetry_image_of_a_train_puzzle(small_set):
    train = [r[1] for r in read_public_csv(small_set / "train.csv")]
    test = [r[1] for r in read_public_csv(small_set / "test.csv")]
    ctrain = {c.tobytes() for c in S.canonical_form(train)}
    ctest = [c.tobytes() for c in S.canonical_form(test)]
    assert not ctrain & set(ctest)
    assert len(set(ctest)) == len(ctest) and len(ctrain) == len(train)


def test_rating_column_is_tdokus_count_on_the_stored_puzzle(small_set):
    for split in ("train", "test"):
        rows = read_public_csv(small_set / f"{split}.csv")
        assert [r[3] for r in rows] == S.rate([r[1] for r in rows]).tolist()
    stats = json.loads((small_set / "stats.json").read_text())
    assert stats["rating_source"].startswith("tdoku")
    assert set(stats["rating_reoriented"]) == {"train", "test"}


def test_reoriented_copies_keep_their_unique_solution(small_set):
    rows = read_public_csv(small_set / "test.csv")
    p, a = np.stack([S.parse(r[1]) for r in rows]), np.stack([S.parse(r[2]) for r in rows])
    q, b = S.random_symmetry(p, a, seed=3)
    assert not np.array_equal(q, p)
    for qi, bi in zip(q, b, strict=True):
        assert plain_count(qi, limit=2) == 1  # independent of the library's solver
        assert S.check_solution(qi, bi)


def test_orientation_draw_matches_the_histogram_over_images_not_one_image():
    rng = np.random.default_rng(1)
    # each candidate rates around its own level, with the spread of one orientation to the next
    level = rng.choice([0, 2, 6, 15, 30, 80], size=4000)
    images = np.maximum(0, np.round(level[:, None] * rng.lognormal(0, 0.5, (4000, 9)))).astype(int)
    idx = G.draw_by_orientations(images, 1000)
    assert len(set(idx.tolist())) == 1000
    spread = np.stack([(G.bucket_of(images[idx]) == k).mean(axis=1) for k in range(6)], axis=1)
    assert np.abs(spread.mean(axis=0) - np.asarray(G.TARGET_SHARES)).max() < 0.02
    which = G.store_orientations(images[idx])
    got = G.histogram(images[idx][np.arange(1000), which])
    for name, share in zip(G.BUCKET_NAMES, G.TARGET_SHARES, strict=True):
        assert abs(got[name] - share) < 0.005


def test_the_open_top_bucket_takes_its_least_extreme_members_first():
    # 51+ candidates at 60 (each image 55-65) and at 250: a set with 11% in 51+ takes the 60s,
    # so that an open bucket does not carry the mean far above the public one
    rng = np.random.default_rng(4)
    level = np.repeat([0, 1, 5, 15, 30, 250, 60], [300, 150, 250, 300, 500, 150, 150])
    images = np.where(level[:, None] == 60, rng.integers(55, 66, (len(level), 9)), level[:, None])
    idx = G.draw_by_orientations(images, 1000)
    top = idx[level[idx] >= 51]
    assert len(top) == 110 and (level[top] == 60).all()


def test_stats_report_histograms_on_both_scales(small_set):
    stats = json.loads((small_set / "stats.json").read_text())
    assert stats["counts"] == {"train": 40, "test": 20} and stats["examples"] == {"train": 160, "test": 20}
    hist = stats["rating_public_scale"]["train"]["histogram"]
    assert set(hist) == set(G.BUCKET_NAMES) and abs(sum(hist.values()) - 1) < 1e-6
    ratings = [r[3] for r in read_public_csv(small_set / "train.csv")]
    assert abs(np.mean(ratings) - stats["rating_public_scale"]["train"]["mean"]) < 0.6  # csv rounds
    assert stats["seed"] == 5 and stats["timings_s"]["total_s"] > 0


def test_output_is_byte_identical_across_thread_counts(tmp_path):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = build(tmp_path, "a", *SMALL)
        numba.set_num_threads(max(2, before))
        b = build(tmp_path, "b", *SMALL)
    finally:
        numba.set_num_threads(before)
    fa, fb = files_of(a), files_of(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if k == "stats.json":  # identical except the wall-clock timings
            sa, sb = json.loads(fa[k]), json.loads(fb[k])
            sa.pop("timings_s"), sb.pop("timings_s")
            sa["args"].pop("out"), sb["args"].pop("out")
            assert sa == sb
        else:
            assert fa[k] == fb[k], k
    c = build(tmp_path, "c", *SMALL, "--seed", "1")
    assert files_of(c)["train.csv"] != fa["train.csv"]


def test_small_boxes(tmp_path):
    out = build(tmp_path, "six", "--box", "2x3", "--n", "30", "--test-n", "10", "--num-aug", "2")
    train = read_split(out / "train")
    meta = json.loads((out / "train" / "dataset.json").read_text())
    assert meta["seq_len"] == 36 and meta["vocab_size"] == 8
    assert S.check_solution(
        train.inputs.astype(np.int8) - 1, train.labels.astype(np.int8) - 1, box="2x3"
    ).all()


def test_4x4_dedupes_exact_puzzles_since_symmetry_classes_are_few(tmp_path):
    out = build(tmp_path, "four", "--box", "2x2", "--n", "100", "--test-n", "50", "--num-aug", "0")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["args"]["dedupe"] == "exact"
    train = {r[1] for r in read_public_csv(out / "train.csv")}
    test = [r[1] for r in read_public_csv(out / "test.csv")]
    assert len(train) == 100 and len(set(test)) == 50 and not train & set(test)
    # symmetry dedupe cannot find 100 distinct classes of minimal 4x4 puzzles: a clear error
    argv = ["--box", "2x2", "--n", "100", "--dedupe", "symmetry", "--out", str(tmp_path / "x"), "--quiet"]
    assert G.main(argv) == 2
    assert not (tmp_path / "x").exists()


def test_resample_follows_target_and_fills_shortfalls_from_easier_buckets():
    rng = np.random.default_rng(0)
    pool = rng.choice([0, 1, 5, 15, 30, 60], size=5000)
    idx = G.resample_to_target(pool, 1000)
    got = G.histogram(pool[idx])
    for name, share in zip(G.BUCKET_NAMES, G.TARGET_SHARES, strict=True):
        assert abs(got[name] - share) < 0.002
    poor = np.array([0] * 900 + [5] * 90 + [60] * 10)  # too few hard ones
    idx = G.resample_to_target(poor, 500)
    assert len(idx) == 500 == len(set(idx.tolist()))
    assert (poor[idx] == 60).sum() == 10 and (poor[idx] == 5).sum() == 90
    with pytest.raises(ValueError, match="smaller"):
        G.resample_to_target(poor[:10], 20)


def test_from_csv_sample_splits_by_canonical_form(tmp_path, bench_sudoku_dir):
    sample = bench_sudoku_dir / "sudoku_extreme_format_sample.csv"
    out = build(
        tmp_path,
        "pub",
        "--from-csv",
        str(sample),
        "--test-n",
        "300",
        "--subsample-size",
        "200",
        "--num-aug",
        "2",
        "--min-difficulty",
        "1",
    )
    train = read_public_csv(out / "train.csv")
    test = read_public_csv(out / "test.csv")
    assert len(train) == 200 and len(test) >= 300
    assert all(r[3] >= 1 for r in train + test)
    with open(sample) as f:
        source = {row["question"]: row for row in csv.DictReader(f)}
    for src, q, a, rating, _ in train[:50]:
        assert source[q]["answer"] == a and int(source[q]["rating"]) == rating and source[q]["source"] == src
    ctrain = {c.tobytes() for c in S.canonical_form([r[1] for r in train])}
    assert not ctrain & {c.tobytes() for c in S.canonical_form([r[1] for r in test])}
    assert read_split(out / "train").inputs.shape == (600, 81)


def test_from_csv_reports_file_and_line_of_bad_rows(tmp_path, capsys):
    good = "source,question,answer,rating\n"
    row = "x,{q},{a},3\n"
    sol = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
    q = "." + sol[1:]
    bad = tmp_path / "bad.csv"
    bad.write_text(good + row.format(q=q, a=sol) + row.format(q=q[:-1], a=sol))
    assert G.main(["--from-csv", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert f"{bad}:3" in capsys.readouterr().err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(good + row.format(q=q, a="1" + sol[1:]))
    assert G.main(["--from-csv", str(wrong), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "not a valid solution" in capsys.readouterr().err
    short = tmp_path / "short.csv"
    short.write_text(good + "x,only-two\n")
    assert G.main(["--from-csv", str(short), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert f"{short}:2: expected 4 fields" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_existing_output_is_never_clobbered_and_failures_leave_nothing(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    with pytest.raises(SystemExit):
        G.main(["--out", str(out), "--n", "2", "--test-n", "1", "--quiet"])
    assert (out / "mine.txt").read_text() == "precious"
    # a failure mid-build (an unreadable CSV) leaves neither output nor temporary directories
    missing = tmp_path / "nope.csv"
    assert G.main(["--from-csv", str(missing), "--out", str(tmp_path / "new"), "--quiet"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--n", "-1"],
        ["--easy-share", "1.5"],
        ["--pool-factor", "0.5"],
        ["--subsample-size", "3"],
        ["--box", "4x4"],
        ["--samples", "0"],
        ["--samples", "2", "--keep", "3"],
        ["--orient-samples", "0"],
        ["--screen-iters", "-5"],
        ["--survivors", "1.5"],
    ],
)
def test_bad_arguments_exit_with_a_message(tmp_path, argv):
    with pytest.raises(SystemExit) as e:
        G.main(["--out", str(tmp_path / "x"), *argv])
    assert e.value.code == 2
