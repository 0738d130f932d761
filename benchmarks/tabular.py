"""Imputation quality on tables: repaint impute against mean/mode, k-NN, MICE, MissForest and miceforest.

Datasets ship inside scikit-learn (no download): iris, wine, breast_cancer, diabetes; the class
of the first three is a categorical column. Missingness mechanisms, as the imputation literature
defines them (e.g. Muzellec et al. 2020, Jarrett et al. 2022):
- MCAR: every cell missing with the same probability;
- MAR: a third of the columns (never the class) stay observed; each other cell goes missing with a
  logistic probability of the observed columns (random weights), its intercept set for the rate;
- MNAR: self-masking: a cell goes missing with a logistic probability of its own value.
Each (dataset, mechanism, rate) is drawn with 5 mask seeds; every method fills the same cells.
Metrics: MAE and RMSE over the missing numeric cells, standardised by the full column's mean and
std; accuracy over the missing categorical cells; mean and 95% interval over the mask seeds.
Results are kept in benchmarks/tabular.json as they come (a stopped run resumes); the table and a
plot (benchmarks/tabular.png) go to benchmarks/RESULTS.md.

    python benchmarks/tabular.py                     # make tabular (needs the bench extra: scikit-learn)
    python benchmarks/tabular.py --only MCAR30       # one setting first
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DATASETS = ["iris", "wine", "breast_cancer", "diabetes"]
# Larger public tables that ship inside statsmodels (the bench extra; no download): fair (6,366 rows x 9, Fair's
# affairs survey) and anes96 (944 x 11, the 1996 US election survey; its vote a categorical column).
LARGER = ["fair", "anes96"]
SETTINGS = ["MCAR30", "MCAR10", "MCAR50", "MAR30", "MNAR30"]  # in the order they run
OURS = "repaint impute"  # at its defaults: the conditional model (--method conditional)
GAUSSIAN = "Gaussian base alone"  # what the conditional model's first layer reads, as an imputer of its own
METHODS = ["mean/mode", "k-NN", "MICE", "MissForest", "miceforest", GAUSSIAN, OURS]
# repaint impute with settings changed from its defaults (--methods "repaint" ...): the ablations. "repaint ...":
# the eps model sampled by RePaint (--method repaint: the default until 2026-12-03)
_RP = {"method": "repaint"}
VARIANTS = {OURS: {},
            "conditional w256": {"width": 256}, "conditional dropout 0.2": {"dropout": 0.2},
            "conditional no L1": {"l1_at_point": False}, "conditional L1 on categories too": {"l1_on_categories": True}, "conditional t=1 share 0.5": {"point_share": 0.5},
            "conditional 6000 steps": {"train_steps": 6000},
            "conditional 1 model of 3000 steps": {"members": 1, "train_steps": 3000},
            "conditional 1500 steps": {"train_steps": 1500}, "conditional 3000 steps": {"train_steps": 3000},
            "conditional dropout 0.1": {"dropout": 0.1},
            "conditional 4 members": {"members": 4}, "conditional no Gaussian base": {"gaussian_base": False}, "conditional 2 members dropout 0.2": {"dropout": 0.2},
            "conditional hide up to all cells": {"hide_max": 1.0}, "conditional hide <= 0.6": {"hide_max": 0.6},
            "conditional hide <= 0.4": {"hide_max": 0.4}, "conditional hide <= 0.3": {"hide_max": 0.3},
            "conditional hide <= 0.5": {"hide_max": 0.5}, "conditional k1": {"samples": 1},
            "conditional k20": {"samples": 20}, "conditional lr 1e-3": {"lr": 1e-3},
            "repaint": _RP, "repaint w128": {**_RP, "width": 128}, "repaint guidance 0": {**_RP, "guidance": 0.0},
            "repaint 2 rounds": {**_RP, "rounds": 2}, "repaint fast": {**_RP, "preset": "fast"},
            "repaint 1000 steps": {**_RP, "train_steps": 1000}, "repaint k20": {**_RP, "samples": 20},
            "repaint 1000 steps guidance 0": {**_RP, "train_steps": 1000, "guidance": 0.0}}
SEEDS = 5


def load_dataset(name: str):
    """(numeric array (n, p), column names, class labels as strings or None)."""
    if name in LARGER:
        import statsmodels.api as sm

        frame = getattr(sm.datasets, name).load_pandas().data
        label = {"anes96": "vote"}.get(name)
        names = [c for c in frame.columns if c != label]
        labels = None if label is None else np.array([f"class{int(v)}" for v in frame[label]])
        return frame[names].to_numpy(np.float64), names, labels
    from sklearn import datasets

    d = getattr(datasets, f"load_{name}")()
    x = np.asarray(d.data, dtype=np.float64)
    names = [str(c).replace(" ", "_") for c in d.feature_names]
    if name == "diabetes":  # a regression target: one more numeric column
        return np.column_stack([x, d.target]), names + ["target"], None
    return x, names, np.array([f"class{int(t)}" for t in d.target])


def _logistic_rate(logits: np.ndarray, rate: float) -> np.ndarray:
    """Probabilities sigmoid(logits + b), b found by bisection so that their mean is ``rate``."""
    lo, hi = -50.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(logits + mid)))).mean() < rate:
            lo = mid
        else:
            hi = mid
    return 1 / (1 + np.exp(-(logits + (lo + hi) / 2)))


def make_missing(x: np.ndarray, has_class: bool, setting: str, seed: int) -> np.ndarray:
    """(n, p + class) bool: True = missing. The class column (last, if any) is treated like the others
    under MCAR and MNAR-free: under MNAR it is missing at the rate, at random (it has no value order)."""
    rng = np.random.default_rng(seed)
    mech, rate = setting[:-2], int(setting[-2:]) / 100
    n, p = x.shape
    z = (x - x.mean(0)) / (x.std(0) + 1e-12)
    width = p + int(has_class)
    if mech == "MCAR":
        miss = rng.random((n, width)) < rate
    elif mech == "MAR":
        kept = rng.choice(p, size=max(1, p // 3), replace=False)
        miss = np.zeros((n, width), bool)
        w = rng.normal(size=(len(kept), width))
        logits = z[:, kept] @ w
        for j in range(width):
            if j in kept:
                continue
            prob = _logistic_rate(logits[:, j], rate * width / (width - len(kept)))
            miss[:, j] = rng.random(n) < prob
    elif mech == "MNAR":
        miss = np.zeros((n, width), bool)
        for j in range(p):
            prob = _logistic_rate(2.0 * rng.choice([-1, 1]) * z[:, j], rate)
            miss[:, j] = rng.random(n) < prob
        if has_class:
            miss[:, p] = rng.random(n) < rate
    else:
        raise ValueError(setting)
    for i in np.flatnonzero(miss.all(1)):  # every row keeps at least one cell
        miss[i, rng.integers(width)] = False
    for j in np.flatnonzero(miss.all(0)):
        miss[rng.integers(n), j] = False
    return miss


def baseline(method: str, x: np.ndarray, labels, miss: np.ndarray, seed: int):
    """Numeric fill (n, p) and class fill (n,) by a scikit-learn imputer; the class is one more
    numeric column of its code, rounded to the nearest class (mode for mean/mode)."""
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
    from sklearn.linear_model import BayesianRidge

    n, p = x.shape
    codes, classes = (np.unique(labels, return_inverse=True)[::-1] if labels is not None else (None, None))
    data = np.column_stack([x, codes]).astype(float) if labels is not None else x.copy()
    data[miss] = np.nan
    if method == "mean/mode":
        filled = SimpleImputer(strategy="mean").fit_transform(data)
        if labels is not None:
            filled[:, p] = SimpleImputer(strategy="most_frequent").fit_transform(data[:, p:p + 1])[:, 0]
    elif method == "k-NN":
        filled = KNNImputer(n_neighbors=5).fit_transform(_scaled(data)[0]) * _scaled(data)[2] + _scaled(data)[1]
    elif method == "MICE":
        filled = IterativeImputer(estimator=BayesianRidge(), max_iter=10, random_state=seed).fit_transform(data)
    elif method == "MissForest":
        est = ExtraTreesRegressor(n_estimators=50, random_state=seed, n_jobs=1)
        filled = IterativeImputer(estimator=est, max_iter=10, random_state=seed).fit_transform(data)
    elif method == "miceforest":
        return miceforest_fill(x, labels, miss, seed)
    else:
        raise ValueError(method)
    cls = None
    if labels is not None:
        cls = classes[np.clip(np.round(filled[:, p]), 0, len(classes) - 1).astype(int)]
    return filled[:, :p], cls


def miceforest_fill(x: np.ndarray, labels, miss: np.ndarray, seed: int, iterations: int = 5):
    """LightGBM MICE (miceforest, its defaults: one dataset, mean matching, 5 iterations; the class a pandas
    Categorical). miceforest breaks with lightgbm 4.7: the bench extra pins lightgbm<4.7."""
    import miceforest
    import pandas as pd

    n, p = x.shape
    frame = pd.DataFrame(x.copy(), columns=[f"c{j}" for j in range(p)])
    if labels is not None:
        frame["cls"] = pd.Categorical(labels)
    for j in range(frame.shape[1]):
        frame.iloc[miss[:, j], j] = np.nan
    kernel = miceforest.ImputationKernel(frame, random_state=seed, num_datasets=1)
    kernel.mice(iterations)
    out = kernel.complete_data(0)
    return out.iloc[:, :p].to_numpy(float), (out["cls"].astype(str).to_numpy() if labels is not None else None)


def _scaled(data):
    mu, sd = np.nanmean(data, 0), np.nanstd(data, 0) + 1e-12
    return (data - mu) / sd, mu, sd


def ours(x: np.ndarray, names, labels, miss: np.ndarray, seed: int, args, variant: dict):
    """repaint impute with its defaults, through its Python API (DiffusionImputer, as the command runs it): the
    table a DataFrame of floats and the class, its missing cells NaN. Returns (numbers, classes, {})."""
    p = x.shape[1]
    variant = {"samples": args.samples, "train_steps": args.train_steps, **variant}
    knobs = {k: variant.pop(k) for k in ABLATION_KNOBS if k in variant}
    imputer = _ablated(knobs)(random_state=seed, threads=args.threads, **variant)
    frame = imputer.fit_transform(_table_frame(x, names, labels, miss))
    num = frame.iloc[:, :p].to_numpy(np.float64)
    return num, (frame.iloc[:, p].astype(str).to_numpy() if labels is not None else None), {}


# The ablations' training knobs that are not DiffusionImputer parameters (nor flags): set on its options
ABLATION_KNOBS = {"dropout": "model", "lr": "train", "point_share": "train", "l1_at_point": "train",
                  "l1_on_categories": "train", "hide_max": "train"}


def _ablated(knobs: dict):
    """DiffusionImputer, or a subclass whose options carry the ablation's ``knobs``."""
    from repaint_cli import DiffusionImputer

    if not knobs:
        return DiffusionImputer

    class Ablated(DiffusionImputer):
        def options(self):
            opts = super().options()
            for k, v in knobs.items():
                setattr(getattr(opts, ABLATION_KNOBS[k]), k, v)
            return opts

    return Ablated


def _table_frame(x: np.ndarray, names, labels, miss: np.ndarray):
    """The table as the API takes it: float columns with NaN where missing, the class last (text, None where
    missing)."""
    import pandas as pd

    frame = pd.DataFrame(np.where(miss[:, :x.shape[1]], np.nan, x), columns=names)
    if labels is not None:
        frame["class"] = pd.Series(np.where(miss[:, -1], None, labels.astype(object)), dtype=object)
    return frame


def _table_file(folder: Path, x: np.ndarray, names, labels, miss: np.ndarray) -> Path:
    """The table as the command reads it: a CSV with empty missing cells, the class last."""
    n, p = x.shape
    path = folder / "t.csv"
    cols = [[repr(float(v)) for v in x[:, j]] for j in range(p)] + ([list(labels)] if labels is not None else [])
    header = names + (["class"] if labels is not None else [])
    rows = [",".join("" if miss[i, j] else cols[j][i] for j in range(len(cols))) for i in range(n)]
    path.write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    return path


def gaussian_alone(x: np.ndarray, names, labels, miss: np.ndarray, seed: int):
    """The conditional model's Gaussian base alone, no net (a Gaussian copula imputer): its shrink chosen as the
    model chooses it, each missing cell its conditional mean given the row's observed cells."""
    import torch
    from repaint_cli.tables.encoder import cell_values, decode, encode
    from repaint_cli.tables.schema import infer_columns
    from repaint_cli.tables.table_files import filled_frame, read_table
    from repaint_cli.tables.conditional import (choose_shrink, column_groups, fit_gaussian, gaussian_conditional,
                                                group_index)

    p = x.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        table = read_table(_table_file(Path(tmp), x, names, labels, miss))
    cols = infer_columns(table)
    enc, keep = encode(cell_values(table, cols), cols)
    X, K = torch.from_numpy(enc), torch.from_numpy(keep)
    group_of = group_index(column_groups(cols), X.shape[1])
    mean, cov = fit_gaussian(X, K, choose_shrink(X, K, group_of, seed=seed))
    filled = torch.where(K, X, gaussian_conditional(mean, cov, X, K.float())).numpy()
    frame = filled_frame(table, cols, decode(filled, cols))
    num = np.column_stack([frame.iloc[:, j].astype(float).to_numpy() for j in range(p)])
    return num, (frame.iloc[:, p].astype(str).to_numpy() if labels is not None else None)


def scores(x, labels, miss, num, cls):
    sd = x.std(0) + 1e-12
    m = miss[:, : x.shape[1]]
    err = ((num - x) / sd)[m]
    out = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}
    if labels is not None and miss[:, -1].any():
        out["acc"] = float((cls[miss[:, -1]] == labels[miss[:, -1]]).mean())
    return out


def summarise(results: dict) -> str:
    from quality import mean_ci

    lines = []
    for setting in SETTINGS:
        methods = METHODS + [v for v in VARIANTS if v not in METHODS and any(f"|{setting}|{v}|" in k for k in results)]
        rows = []
        for ds in DATASETS + [d for d in LARGER if any(k.startswith(f"{d}|{setting}|") for k in results)]:
            cells = []
            for m in methods:
                runs = [results.get(f"{ds}|{setting}|{m}|{s}") for s in range(SEEDS)]
                runs = [r for r in runs if r]
                if not runs:
                    cells.append("-")
                    continue
                mae = mean_ci([r["mae"] for r in runs])
                acc = [r["acc"] for r in runs if "acc" in r]
                text = f"{mae[0]:.3f} ± {mae[1]:.3f}"
                if acc:
                    a = mean_ci(acc)
                    text += f" / {a[0]:.2f}"
                cells.append(text + ("" if len(runs) == SEEDS else f" (n={len(runs)})"))
            rows.append(f"| {ds} | " + " | ".join(cells) + " |")
        if any("-" != c for r in rows for c in r.split(" | ")[1:-1]):
            lines += [f"**{setting}** (standardised MAE ± 95% interval over the mask seeds / class accuracy)", "",
                      "| dataset | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|", *rows, ""]
    return "\n".join(lines)


def synthetic_table(n: int, numeric: int = 16, categorical: int = 4, seed: int = 0):
    """Numeric columns from 4 latent factors plus noise, categorical ones thresholding a factor (lo, mid, hi);
    as (header, columns of cell strings)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    num = z @ rng.normal(size=(4, numeric)) + 0.3 * rng.normal(size=(n, numeric))
    cats = [np.where(z[:, j % 4] > 0.5, "hi", np.where(z[:, j % 4] < -0.5, "lo", "mid")) for j in range(categorical)]
    header = [f"x{j}" for j in range(numeric)] + [f"c{j}" for j in range(categorical)]
    return header, [[f"{v:.5g}" for v in num[:, j]] for j in range(numeric)] + [list(c) for c in cats]


# (rows, numeric columns, categorical columns): the cost grid, then issue 23's two speed targets
COST_TABLES = [(1000, 8, 2), (1000, 40, 10), (10000, 8, 2), (10000, 40, 10), (100000, 8, 2), (100000, 40, 10),
               (20000, 10, 0), (1000, 9, 2)]


def cost(args) -> str:
    """Wall seconds of `repaint impute` at its defaults (a process, as a user runs it) on synthetic tables with 30%
    of cells missing at random, and the time it spent training and imputing."""
    import subprocess

    lines = [f"`repaint impute t.csv --out o.csv --json --threads {args.threads}` at its defaults (the conditional "
             "model: 2 models of 1,500 to 3,000 training steps by the rows, side by side on the threads' cores; 5 "
             "samples of each). Synthetic tables: numeric columns from 4 latent factors, "
             "categorical ones (3 values) thresholding them; 30% of cells missing at random. Wall: the whole "
             "command (start, read, train, impute, write).", "",
             "| rows x columns (categorical) | wall (s) | training (s) | imputing (s) | training share | imputing share |",
             "|---|---|---|---|---|---|"]
    for n, numeric, categorical in args.cost_tables:
        header, cells = synthetic_table(n, numeric, categorical)
        p = len(header)
        miss = np.random.default_rng(1).random((n, p)) < 0.3
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "t.csv", Path(tmp) / "o.csv"
            src.write_text(",".join(header) + "\n" + "\n".join(
                ",".join("" if miss[i, j] else cells[j][i] for j in range(p)) for i in range(n)) + "\n")
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "repaint_cli", "impute", str(src), "--out", str(out), "--json",
                                "--quiet", "--threads", str(args.threads)], capture_output=True, text=True,
                               cwd=tmp, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
            wall = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(r.stderr)
        st = json.loads(r.stdout.strip().splitlines()[-1])
        tr, im = st.get("train_s", 0.0), st.get("impute_s", 0.0)
        lines.append(f"| {n:,} x {p} ({categorical}) | {wall:.1f} | {tr:.1f} | {im:.1f} | {tr / wall:.0%} | "
                     f"{im / wall:.0%} |")
        print(lines[-1], flush=True)
    lines += ["", "Training is 1,500 steps per model up to 991 rows and 3,000 from 1,888 (about 400 passes over the rows "
              "between; batches of 256 rows), so past 2,000 rows it costs the same whatever the rows; the two models "
              "train side by side on the 2 threads; "
              "imputing is one model call per row, sample and model. The Gaussian base costs one solve per row "
              "and step of the encoded width (50 columns with 10 categorical ones: 70 values), so the wide tables "
              "train about twice as long as without it (24.7 s before it, 2026-12-03) and their imputing computes it "
              "once per row and model. The last two rows are issue 23's targets: 20,000 x 10 "
              "numeric under 2 minutes on 2 cores, 1,000 x 11 mixed under 30 s (issue 33's: under 15 s)."]
    return "\n".join(lines)


def plot(path: Path, results: dict, setting: str = "MCAR30") -> None:
    """Bars of standardised MAE (mean and 95% interval) per dataset and method, for one setting."""
    import cv2

    from quality import mean_ci

    colours = [(170, 170, 170), (60, 160, 220), (80, 170, 80), (40, 40, 200), (150, 60, 150), (160, 160, 60),
               (200, 90, 30)]  # BGR, one per METHODS
    pw, ph, top = 360, 260, 40
    shown = DATASETS + [d for d in LARGER if any(k.startswith(f"{d}|{setting}|") for k in results)]
    img = np.full((ph + top + 60, pw * len(shown), 3), 255, np.uint8)
    for d, ds in enumerate(shown):
        x0 = d * pw
        cv2.putText(img, ds, (x0 + 10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        stats = []
        for m in METHODS:
            runs = [results[k]["mae"] for k in results if k.startswith(f"{ds}|{setting}|{m}|")]
            stats.append(mean_ci(runs) if runs else None)
        top_value = max((s[0] + s[1] for s in stats if s), default=1.0) * 1.1
        for i, st in enumerate(stats):
            if st is None:
                continue
            bx = x0 + 16 + i * 48
            y = lambda v: int(top + ph - v / top_value * ph)
            cv2.rectangle(img, (bx, y(st[0])), (bx + 36, y(0)), colours[i], -1)
            cv2.line(img, (bx + 18, y(st[0] - st[1])), (bx + 18, y(st[0] + st[1])), (0, 0, 0), 1)
            cv2.putText(img, f"{st[0]:.2f}", (bx, y(st[0]) - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    for i, m in enumerate(METHODS):
        cv2.rectangle(img, (20 + i * 300, ph + top + 25), (36 + i * 300, ph + top + 41), colours[i], -1)
        cv2.putText(img, m, (42 + i * 300, ph + top + 39), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"standardised MAE at {setting}, lower is better (mean, 95% interval over mask seeds)",
                (10, ph + top + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=SETTINGS, help="settings to run, e.g. MCAR30 MAR30")
    ap.add_argument("--datasets", nargs="*", default=DATASETS + LARGER)
    ap.add_argument("--methods", nargs="*", default=METHODS, help=f"of {METHODS + list(VARIANTS)}")
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--seed-from", type=int, default=0, help="skip the first mask seeds (another process runs them)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-steps", type=int, default=None, help="default: repaint impute's own")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "tabular.json"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--cost", action="store_true", help="measure training and imputation time against rows instead")
    ap.add_argument("--cost-tables", nargs="*", type=lambda v: tuple(int(x) for x in v.split("x")),
                    default=COST_TABLES, help="--cost: ROWSxNUMERICxCATEGORICAL tables, e.g. 1000x8x2")
    args = ap.parse_args(argv)
    if args.cost:
        from quality import update_results

        body = cost(args)
        update_results("tabular-cost", f"## Tables: what training and imputing cost ({datetime.date.today().isoformat()})"
                       f"\n\n`python benchmarks/tabular.py --cost --threads {args.threads}` (`make tabular`). " + body)
        return
    path = Path(args.json)
    results = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    import torch

    torch.set_num_threads(args.threads)
    for setting in args.only:
        for ds in args.datasets:
            x, names, labels = load_dataset(ds)
            for seed in range(args.seed_from, args.seeds):
                miss = make_missing(x, labels is not None, setting, seed)
                for m in args.methods:
                    key = f"{ds}|{setting}|{m}|{seed}"
                    if key in results:
                        continue
                    t0 = time.perf_counter()
                    if m in VARIANTS:
                        num, cls, _ = ours(x, names, labels, miss, seed, args, VARIANTS[m])
                    elif m == GAUSSIAN:
                        num, cls = gaussian_alone(x, names, labels, miss, seed)
                    else:
                        num, cls = baseline(m, x, labels, miss, seed)
                    r = scores(x, labels, miss, num, cls)
                    r["seconds"] = round(time.perf_counter() - t0, 2)
                    results[key] = r
                    path.write_text(json.dumps(results, indent=1))
                    print(f"{key}: MAE {r['mae']:.3f} RMSE {r['rmse']:.3f}"
                          + (f" acc {r['acc']:.2f}" if "acc" in r else "") + f" ({r['seconds']} s)", flush=True)
    for other in sorted(path.parent.glob("tabular*.json")):  # parts run in parallel (--json elsewhere)
        if other != path:
            results = {**json.loads(other.read_text()), **results}
    plot(ROOT / "benchmarks" / "tabular.png", results)
    body = "![MAE at 30% MCAR](tabular.png)\n\n" + summarise(results)
    from quality import update_results

    stamp = datetime.date.today().isoformat()
    update_results("tabular", f"## Tables: repaint impute against classic imputers ({stamp})\n\n"
                   "`python benchmarks/tabular.py` (`make tabular`). Datasets from scikit-learn (the class a "
                   "categorical column; diabetes has none) and two larger ones from statsmodels (fair: 6,366 rows x "
                   "9; anes96: 944 x 11, its vote the class), each setting with the same 5 mask seeds for every method; "
                   "MAE over the missing numeric cells in units of the column's std (± the 95% interval over the "
                   "seeds); `/ acc`: class accuracy over its missing cells; `(n=k)`: only k of the 5 seeds ran. "
                   "`repaint impute`: its defaults (the conditional model: width 128, dropout 0.4, two models "
                   "trained apart, each for 1,500 to 3,000 steps by the rows (since 2026-12-07: 3,000 for fair, "
                   "1,500 for the others; until then 3,000 from 384 rows), through the Python API "
                   "(`DiffusionImputer`) with each row's noise keyed by its label; a training row hiding a share "
                   "U(0, min(1, 14 / columns)) of "
                   "its observed cells, its first layer also reading a fitted Gaussian's conditional of every cell, "
                   "5 samples of each model averaged). The columns after it are ablations, run "
                   "where marked: `conditional no Gaussian base` is the default without that Gaussian (the default "
                   "until 2026-12-03's fifth session); `repaint ...` are `--method repaint` (the eps model sampled by "
                   "RePaint, the default until 2026-12-03: width 256, quick preset, guidance 10); the other ablations "
                   "are in the sections below and the raw files (`tabular*.json`). `Gaussian base alone`: that "
                   "fitted Gaussian as an imputer on its own, no net (each missing cell its conditional mean given the "
                   "row's observed cells; a Gaussian copula, as numbers are normal scores). MissForest: "
                   "IterativeImputer with 50 extra trees, 10 rounds; miceforest 6.0.5 (LightGBM MICE) at its "
                   "defaults (one dataset, mean matching, 5 iterations); MICE: IterativeImputer with BayesianRidge; "
                   "k-NN: KNNImputer(5) on standardised columns.\n\n" + body)
    print(body)


if __name__ == "__main__":
    main()
