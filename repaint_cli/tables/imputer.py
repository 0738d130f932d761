"""``DiffusionImputer``: ``repaint impute`` as a Python object, shaped as a scikit-learn transformer.

    from repaint_cli import DiffusionImputer
    imputer = DiffusionImputer(random_state=0).fit(train_frame)
    filled = imputer.transform(test_frame)        # same index, columns and dtypes; observed cells untouched
    draws = imputer.sample(test_frame, 10)         # multiple imputation: ten completed tables

scikit-learn is not needed: the class has the methods and conventions it looks for (keyword-only
parameters stored as given, ``get_params``/``set_params``, fitted attributes ending in ``_``, tags
read only when scikit-learn asks), so it goes into a ``Pipeline`` and ``cross_val_score`` as it is.

Orchestration stays in ``impute.py`` (``fit_table`` trains, ``impute_table`` fills), the cells'
encoding in ``encoder.py``: this module turns a DataFrame or an array into a ``Table``
(typed, as a Parquet file is read) and the filled table back into what was given. Date columns
are modelled as integers in the coarsest unit that holds every observed date (days, seconds or
nanoseconds). Errors name the parameter (``samples must be at least 1``), not a flag: the tables wing
speaks in parameters (``messages.py``), and the command writes them as its flags.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .messages import TableError
from .table_files import Table

# The parameters, in the order of the signature; the command's flags map onto them (cli/impute.py).
PARAMS = ("method", "samples", "combine", "members", "train_steps", "gaussian_base", "width", "blocks", "rounds",
          "preset", "t_T", "jump_length", "jump_n_sample", "eta", "guidance", "categorical", "random_state",
          "threads", "fit_sample")
SOURCE = "X"  # what errors about the table call it
_UNITS = {"D": 86_400 * 10 ** 9, "s": 10 ** 9, "ns": 1}  # a date column's unit, coarsest first, in nanoseconds


class NotFittedError(ValueError, AttributeError):
    """transform, sample or save before fit (scikit-learn's NotFittedError is also both)."""


@dataclass
class _Input:
    """What was given (to give back the same kind, index and dtypes) and the table the encoder reads."""

    table: Table
    original: object  # the DataFrame, or the array
    is_frame: bool
    dates: dict = field(default_factory=dict)  # column name -> unit of a date column


class DiffusionImputer:
    """Fills missing cells with a small diffusion model trained on the table (``repaint impute``).

    Parameters mirror the command's flags (``--train-steps`` is ``train_steps``, ``--seed`` is
    ``random_state``); None takes the command's default. Every value is checked by :meth:`fit`, not here
    (scikit-learn's convention).

    Parameters
    ----------
    method : str, optional
        ``conditional`` (a model trained to fill hidden cells from the others), or ``repaint``, ``ddnm`` or
        ``ddim`` (an unconditional model conditioned while sampling); None: a loaded model's kind, else
        conditional.
    samples : int, default 5
        Imputations per row and model, combined by ``combine``.
    combine : {"mean", "median"}, default "mean"
        How a number's samples become one (categories: the mode).
    members : int, optional
        Models trained apart and averaged; None: 2 (conditional), 1 (the RePaint methods).
    train_steps : int, optional
        Training steps per model; None: 1,500 to 3,000 by the rows (conditional), 3,000 otherwise.
    gaussian_base : bool, optional
        Conditional: the first layer also reads a fitted Gaussian's prediction of every cell; None: on
        (off past ``conditional.BASE_MAX_DIM`` encoded values).
    width : int, optional
        The denoiser's width; None: 128 (conditional), 256 (the RePaint methods).
    blocks : int, default 3
        The denoiser's residual blocks.
    rounds : int, default 1
        Train, impute, then train again on the imputed table, this many times in all.
    preset, t_T, jump_length, jump_n_sample : optional
        The RePaint methods only: the sampling preset and its schedule's values.
    eta : float, default 0.0
        ddim only: 0 deterministic between resamplings, 1 the ancestral variance.
    guidance : float, optional
        The RePaint methods' reconstruction guidance scale; None: 10.
    categorical : sequence, default ()
        Columns (labels of a DataFrame, indices of an array) read as categories even where their cells are
        numbers.
    random_state : int, default 0
        The seed of training, of each row's noise and of ``fit_sample``'s rows.
    threads : int, optional
        CPU threads; None: the usable cores not busy now.
    fit_sample : int, optional
        Train on this many rows, drawn by ``random_state`` (every row is filled; the saved card says so);
        None: all.
    """

    def __init__(self, *, method: Optional[str] = None, samples: int = 5, combine: str = "mean",
                 members: Optional[int] = None, train_steps: Optional[int] = None,
                 gaussian_base: Optional[bool] = None, width: Optional[int] = None, blocks: int = 3,
                 rounds: int = 1, preset: Optional[str] = None, t_T: Optional[int] = None,
                 jump_length: Optional[int] = None, jump_n_sample: Optional[int] = None, eta: float = 0.0,
                 guidance: Optional[float] = None, categorical=(), random_state: int = 0,
                 threads: Optional[int] = None, fit_sample: Optional[int] = None):
        self.method, self.samples, self.combine, self.members = method, samples, combine, members
        self.train_steps, self.gaussian_base, self.width, self.blocks = train_steps, gaussian_base, width, blocks
        self.rounds, self.preset, self.t_T, self.jump_length = rounds, preset, t_T, jump_length
        self.jump_n_sample, self.eta, self.guidance, self.categorical = jump_n_sample, eta, guidance, categorical
        self.random_state, self.threads, self.fit_sample = random_state, threads, fit_sample

    # --- parameters ------------------------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters and their values (scikit-learn's convention).

        Parameters
        ----------
        deep : bool, default True
            Unused: no parameter is an estimator.

        Returns
        -------
        dict
            Parameter name -> value.
        """
        return {name: getattr(self, name) for name in PARAMS}

    def set_params(self, **params) -> "DiffusionImputer":
        """Set constructor parameters by name (scikit-learn's convention); checked at the next :meth:`fit`.

        Parameters
        ----------
        **params
            Parameter name -> new value.

        Returns
        -------
        DiffusionImputer
            This imputer.

        Raises
        ------
        ValueError
            A name that is not a parameter.
        """
        for name, value in params.items():
            if name not in PARAMS:
                raise ValueError(f"Invalid parameter {name!r} for estimator DiffusionImputer. "
                                 f"Valid parameters are: {', '.join(PARAMS)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = DiffusionImputer()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != getattr(defaults, k)]
        return f"DiffusionImputer({', '.join(changed)})"

    def options(self):
        """The parameters as ``impute.ImputeOptions`` (not checked: :meth:`fit` checks them).

        Returns
        -------
        ImputeOptions
        """
        from .impute import ImputeOptions
        from .model_config import TableModelConfig, TrainSettings

        seed = self.random_state
        return ImputeOptions(samples=self.samples, combine=self.combine, preset=self.preset, t_T=self.t_T,
                             jump_length=self.jump_length, jump_n_sample=self.jump_n_sample, method=self.method,
                             eta=self.eta, seed=seed, rounds=self.rounds, guidance=self.guidance,
                             train=TrainSettings(steps=self.train_steps, seed=seed),
                             model=TableModelConfig(width=self.width, blocks=self.blocks, members=self.members,
                                                    gaussian_base=self.gaussian_base),
                             threads=self.threads, categorical=tuple(str(c) for c in self.categorical),
                             fit_sample=self.fit_sample)

    def _checked_options(self):
        """:meth:`options`, every value checked; a bad one raises ValueError (TableError) naming the parameter."""
        from .impute import check_options

        for name in ("samples", "blocks", "rounds", "random_state", "members", "train_steps", "width", "threads",
                     "t_T", "jump_length", "jump_n_sample", "fit_sample"):
            value = getattr(self, name)
            if value is None and name not in ("samples", "blocks", "rounds", "random_state"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TableError(f"{name} must be an integer, not {value!r}")
            if value < (0 if name == "random_state" else 1):
                raise TableError(f"{name} must be at least {0 if name == 'random_state' else 1}, not {value}")
        if self.gaussian_base not in (None, True, False):
            raise TableError(f"gaussian_base must be True, False or None, not {self.gaussian_base!r}")
        if isinstance(self.categorical, str):
            raise TableError(f"categorical must be a list of column names, not the string {self.categorical!r}")
        opts = self.options()
        check_options(opts)
        return opts

    # --- fitting and filling -------------------------------------------------------------------------

    def fit(self, X, y=None) -> "DiffusionImputer":
        """Learn the columns (their kinds and encodings) and train the model on ``X``'s observed cells.

        Parameters
        ----------
        X : pandas.DataFrame or array-like of shape (rows, columns)
            The table; missing cells are NaN, None or pandas' NA.
        y : None
            Ignored (scikit-learn's convention).

        Returns
        -------
        DiffusionImputer
            This imputer, fitted.

        Raises
        ------
        TableError
            A bad parameter or table (a ValueError, one line naming the parameter or the column).
        """
        from .impute import fit_table

        opts = self._checked_options()
        given = self._read(X, fitting=True)
        fitted = fit_table(given.table, opts, _Warnings())
        self._set_fitted(given, fitted.model, fitted.columns, fitted.card)
        return self

    def transform(self, X):
        """``X`` with every missing cell filled (the mean of ``samples`` imputations; categories: the mode).

        Parameters
        ----------
        X : pandas.DataFrame or array-like
            A table with the fitted table's columns.

        Returns
        -------
        pandas.DataFrame or numpy.ndarray
            A DataFrame keeps its index, columns, dtypes and observed cells; an array comes back an array.

        Raises
        ------
        NotFittedError
            Before :meth:`fit` or :meth:`load`.
        TableError
            Columns other than the fitted ones (a ValueError, one line).
        """
        given = self._read(X, fitting=False)
        return self._give_back(given, self._fill(given).frame)

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``, the same cells, in one pass (what ``repaint impute`` runs).

        Parameters
        ----------
        X : pandas.DataFrame or array-like of shape (rows, columns)
            The table to learn from and to fill, as :meth:`fit` takes it.
        y : None
            Not used, as in :meth:`fit`.

        Returns
        -------
        pandas.DataFrame or numpy.ndarray
            ``X`` filled, as :meth:`transform` returns it; the imputer is fitted.

        Raises
        ------
        TableError
            A bad parameter or table (a ValueError, one line).
        """
        from .impute import impute_table

        opts = self._checked_options()
        given = self._read(X, fitting=True)
        result = impute_table(given.table, opts, _Warnings())
        if result.model is None:  # nothing was missing: trained now, so that later tables can be filled
            return self.fit(X)._give_back(given, result.frame)
        self._set_fitted(given, result.model, result.columns, result.card)
        return self._give_back(given, result.frame)

    def sample(self, X, n: int = 5) -> list:
        """``n`` completed copies of ``X`` (multiple imputation), each a draw of the missing cells given the
        observed ones: what ``repaint impute --samples n --draws DIR`` writes.

        Parameters
        ----------
        X : pandas.DataFrame or array-like
            A table with the fitted table's columns.
        n : int, default 5
            How many copies.

        Returns
        -------
        list
            ``n`` tables, each of ``X``'s kind (as :meth:`transform` returns it).

        Raises
        ------
        NotFittedError
            Before :meth:`fit` or :meth:`load`.
        TableError
            ``n`` below 1 or not an integer, or columns other than the fitted ones.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise TableError(f"n must be an integer of at least 1, not {n!r}")
        given = self._read(X, fitting=False)
        return [self._give_back(given, frame) for frame in self._fill(given, draws=int(n)).draws]

    def _fill(self, given: _Input, draws: int = 0):
        from .impute import impute_table

        opts = self._checked_options()
        if draws:
            opts.samples = draws
        return impute_table(given.table, opts, _Warnings(), keep_draws=bool(draws), fitted=(self.model_, self.columns_))

    def impute_table(self, table: Table, progress=None, model_path=None, saving: bool = False, draws: bool = False):
        """The command's route (cli/impute.py): fill a ``Table`` as read from a file, training on it unless
        ``model_path`` names a saved model. The imputer is fitted afterwards where a model was trained or
        loaded.

        Parameters
        ----------
        table : Table
            The table as read (``table_files.read_table``).
        progress : impute.Progress, optional
            Receives the phases, progress and warnings.
        model_path : str or Path, optional
            A saved model to fill with instead of training.
        saving : bool, default False
            The caller saves the model: its card is checked before training.
        draws : bool, default False
            Also keep each sample's completed table.

        Returns
        -------
        impute.Imputed
            The filled frame, its draws, the stats, the model and its card (for the caller to save).
        """
        from .impute import impute_table

        result = impute_table(table, self.options(), progress, model_path=model_path, saving=saving,
                              keep_draws=draws)
        if result.model is not None:
            given = _Input(table, table.frame, True)
            self._set_fitted(given, result.model, result.columns,
                             {"trained_on": str(table.path), "rows": len(table.frame)})
        return result

    def predict_table(self, train: Table, test: Table, target: str, progress=None, model_path=None,
                      saving: bool = False, draws: bool = False):
        """The command's ``--predict``: fitted on ``train`` and ``test`` without its ``target`` (or given
        ``model_path``), then the test rows filled (``impute.predict_table``); the imputer is fitted afterwards.

        Parameters
        ----------
        train, test : Table
            The training table, and the rows to predict (their ``target`` missing or absent).
        target : str
            The column to predict.
        progress, model_path, saving, draws
            As :meth:`impute_table`.

        Returns
        -------
        impute.Imputed
            The test rows filled.
        """
        from .impute import predict_table

        result = predict_table(train, test, target, self.options(), progress, model_path=model_path, saving=saving,
                               keep_draws=draws)
        if result.model is not None:
            self._set_fitted(_Input(train, train.frame, True), result.model, result.columns, result.card)
        return result

    # --- saving --------------------------------------------------------------------------------------

    def save(self, path) -> tuple[Path, Path]:
        """Write PATH.safetensors and PATH.yaml, the files ``repaint impute --save-model PATH`` writes (and
        ``--model PATH`` reads).

        Parameters
        ----------
        path : str or Path
            The files' path, with or without the ``.yaml``/``.safetensors`` suffix.

        Returns
        -------
        tuple of Path
            The weights' and the card's paths.

        Raises
        ------
        NotFittedError
            Before :meth:`fit` or :meth:`load`.
        TableError
            Nothing to save (every column of the fitted table holds one value), or files that cannot be
            written.
        """
        from .model_files import save_table_model

        self._check_fitted()
        if self.model_ is None:
            raise TableError("nothing to save: every column of the fitted table holds one value (no model)")
        extra = {**self.card_, "api": {"feature_names": hasattr(self, "feature_names_in_"), "dates": self.dates_}}
        return save_table_model(path, self.model_, self.columns_, extra)

    @classmethod
    def load(cls, path, **params) -> "DiffusionImputer":
        """A fitted imputer from files that :meth:`save` or ``repaint impute --save-model`` wrote.

        Parameters
        ----------
        path : str or Path
            The files' path, with or without the ``.yaml``/``.safetensors`` suffix.
        **params
            How it fills (samples, combine, random_state, threads...); the model's own come from its card.

        Returns
        -------
        DiffusionImputer
            Fitted: :meth:`transform` and :meth:`sample` work at once.

        Raises
        ------
        TableError
            Files that are missing or are not a table model (one line naming the file).
        """
        from .impute import CARD_TRAINING
        from .model_files import load_table_model

        model, columns, card = load_table_model(path)
        imputer = cls(**params)
        if imputer.method is None and model.cfg.kind == "eps":
            imputer.method = "repaint"
        api = card.get("api") or {}
        imputer.model_, imputer.columns_, imputer.dates_ = model, columns, dict(api.get("dates") or {})
        imputer.card_ = {k: card[k] for k in CARD_TRAINING if k in card}
        imputer.n_features_in_ = len(columns)
        if api.get("feature_names", True):
            imputer.feature_names_in_ = np.array([c.name for c in columns], dtype=object)
        return imputer

    # --- scikit-learn's conventions --------------------------------------------------------------------

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The fitted table's column names (scikit-learn's convention: a transformer keeps its columns).

        Parameters
        ----------
        input_features : None
            Ignored.

        Returns
        -------
        numpy.ndarray of str
        """
        self._check_fitted()
        return np.array([c.name for c in self.columns_], dtype=object)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "columns_")

    def __sklearn_tags__(self):
        """Read by scikit-learn only (imported here): a transformer that takes missing values, numbers and
        categories, needs no y, and gives the same result for the same random_state."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        # string=False: scikit-learn then checks that a cell neither number nor string (a dict) is refused with a
        # TypeError; strings are taken as categories all the same (tests/tables/test_imputer.py)
        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
                    input_tags=InputTags(allow_nan=True, categorical=True, string=False))

    def _check_fitted(self) -> None:
        if not hasattr(self, "columns_"):
            raise NotFittedError("This DiffusionImputer instance is not fitted yet; call fit(X) first "
                                 "(or DiffusionImputer.load(path))")

    def _set_fitted(self, given: _Input, model, columns, card: dict) -> None:
        if given.table.fmt == "frame":
            columns = _with_decimals(columns, given.table)
        self.model_, self.columns_, self.card_, self.dates_ = model, columns, card, dict(given.dates)
        self.n_features_in_ = len(columns)
        names = list(given.original.columns) if given.is_frame else None
        if names is not None and all(isinstance(c, str) for c in names):
            self.feature_names_in_ = np.array(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    # --- DataFrames and arrays in and out ----------------------------------------------------------------

    def _read(self, X, fitting: bool) -> _Input:
        """``X`` as a Table, checked: its shape, cells, and (not ``fitting``) the fitted schema."""
        import pandas as pd

        if not fitting:
            self._check_fitted()
        given = _as_frame(X)
        frame = given.original if given.is_frame else given.table.frame
        if not fitting:
            self._check_schema(frame, given.is_frame)
        dates = self.dates_ if not fitting else _date_units(frame)
        converted = frame.copy()
        for name, unit in dates.items():
            label = frame.columns[[str(c) for c in frame.columns].index(name)]
            converted[label] = _date_numbers(frame[label], unit)
        observed = ~converted.isna().to_numpy()
        if fitting:
            names = [str(c) for c in frame.columns]
            unknown = [c for c in self.categorical if str(c) not in names]
            if unknown:
                raise TableError(f"categorical names no column {unknown[0]!r}; columns: {', '.join(names)}")
            empty = [names[j] for j in range(len(names)) if not observed[:, j].any()]
            if empty:
                raise TableError(f"{SOURCE}: column '{empty[0]}' has no observed value; drop it "
                                 "(nothing to learn it from)")
        _check_cells(converted, observed)
        given.table = Table(converted, observed, Path(SOURCE), "frame")
        given.dates = dates
        return given

    def _check_schema(self, frame, is_frame: bool) -> None:
        names = [str(c) for c in frame.columns]
        if len(names) != self.n_features_in_:
            raise TableError(f"X has {len(names)} features, but DiffusionImputer is expecting "
                             f"{self.n_features_in_} features as input")
        fitted_names = hasattr(self, "feature_names_in_")
        if is_frame and all(isinstance(c, str) for c in frame.columns):
            if not fitted_names:
                warnings.warn("X has feature names, but DiffusionImputer was fitted without feature names",
                              UserWarning, stacklevel=3)
            elif names != list(self.feature_names_in_):
                raise TableError("The feature names should match those that were passed during fit: "
                                 f"{', '.join(self.feature_names_in_)}; X has {', '.join(names)}")
        elif fitted_names:
            warnings.warn("X does not have valid feature names, but DiffusionImputer was fitted with feature names",
                          UserWarning, stacklevel=3)

    def _give_back(self, given: _Input, filled):
        """The filled frame as what was given: its missing cells set in a copy of the DataFrame (dates back
        from numbers), or an array of the given array's dtype."""
        import pandas as pd

        table = given.table
        filled = filled.copy()
        for j, col in enumerate(self.columns_):  # filled numbers with the decimals of the observed ones
            miss = ~table.observed[:, j]
            if col.kind == "float" and col.decimals is not None and miss.any():
                rows = np.flatnonzero(miss)
                filled.iloc[rows, j] = [float(f"{v:.{col.decimals}f}") for v in filled.iloc[rows, j]]
        if not given.is_frame:
            return filled.to_numpy(dtype=given.original.dtype)
        out = given.original.copy()
        for j, label in enumerate(out.columns):
            miss = ~table.observed[:, j]
            if not miss.any():
                continue
            values = filled.iloc[:, j]
            name = str(label)
            if name in given.dates:
                values = _numbers_to_dates(values, given.dates[name], out[label].dtype)
            column = out[label].copy()
            column.iloc[np.flatnonzero(miss)] = values.iloc[np.flatnonzero(miss)].to_numpy()
            out[label] = column
        return out


def _with_decimals(columns: list, table: Table) -> list:
    """The float columns with the decimals their observed numbers have at most (their shortest repr; none where
    one needs an exponent), as a CSV's columns have: filled numbers are rounded to them, as the command writes
    them, which also scores better (benchmarks/RESULTS.md#csv-decimals)."""
    from dataclasses import replace

    from .schema import decimals_of

    out = []
    for j, col in enumerate(columns):
        if col.kind == "float" and col.decimals is None:
            observed = table.frame.iloc[:, j].to_numpy(dtype=object)[table.observed[:, j]]
            col = replace(col, decimals=decimals_of([repr(float(v)) for v in observed]))
        out.append(col)
    return out


class _Warnings:
    """The Progress the API gives impute.py: warnings (a constant column, a numeric column read as a category)
    as Python warnings, nothing else."""

    def log(self, msg: str, level: str = "info") -> None:
        if level == "warning":
            warnings.warn(str(msg), UserWarning, stacklevel=4)

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int = 1, **fields) -> None:
        pass

    def plan(self, phases) -> None:
        pass


def _as_frame(X) -> _Input:
    """A DataFrame as it is, anything else as a 2-D array (its object columns' numbers made numbers)."""
    import pandas as pd

    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError("DiffusionImputer does not take sparse input (a sparse matrix stores missing cells as "
                        "zeros); pass a dense array (X.toarray()) with NaN where cells are missing")
    if isinstance(X, pd.DataFrame):
        frame = X
        if frame.columns.duplicated().any():
            raise TableError(f"{SOURCE}: column '{frame.columns[frame.columns.duplicated()][0]}' appears twice; "
                             "give each column its own name")
        given = _Input(None, X, True)
    else:
        array = np.asarray(X)
        if array.ndim != 2:
            raise TableError(f"Expected a 2D array (rows x columns), got {array.ndim} dimension(s) of shape "
                             f"{array.shape}. Reshape your data: X.reshape(-1, 1) for one column")
        if np.iscomplexobj(array):
            raise TableError("Complex data not supported; give real numbers")
        frame = pd.DataFrame(array)
        if array.dtype == object:
            frame = frame.infer_objects()
        given = _Input(Table(frame, None, Path(SOURCE), "frame"), array, False)
    for axis, what in ((0, "sample(s)"), (1, "feature(s)")):  # rows, columns (scikit-learn's words)
        if frame.shape[axis] == 0:
            raise TableError(f"{SOURCE} has 0 {what} (shape={frame.shape}) while a minimum of 1 is required.")
    return given


def _check_cells(frame, observed: np.ndarray) -> None:
    """Refuse cells the encoder cannot hold: infinities, and objects that are neither numbers nor strings."""
    import pandas as pd

    for j, label in enumerate(frame.columns):
        column = frame[label]
        if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
            values = column.to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(values).any():
                raise TableError(f"{SOURCE}: column '{label}' holds an infinite value; replace it with a number, "
                                 "or with NaN to have it filled")
        elif column.dtype == object:
            for v in column.to_numpy()[observed[:, j]]:
                if not isinstance(v, (str, int, float, bool, np.generic)) and type(v).__name__ not in (
                        "Timestamp", "datetime", "date", "Decimal"):
                    raise TypeError(f"{SOURCE}: column '{label}' holds {v!r} ({type(v).__name__}): the argument "
                                    "must be a string or a number (or a boolean, a date, or missing)")


def _date_units(frame) -> dict:
    """{column name: unit} for the date columns: the coarsest unit (day, second, nanosecond) that holds every
    observed value of the column exactly."""
    import pandas as pd

    units = {}
    for label in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[label].dtype):
            ns, missing = _nanoseconds(frame[label])
            units[str(label)] = next(u for u, size in _UNITS.items() if not (ns[~missing] % size).any())
    return units


def _nanoseconds(column) -> tuple[np.ndarray, np.ndarray]:
    """A date column as int64 nanoseconds since 1970 in UTC, and where it is missing."""
    if getattr(column.dt, "tz", None) is not None:
        column = column.dt.tz_convert(None)
    return column.to_numpy(dtype="datetime64[ns]").view("int64"), column.isna().to_numpy()


def _date_numbers(column, unit: str):
    """A date column as nullable integers in ``unit`` (whole units: the imputed ones are rounded to them)."""
    import pandas as pd

    ns, missing = _nanoseconds(column)
    return pd.Series(pd.array(ns // _UNITS[unit], dtype="Int64"), index=column.index).mask(missing)


def _numbers_to_dates(values, unit: str, dtype):
    """Integers in ``unit`` back to dates of ``dtype`` (a time zone's dates: the same instants)."""
    import pandas as pd

    ns = pd.Series(pd.array(values, dtype="Int64"), index=values.index) * _UNITS[unit]
    dates = pd.to_datetime(ns, unit="ns", utc=True)
    tz = getattr(dtype, "tz", None)
    return (dates.dt.tz_convert(tz) if tz is not None else dates.dt.tz_convert(None)).astype(dtype)
