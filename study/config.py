"""A study's YAML config, validated into frozen dataclasses before anything runs.

Every problem is one `ConfigError` naming the file, the key and the value. Relative
paths resolve against the current directory; `{workdir}` expands to `--workdir`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from analysis.store import default_uri
from search_spaces import SPACE_METHODS, SPACES, space_keys
from study.config_reader import (
    ABSENT, Reader, UniqueKeyLoader, apply_overrides, byte_count, config_diff, existing_file, expand, model_name,
    models_checked_last, name_overrides, set_options,
)
from trainables.errors import ConfigError
from trainables.hparams import HParams, for_method
from trainables.methods import (  # torch-free
    METHODS, ablatable_options, baseline_method, check_method, method_names, needs_teachers,
    takes_unlabeled_rows,
)

# a study's stages in the order they run (budget: only with students.hparams.min_steps: auto)
STAGES = ("teachers", "budget", "sweep", "grid", "ablations")
OPTIONAL_STAGES = ("budget",)  # shown only where a study has them
READER_KINDS = ("folder", "ffpp", "celebdf", "deepfakebench", "synthetic")
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
PAIR_RE = re.compile(r"^\s*([^-→>]+?)\s*(?:->|→)\s*(\S+)\s*$")
SECTIONS = {
    "name", "description", "data", "teachers", "students", "sweep", "grid", "ablations", "budget",
    "resources", "tracking_uri", "storage_path", "max_failures", "evaluate",
}
VIDEO_RULES = ("mean", "max")  # trainables.metrics.VIDEO_RULES (importing it loads numpy and sklearn)
EVAL_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")  # it names metrics: cross_<name>_auc


@dataclass(frozen=True)
class TeacherConfig:
    name: str
    arch: str
    hparams: Mapping[str, Any]  # HParams fields (method is always vt)
    checkpoint: str | None = None  # reuse this file instead of training
    weights: str | None = None  # initial weights (e.g. ImageNet) from a local file


@dataclass(frozen=True)
class Pair:
    teachers: tuple[str, ...]  # teacher names; several = ensemble
    student: str  # model name

    @property
    def label(self) -> str:
        return f"{'+'.join(self.teachers)}->{self.student}"


# where a student's unlabeled transfer set comes from: trainables.data.transfer.SOURCES (importing
# it loads torch)
TRANSFER_SOURCES = ("train_unlabeled", "sbi")


@dataclass(frozen=True)
class TransferConfig:
    """`students.transfer`: images beside each distilling student's subset that only its
    distillation term sees (trainables/data/transfer.py); VT trials never have one."""
    source: str  # train_unlabeled: more train images, other videos; sbi: from the subset's real images
    size: int  # images in the set (the volume still counts the labelled ones)


@dataclass(frozen=True)
class EvalDataset:
    """One dataset of `evaluate.datasets`: every teacher and grid trial is scored on its test split."""
    name: str  # metric prefix: cross_<name>_<metric>
    data: Mapping[str, Any]  # reader spec, as `data` takes it (without the study's run keys)


@dataclass(frozen=True)
class EvaluateConfig:
    """`evaluate`: cross-dataset scoring after training, never read to choose anything."""
    datasets: tuple[EvalDataset, ...] = ()
    video_rule: str = "mean"  # a video's fake probability: the mean (DeepfakeBench) or max of its frames'
    frames_per_video: int = 32  # frames scored per video, evenly spaced (DeepfakeBench's count)


@dataclass(frozen=True)
class ArmConfig:
    """One arm of `students.arms`: the grid runs every method, volume, draw and seed once per arm,
    with the arm's hyperparameters over `students.hparams` and its own transfer set (or none)."""
    name: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    transfer: TransferConfig | None = None


ARM_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class StudentsConfig:
    pairs: tuple[Pair, ...]
    methods: tuple[str, ...]
    volumes: tuple[int, ...]
    seeds: tuple[int, ...]
    hparams: Mapping[str, Any]
    weights: Mapping[str, str] = field(default_factory=dict)  # student model -> initial weights file
    # which images form a subset, beside `seeds` (initial weights and training order): a cell runs
    # draws x seeds. Empty: each seed also draws its subset (draw = seed), as before draws existed
    draws: tuple[int, ...] = ()
    auto_budget: bool = False  # hparams.min_steps: auto (the budget stage finds it per volume)
    transfer: TransferConfig | None = None  # students.transfer; None: labelled images only
    arms: tuple[ArmConfig, ...] = ()  # students.arms: the grid once per arm; empty: one grid as configured

    def draw_seed_pairs(self) -> list[tuple[int, int]]:
        """(draw, seed) of every run of a grid cell."""
        if not self.draws:
            return [(seed, seed) for seed in self.seeds]
        return [(draw, seed) for draw in self.draws for seed in self.seeds]


@dataclass(frozen=True)
class BudgetConfig:
    """`students.hparams.min_steps: auto`: per volume, every grid method trained at doubling
    budgets (start_steps, 2x, 4x, ... up to max_steps) on `seeds`, scored on validation only,
    until doubling gains less than `tol` in `metric` (mean over seeds); the volume's budget is
    the largest of its methods' so that all are compared where all have converged."""
    start_steps: int = 50
    max_steps: int = 3200
    seeds: tuple[int, ...] = (0, 1, 2)
    tol: float = 0.01
    metric: str = "val_auc"
    volumes: tuple[int, ...] = ()  # default: students.volumes
    max_eval_per_class: int | None = None  # the validation rows it scores (default: the grid's cap)


@dataclass(frozen=True)
class SweepConfig:
    spaces: Mapping[str, str]  # method -> space name
    trials: int = 8
    volumes: tuple[int, ...] = ()
    seed: int = 0
    metric: str = "val_auc"
    scheduler: str = "asha"  # asha | fifo
    grace_period: int = 2
    max_eval_per_class: int | None = None
    storage: str | None = None  # sweep.storage: the Optuna RDB storage URL (None: optuna.db beside mlflow.db)


GRID_HPARAMS = ("sweep", "paper", "from_run")


@dataclass(frozen=True)
class GridConfig:
    enabled: bool = True
    # sweep: the sweep's best on validation; paper: the paper's fixed values for every method;
    # from_run: the values an earlier study recorded on its parent run (`from_run`)
    hparams: str = "sweep"
    untuned: tuple[str, ...] = ()  # with `sweep`: methods that take the paper's values (marked †)
    from_run: str | None = None  # parent run id whose chosen_hparams.json the grid uses
    # grid and ablation trials' per-epoch validation set, capped per class (the test set is whole)
    max_val_per_class: int | None = None


# seeds per ablation point: Fig. 2 and Fig. 4 draw each point's mean with its Student-t 95 %
# interval, which needs n >= 2 and at n = 2 is ±12.7 standard errors wide
MIN_ABLATION_SEEDS = 3


@dataclass(frozen=True)
class Vary:
    """One ablation of `ablations.vary`: `method`'s `option` at each of `values`."""

    method: str
    option: str
    values: tuple[Any, ...]

    @property
    def key(self) -> str:
        return f"{self.method}.{self.option}"


@dataclass(frozen=True)
class AblationsConfig:
    vary: tuple[Vary, ...] = ()  # ablations of declared options (the paper's Fig. 4: CKD's k)
    vary_volumes: tuple[int, ...] = ()  # default: the students' volumes
    vary_seeds: tuple[int, ...] = (0, 1, 2)  # at least MIN_ABLATION_SEEDS: a point's 95 % interval needs n >= 2
    efficiency_volumes: tuple[int, ...] = ()
    efficiency_students: tuple[str, ...] = ()
    efficiency_seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0
    loader_workers: int = 2  # DataLoader processes decoding a streamed teacher split (0: in the trial)
    memory: int | None = None  # bytes of RAM each trial reserves in Ray's scheduler (None: no reservation)
    # a teacher trial's CPUs and GPUs (default: cpu, gpu): the teachers' stage runs a few long
    # trials, one per teacher, which may use a node's cores that the students' many trials share
    teacher_cpu: float | None = None
    teacher_gpu: float | None = None

    def for_teachers(self) -> "Resources":
        return dataclasses.replace(self, cpu=self.teacher_cpu or self.cpu,
                                   gpu=self.gpu if self.teacher_gpu is None else self.teacher_gpu)


@dataclass(frozen=True)
class StudyConfig:
    name: str
    path: str  # the YAML file it came from
    data: Mapping[str, Any]  # reader spec (read_index), without image_size/sources
    image_size: int
    sources: tuple[str, ...]
    teachers: tuple[TeacherConfig, ...]
    students: StudentsConfig
    sweep: SweepConfig
    grid: GridConfig
    ablations: AblationsConfig
    resources: Resources
    tracking_uri: str
    storage_path: str
    max_failures: int = 2
    description: str = ""
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # used with students.hparams.min_steps: auto
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)  # cross-dataset test splits
    optuna_storage: str = ""  # where the sweep's Optuna studies are kept (sweep.storage, or optuna.db beside mlflow.db)
    # teachers' full train split read from disk each epoch instead of held in memory:
    # True, False, or "auto" (when it would take more than trial.STREAM_ABOVE_BYTES decoded)
    stream: bool | str = "auto"
    eval_seed: int = 0  # draws capped evaluation sets (sweeps); the same for every trial of the study
    # where splits and subsets are decoded once per node and memory-mapped (trainables/data/decoded.py);
    # None: each trial decodes into its own memory, keeping up to memory_budget bytes across trials
    decode_cache: str | None = None
    memory_budget: int = 512 * 1024**2
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the effective mapping (with overrides)
    overrides: tuple[str, ...] = field(default=(), compare=False)  # the `--set KEY=VALUE`s applied to the file

    def teacher(self, name: str) -> TeacherConfig:
        return next(t for t in self.teachers if t.name == name)

    def source_specs(self) -> list[tuple[str, dict]]:
        """(source name, reader spec) per dataset source the tables have a row block for."""
        kind = self.data["kind"]
        if kind == "ffpp":
            return [(s, {**self.data, "methods": [s]}) for s in self.sources]
        name = {"celebdf": "Celeb-DF", "synthetic": "synthetic"}.get(kind, self.data.get("source", kind))
        return [(name, dict(self.data))]

    @property
    def config_hash(self) -> str:
        return stable_hash(self.raw)


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hparams(r: Reader, name: str, methods: tuple[str, ...]) -> dict:
    """Hyperparameters fixed for `methods`: the common keys flat, each method's own options in
    its own section (`{lr: 0.002, ckd: {tau: 0.1}}`), so one method's option never reaches
    another's trials; each value is valid. A method's option given flat is refused with the
    nested form."""
    raw = dict(r.get(name, dict, {}))
    key = r.key(name)
    if "method" in raw:
        raise r.error(f"{key}.method", raw["method"], "set methods in students.methods, not here")
    where = f"{r.file}: {key}"
    common = set(HParams.common_keys()) - {"method"}
    sections = {k: v for k, v in raw.items() if k in METHODS}
    for k in sorted(set(raw) - set(sections) - common):
        owners = [m for m in method_names() if k in METHODS[m].option_names]
        if owners:
            m = owners[0] if owners[0] in methods or len(owners) == 1 else next((o for o in owners if o in methods),
                                                                                 owners[0])
            raise ConfigError(f"{where}.{k}: {k!r} is an option of {' and '.join(owners)}, not a common hyperparameter: "
                              f"give it in the method's own section, {key}: {{{m}: {{{k}: {_shown(raw[k])}}}}} "
                              f"(on the command line: --set {key}.{m}.{k}={_shown(raw[k])})")
        raise ConfigError(f"{where}: unknown key {k!r}: not a common hyperparameter nor a method's section; "
                          f"common keys are {sorted(common)}, sections are the methods {list(methods)}")
    for m, section in sections.items():
        if m not in methods:
            raise ConfigError(f"{where}.{m}: a section for method {m!r}, which is not among {list(methods)} here")
        if not isinstance(section, dict):
            raise ConfigError(f"{where}.{m}: {_shown(section)} must be a mapping of {m}'s options "
                              f"{list(METHODS[m].option_names)}, e.g. {key}: {{{m}: {{option: value}}}}")
        stray = sorted(set(section) - set(METHODS[m].option_names))
        if stray:
            hint = (f"; {sorted(set(stray) & common)} are common: give them beside the sections"
                    if set(stray) & common else "")
            raise ConfigError(f"{where}.{m}: unknown option(s) {stray} of method {m!r}; its options are "
                              f"{list(METHODS[m].option_names)}{hint}")
    common_values = {k: v for k, v in raw.items() if k not in sections}
    for method in methods:  # the common keys first, so that an error in a method's section names it
        HParams.from_dict({**common_values, "method": method}, where=where)
    for method in methods:
        HParams.from_dict({**for_method(raw, method), "method": method},
                          where=f"{where}.{method}" if method in sections else where)
    return raw


def load_config(path: str | Path, workdir: str | Path = "runs", overrides: Sequence[str] = ()) -> StudyConfig:
    """The file's config with `overrides` (`students.seeds=[0,1,2]`: a dotted key, a YAML value)
    set in its mapping, then validated; an error caused by an override names it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML (plain data only, no tags): {exc}") from None
    overrides = tuple(overrides)
    raw = apply_overrides(raw, overrides, SECTIONS)
    try:
        cfg = parse_config(raw, str(path), workdir)
    except ConfigError as exc:
        raise name_overrides(exc, overrides) from None
    return dataclasses.replace(cfg, overrides=overrides)


def recorded_text(cfg: StudyConfig) -> str:
    """What the study's parent run records as its config: the file as written (comments and
    all) when it is the whole config, else the effective mapping, overrides applied."""
    path = Path(cfg.path)
    if not cfg.overrides and path.is_file():
        text = path.read_text()
        try:
            if yaml.load(text, Loader=UniqueKeyLoader) == cfg.raw:
                return text
        except yaml.YAMLError:
            pass
    head = f"# {cfg.path}" + (f" with {set_options(cfg.overrides)}" if cfg.overrides else "") + "\n"
    return head + yaml.safe_dump(_plain(cfg.raw), sort_keys=False, allow_unicode=True)


def _plain(obj: Any) -> Any:
    """YAML-safe data: a config given as Python data (tests, benchmarks) may hold tuples."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if obj is None or isinstance(obj, (str, int, float, bool)) else str(obj)


def check_same_config(cfg: StudyConfig, recorded: Any, recorded_hash: str | None, run_id: str) -> None:
    """--resume continues a study as it was started: its effective config (file and --set
    overrides) must be the one parent run `run_id` recorded (`recorded`, the mapping; None when
    unreadable, then the recorded `config_hash` tag decides). ConfigError listing every
    difference, by dotted key, otherwise."""
    if isinstance(recorded, Mapping):
        diff = config_diff(recorded, _plain(cfg.raw))
    elif recorded_hash is not None and recorded_hash != cfg.config_hash:
        diff = [("(config hash)", recorded_hash, cfg.config_hash)]
    else:
        diff = []
    if not diff:
        return
    shown = "\n".join(f"  {key}: {_shown(old)} -> {_shown(new)}" for key, old, new in diff)
    raise ConfigError(
        f"{cfg.path}: --resume continues study {cfg.name!r} with the config it was started with, but this "
        f"one differs from what its parent run {run_id} recorded (recorded -> now):\n{shown}\n"
        f"Resume with the same file and --set options, or start a new study (another name or --workdir).")


def _shown(value: Any) -> str:
    return value if value is ABSENT else repr(value)


def parse_config(raw: Any, file: str, workdir: str | Path = "runs") -> StudyConfig:
    """Validate a config mapping; every problem is one ConfigError naming the key. Model names
    are looked up last: that alone needs timm (and torch), seconds to import."""
    with models_checked_last():
        return _parse_config(raw, file, workdir)


def _parse_config(raw: Any, file: str, workdir: str | Path) -> StudyConfig:
    workdir = Path(workdir).resolve()
    top = Reader(file, "", raw)
    top.check_keys(SECTIONS)
    name = top.get("name", str)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise top.error("name", name, "use letters, digits, '_', '.', '-' (it names folders and MLflow experiments)")
    d = top.sub("data")
    data, image_size, sources, stream, eval_seed = _data(d, file, workdir)
    teachers = _teachers(top, file, workdir)
    s = top.sub("students")
    students = _students(s, [t.name for t in teachers], workdir)
    sweep = _sweep(top.sub("sweep", {}), students)
    grid = _grid(top.sub("grid", {}), students.methods, sweep.spaces)
    _check_fixed_vs_searched(s, students, sweep)
    ablations = _ablations(top.sub("ablations", {}), students)
    budget = _budget(top.sub("budget", {}), students, grid, sweep)
    resources = _resources(top.sub("resources", {}))
    tracking = top.get("tracking_uri", (str, type(None)), None) or default_uri(workdir)
    storage = top.get("storage_path", (str, type(None)), None) or str(workdir / "ray")
    if "://" not in storage:
        storage = str(Path(expand(storage, workdir)).resolve())
    if tracking.startswith("sqlite:///") and "{workdir}" in tracking:
        tracking = "sqlite:///" + expand(tracking.removeprefix("sqlite:///"), workdir)
    decode_cache = _decode_cache(d, workdir, storage, name)
    if sweep.storage:
        optuna_storage = sweep.storage
    elif tracking.startswith("sqlite:///"):
        optuna_storage = f"sqlite:///{Path(tracking.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    else:
        optuna_storage = f"sqlite:///{workdir / 'optuna.db'}"
    evaluate = _evaluate(top.sub("evaluate", {}), file, workdir, data)
    paired = {n for p in students.pairs for n in p.teachers}
    unused = [t.name for t in teachers if t.name not in paired]
    if unused:
        raise top.error("teachers", unused, "these teachers are in no students.pairs entry: remove them or add a pair")
    return StudyConfig(
        name=name, path=file, data=data, image_size=image_size, sources=sources,
        teachers=teachers, students=students, sweep=sweep, grid=grid, ablations=ablations,
        resources=resources, tracking_uri=tracking, storage_path=storage,
        max_failures=top.get("max_failures", int, 2), description=top.get("description", str, ""),
        stream=stream, eval_seed=eval_seed, decode_cache=decode_cache, budget=budget, evaluate=evaluate,
        optuna_storage=optuna_storage,
        memory_budget=byte_count(d, "memory_budget", 512 * 1024**2), raw=raw)


def _evaluate(e: Reader, file: str, workdir: Path, source: Mapping[str, Any]) -> EvaluateConfig:
    """`evaluate`: each dataset named (identifier-like, unique, not the study's own data) and read
    as `data` is; its root is checked here, its test split in the runner's preflight."""
    e.check_keys({"datasets", "video_rule", "frames_per_video"})
    rule = e.get("video_rule", str, "mean")
    if rule not in VIDEO_RULES:
        raise e.error(e.key("video_rule"), rule, f"must be one of {list(VIDEO_RULES)}")
    frames = e.get("frames_per_video", int, 32, positive=True)
    out, names = [], set()
    for i, entry in enumerate(e.get("datasets", list, [])):
        r = Reader(file, f"evaluate.datasets[{i}]", entry)
        name = r.get("name", str)
        if not EVAL_NAME_RE.fullmatch(name):
            raise r.error(r.key("name"), name, "use lower-case letters, digits and '_', starting with a letter "
                                               "(at most 32): it names metrics, cross_<name>_auc")
        if name in names:
            raise r.error(r.key("name"), name, "names must be unique within evaluate.datasets")
        names.add(name)
        data = _reader_spec(Reader(file, r.where, {k: v for k, v in entry.items() if k != "name"}), file, workdir)
        if data == dict(source):
            raise r.error(r.where, entry, "is the study's own data: its test split is scored already (test_*)")
        out.append(EvalDataset(name, data))
    if not out and e.mapping:
        raise e.error("evaluate.datasets", e.mapping.get("datasets"), "list at least one dataset to evaluate on")
    return EvaluateConfig(tuple(out), rule, frames)


# data keys that say how trials read the data, not which data (not passed to the reader)
DATA_RUN_KEYS = ("image_size", "sources", "stream", "eval_seed", "decode_cache", "memory_budget")


def _decode_cache(d: Reader, workdir: Path, storage: str, name: str) -> str | None:
    """The folder each node decodes splits into: `data.decode_cache` (false: none, trials decode
    into memory), by default beside the study's Ray storage, or, when that storage is remote
    (s3://, gs://), a node-local folder under the user's home."""
    value = d.mapping.get("decode_cache", "default")
    if value is False or value is None:
        return None
    if value == "default":
        return f"~/.cache/ckd-study/decoded/{name}" if "://" in storage else f"{storage}/{name}/decoded"
    if not isinstance(value, str) or "://" in value:
        raise d.error("data.decode_cache", value, "must be a local folder (each node has its own), or false")
    return expand(value, workdir) if value.startswith("~") else str(Path(expand(value, workdir)).resolve())


def _reader_spec(d: Reader, file: str, workdir: Path) -> dict[str, Any]:
    """The reader spec of `data` (or of an evaluation dataset): its kind, paths expanded and
    checked to exist, its manipulation (synthetic) checked."""
    kind = d.get("kind", str)
    if kind not in READER_KINDS:
        raise d.error(d.key("kind"), kind, f"must be one of {list(READER_KINDS)}")
    data = {k: v for k, v in d.mapping.items() if k not in DATA_RUN_KEYS}
    for key in ("root", "json", "split_dir"):
        if key in data:
            data[key] = expand(d.get(key, str), workdir)
    if kind == "synthetic" and data.get("manipulation", "blend") not in ("blend", "swap"):  # synthetic.MANIPULATIONS
        raise d.error(d.key("manipulation"), data["manipulation"], "must be one of ['blend', 'swap'] (the kind of fake)")
    main_key = "json" if kind == "deepfakebench" else "root"
    if data.get(main_key) is None:
        raise ConfigError(f"{file}: missing key {d.key(main_key)!r}")
    if kind != "synthetic" and not Path(data[main_key]).exists():
        raise d.error(d.key(main_key), data[main_key], "does not exist: point it at your dataset (see README, 'Datasets')")
    return data


def _data(d: Reader, file: str, workdir: Path):
    """(reader spec, image size, sources, stream mode, evaluation seed) of `data`."""
    data = _reader_spec(d, file, workdir)
    kind = data["kind"]
    eval_seed = d.get("eval_seed", int, 0)
    stream = d.mapping.get("stream", "auto")
    if stream not in (True, False, "auto"):  # trainables.trial.STREAM_MODES (importing it loads the engine)
        raise d.error("data.stream", stream, "must be true, false or auto")
    image_size = d.get("image_size", int, 64, positive=True)
    sources: tuple[str, ...] = ()
    if kind == "ffpp":
        sources = tuple(d.get("sources", list, list(data.get("methods", FFPP_METHODS))))
        for s in sources:
            if s not in FFPP_METHODS:
                raise d.error("data.sources", s, f"must be among {list(FFPP_METHODS)}")
    elif "sources" in d.mapping:
        raise d.error("data.sources", d.mapping["sources"], "only the ffpp reader has sources (manipulation methods)")
    return data, image_size, sources, stream, eval_seed


def _teachers(top: Reader, file: str, workdir: Path) -> tuple[TeacherConfig, ...]:
    teachers = []
    for i, t in enumerate(top.get("teachers", list, [])):
        r = Reader(file, f"teachers[{i}]", t)
        arch = r.get("arch", str)
        model_name(r, "arch", arch)
        ckpt, weights = (existing_file(r, key, workdir) for key in ("checkpoint", "weights"))
        r.check_keys({"name", "arch", "checkpoint", "weights", "hparams"})
        teachers.append(TeacherConfig(r.get("name", str, arch), arch, _hparams(r, "hparams", (baseline_method(),)),
                                      ckpt, weights))
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise top.error("teachers", names, "teacher names must be unique (set 'name')")
    return tuple(teachers)


def _pairs(s: Reader, names: list[str]) -> tuple[Pair, ...]:
    pairs = []
    for i, p in enumerate(s.get("pairs", list)):
        m = PAIR_RE.match(p) if isinstance(p, str) else None
        if isinstance(p, str) and not any(a in p for a in ("->", "→")):  # a student alone (VT only)
            model_name(s, f"students.pairs[{i}]", p.strip())
            pairs.append(Pair((), p.strip()))
            continue
        if not m:
            raise s.error(f"students.pairs[{i}]", p, "write 'teacher->student', 'teacherA+teacherB->student' "
                                                    "or a student alone (VT only)")
        tnames = tuple(n.strip() for n in m.group(1).split("+"))
        for n in tnames:
            if n not in names:
                raise s.error(f"students.pairs[{i}]", p, f"teacher {n!r} is not among teachers {names}")
        model_name(s, f"students.pairs[{i}]", m.group(2))
        pairs.append(Pair(tnames, m.group(2)))
    return tuple(pairs)


def _students(s: Reader, names: list[str], workdir: Path) -> StudentsConfig:
    s.check_keys({"pairs", "methods", "volumes", "seeds", "draws", "hparams", "weights", "transfer", "arms"})
    pairs = _pairs(s, names)
    methods = tuple(s.get("methods", list))
    for i, mth in enumerate(methods):
        if mth not in method_names():
            raise s.error(f"students.methods[{i}]", mth, f"must be one of {list(method_names())}")
        check_method(mth, where=f"{s.file}: students.methods[{i}]")  # its declaration is complete
    distilling = [m for m in methods if needs_teachers(m)]
    if distilling:
        for i, pair in enumerate(pairs):
            if not pair.teachers:
                raise s.error(f"students.pairs[{i}]", pair.student,
                              f"methods {distilling} need a teacher: write 'teacher->student'")
    student_weights = {}
    w_reader = s.sub("weights", {})
    for model in w_reader.mapping:
        model_name(w_reader, f"students.weights.{model}", model)
        student_weights[model] = existing_file(w_reader, model, workdir)
    draws = s.ints("draws", [])
    if len(set(draws)) != len(draws):
        raise s.error("students.draws", list(draws), "each draw once")
    hp_reader, auto = s, s.sub("hparams", {}).mapping.get("min_steps") == "auto"
    if auto:  # found by the budget stage, per volume
        hp_reader = Reader(s.file, s.where, {**s.mapping, "hparams": {
            k: v for k, v in s.mapping["hparams"].items() if k != "min_steps"}})
    return StudentsConfig(pairs, methods, s.ints("volumes", even=True), s.ints("seeds", [0]),
                          _hparams(hp_reader, "hparams", methods), student_weights, draws, auto,
                          _transfer(s, methods), _arms(s, methods))


def _arms(s: Reader, methods: tuple[str, ...]) -> tuple[ArmConfig, ...]:
    """`students.arms`: named recipes the grid runs side by side (e.g. flips only against crops and
    mixup, with and without a transfer set), each a mapping {name, hparams, transfer}."""
    arms, names = [], set()
    for i, entry in enumerate(s.get("arms", list, [])):
        r = Reader(s.file, f"students.arms[{i}]", entry)
        r.check_keys({"name", "hparams", "transfer"})
        name = r.get("name", str)
        if not ARM_NAME_RE.fullmatch(name) or name in names:
            raise r.error(r.key("name"), name, "arm names are unique lower-case identifiers (letters, digits, '_')")
        names.add(name)
        arms.append(ArmConfig(name, _hparams(r, "hparams", methods), _transfer(r, methods)))
    if arms and s.mapping.get("transfer") is not None:
        raise s.error("students.transfer", s.mapping["transfer"], "with students.arms each arm names its own "
                                                                   "transfer set: move it into the arms")
    return tuple(arms)


def _transfer(s: Reader, methods: tuple[str, ...]) -> TransferConfig | None:
    """`students.transfer: {source, size}`, or None when absent (or null)."""
    if s.mapping.get("transfer") is None:
        return None
    t = s.sub("transfer")
    t.check_keys({"source", "size"})
    source = t.get("source", str)
    if source not in TRANSFER_SOURCES:
        raise t.error(t.key("source"), source, f"must be one of {list(TRANSFER_SOURCES)}")
    size = t.get("size", int)
    if size < 1:
        raise t.error(t.key("size"), size, "must be an integer >= 1 (images in the transfer set)")
    distilling = [m for m in methods if needs_teachers(m)]
    if not distilling:
        raise s.error("students.transfer", dict(t.mapping), f"only a distillation term sees a transfer set, and "
                      f"students.methods {list(methods)} has none: remove it or add a distilling method")
    refused = [m for m in distilling if not takes_unlabeled_rows(m)]
    if refused:
        raise s.error("students.transfer", dict(t.mapping),
                      f"methods {refused} do not declare that their distillation term takes unlabeled rows "
                      f"(declare_method(..., unlabeled_rows=True) in trainables.methods): their term may read "
                      f"labels, which a transfer image has none of; remove them or the transfer set")
    return TransferConfig(source, size)


def _sweep(w: Reader, students: StudentsConfig) -> SweepConfig:
    w.check_keys({"spaces", "trials", "volumes", "seed", "metric", "scheduler", "grace_period", "max_eval_per_class",
                  "storage"})
    spaces = dict(w.get("spaces", dict, {}))
    for mth, space in spaces.items():
        if mth not in students.methods:
            raise w.error(f"sweep.spaces.{mth}", space,
                          f"method {mth!r} is not in students.methods {list(students.methods)}")
        if space not in SPACES:
            raise w.error(f"sweep.spaces.{mth}", space, f"unknown search space; known: {sorted(SPACES)}")
        if mth not in SPACE_METHODS[space]:
            raise w.error(f"sweep.spaces.{mth}", space, f"this space tunes {list(SPACE_METHODS[space])}")
    metric = w.get("metric", str, "val_auc")
    if not re.fullmatch(r"val_(video_)?(acc|auc|ap)", metric):
        raise w.error("sweep.metric", metric, "select on validation: val_acc, val_auc, val_ap (or val_video_*)")
    scheduler = w.get("scheduler", str, "asha")
    if scheduler not in ("asha", "fifo"):
        raise w.error("sweep.scheduler", scheduler, "must be 'asha' or 'fifo'")
    sweep = SweepConfig(
        spaces=spaces, trials=w.get("trials", int, 8, positive=True),
        volumes=w.ints("volumes", list(students.volumes[:1]), even=True), seed=w.get("seed", int, 0),
        metric=metric, scheduler=scheduler, grace_period=w.get("grace_period", int, 2, positive=True),
        max_eval_per_class=w.get("max_eval_per_class", (int, type(None)), None),
        storage=w.get("storage", (str, type(None)), None))
    if sweep.storage is not None and "://" not in sweep.storage:
        raise w.error("sweep.storage", sweep.storage, "an SQLAlchemy URL for Optuna, e.g. sqlite:////abs/optuna.db "
                                                      "or postgresql://user@host/db")
    if sweep.max_eval_per_class is not None and sweep.max_eval_per_class < 1:
        raise w.error("sweep.max_eval_per_class", sweep.max_eval_per_class, "must be >= 1 (or null: the whole split)")
    return sweep


def _ablations(a: Reader, students: StudentsConfig) -> AblationsConfig:
    a.check_keys({"vary", "vary_volumes", "vary_seeds", "k_values", "k_volumes", "k_seeds",
                  "efficiency_volumes", "efficiency_students", "efficiency_seeds"})
    vary = _vary(a, students)
    eff_students = tuple(a.get("efficiency_students", list, sorted({p.student for p in students.pairs})))
    for i, st in enumerate(eff_students):
        model_name(a, f"ablations.efficiency_students[{i}]", st)
    efficiency_volumes = a.ints("efficiency_volumes", [], even=True)
    seeds = {}
    for points, key, old in ((vary, "vary_seeds", "k_seeds"), (efficiency_volumes, "efficiency_seeds", None)):
        name = old if old in a.mapping else key
        seeds[key] = a.ints(name, list(getattr(AblationsConfig, key)))
        if points and len(set(seeds[key])) < MIN_ABLATION_SEEDS:
            raise a.error(f"ablations.{name}", list(seeds[key]),
                          f"give at least {MIN_ABLATION_SEEDS} different seeds (e.g. [0, 1, 2]): each point of the "
                          "figure is a mean over seeds with its 95 % interval, which a single seed cannot show "
                          "and two show only loosely")
    volumes = a.ints("k_volumes" if "k_volumes" in a.mapping else "vary_volumes", [], even=True)
    return AblationsConfig(vary, volumes, seeds["vary_seeds"], efficiency_volumes, eff_students,
                           seeds["efficiency_seeds"])


def _vary(a: Reader, students: StudentsConfig) -> tuple[Vary, ...]:
    """`ablations.vary: {<method>.<option>: [values]}`: options the method declares ablatable,
    each value valid for it; the older `k_values: [...]` is the `k` of the method that declares
    `k` ablatable (the paper's Fig. 4: CKD)."""
    for new, old in (("vary", "k_values"), ("vary_volumes", "k_volumes"), ("vary_seeds", "k_seeds")):
        if new in a.mapping and old in a.mapping:
            raise a.error(f"ablations.{old}", a.mapping[old], f"give ablations.{new} or the older {old}, not both")
    raw = dict(a.get("vary", dict, {}))
    if "k_values" in a.mapping:
        k_values = a.ints("k_values", [])
        if any(k <= 0 for k in k_values):
            raise a.error("ablations.k_values", list(k_values), "K must be > 0")
        owners = [m for m, opts in ablatable_options().items() if "k" in opts]
        if k_values and not owners:
            raise a.error("ablations.k_values", list(k_values), "no method declares an ablatable option 'k'")
        if k_values:
            raw = {f"{owners[0]}.k": list(k_values)}
    out = []
    for key, values in raw.items():
        method, _, option = str(key).partition(".")
        where = f"ablations.vary.{key}" if "k_values" not in a.mapping else "ablations.k_values"
        allowed = [f"{m}.{o}" for m, opts in ablatable_options().items() for o in opts]
        if method not in METHODS or option not in METHODS[method].ablatable:
            raise a.error(where, values, f"not an ablatable option: write <method>.<option>, one of {allowed} "
                                         "(what each method's declaration lets an ablation vary)")
        if method not in students.methods:
            raise a.error(where, values, f"method {method!r} is not in students.methods {list(students.methods)}")
        if not isinstance(values, list) or not values:
            raise a.error(where, values, "give a list of values, e.g. [4, 16, 64]")
        fixed = for_method(students.hparams, method)
        if option in fixed:
            raise a.error(where, list(values), f"students.hparams fixes {option} for every trial of {method}, so "
                                               "the ablation could not vary it: remove one")
        if needs_teachers(method) and not students.pairs[0].teachers:
            raise a.error(where, list(values), f"the ablation distils along students.pairs[0]: {method} needs a teacher")
        typed = []
        for v in values:
            hp = HParams.from_dict({**fixed, option: v, "method": method}, where=f"{a.file}: {where}")
            typed.append(hp.to_dict()[option])
        if len(set(typed)) != len(typed):
            raise a.error(where, list(values), "a value is given twice")
        out.append(Vary(method, option, tuple(typed)))
    return tuple(out)


def _budget(b: Reader, students: StudentsConfig, grid: GridConfig, sweep: SweepConfig) -> BudgetConfig:
    """The budget stage's settings; the section only means something with min_steps: auto."""
    b.check_keys({"start_steps", "max_steps", "seeds", "tol", "metric", "volumes", "max_eval_per_class"})
    if b.mapping and not students.auto_budget:
        raise b.error("budget", dict(b.mapping), "only used with students.hparams.min_steps: auto: set that, "
                                                   "or remove this section")
    default = BudgetConfig()
    budget = BudgetConfig(
        start_steps=b.get("start_steps", int, default.start_steps, positive=True),
        max_steps=b.get("max_steps", int, default.max_steps, positive=True),
        seeds=b.ints("seeds", list(default.seeds)), tol=b.get("tol", float, default.tol),
        metric=b.get("metric", str, sweep.metric if sweep.spaces else default.metric),
        volumes=b.ints("volumes", list(students.volumes), even=True),
        max_eval_per_class=b.get("max_eval_per_class", (int, type(None)),
                                 grid.max_val_per_class or sweep.max_eval_per_class))
    if not re.fullmatch(r"val_(video_)?(acc|auc|ap)", budget.metric):
        raise b.error("budget.metric", budget.metric, "a budget is chosen on validation: val_acc, val_auc, val_ap")
    if budget.max_steps < 2 * budget.start_steps:
        raise b.error("budget.max_steps", budget.max_steps, f"must allow one doubling of start_steps "
                                                            f"({budget.start_steps}): at least {2 * budget.start_steps}")
    if len(budget.seeds) < 2:
        raise b.error("budget.seeds", list(budget.seeds), "at least 2 seeds: one seed's gain is noise")
    if budget.tol < 0:
        raise b.error("budget.tol", budget.tol, "must be >= 0")
    return budget


def _resources(res: Reader) -> Resources:
    res.check_keys({"cpu", "gpu", "loader_workers", "memory", "teacher_cpu", "teacher_gpu"})
    resources = Resources(res.get("cpu", float, 1.0, positive=True), res.get("gpu", float, 0.0),
                          res.get("loader_workers", int, 2), byte_count(res, "memory", None),
                          res.get("teacher_cpu", float, None, positive=True) if "teacher_cpu" in res.mapping else None,
                          res.get("teacher_gpu", float, None) if "teacher_gpu" in res.mapping else None)
    if resources.loader_workers < 0:
        raise res.error("resources.loader_workers", resources.loader_workers, "must be >= 0 (0 decodes in the trial)")
    for key in ("gpu", "teacher_gpu"):
        gpu = getattr(resources, key)
        if gpu is not None and (gpu < 0 or (gpu > 1 and not float(gpu).is_integer())):
            raise res.error(f"resources.{key}", gpu, "a fraction in [0, 1] or a whole number of GPUs")
    return resources


def _grid(g: Reader, methods: tuple[str, ...], spaces: Mapping[str, str]) -> GridConfig:
    """The grid's hyperparameters: every method tuned the same way, or the exceptions named."""
    g.check_keys({"enabled", "hparams", "untuned", "from_run", "max_val_per_class"})
    grid = GridConfig(g.get("enabled", bool, True), g.get("hparams", str, "sweep" if spaces else "paper"),
                      tuple(g.get("untuned", list, [])), g.get("from_run", (str, type(None)), None),
                      g.get("max_val_per_class", (int, type(None)), None))
    if grid.max_val_per_class is not None and grid.max_val_per_class < 1:
        raise g.error("grid.max_val_per_class", grid.max_val_per_class, "must be >= 1 (or null: the whole split)")
    if grid.hparams not in GRID_HPARAMS:
        raise g.error("grid.hparams", grid.hparams, "must be 'sweep' (the sweep's best), 'paper' or 'from_run'")
    for i, m in enumerate(grid.untuned):
        if m not in methods:
            raise g.error(f"grid.untuned[{i}]", m, f"is not in students.methods {list(methods)}")
        if m in spaces:
            raise g.error(f"grid.untuned[{i}]", m, f"is also swept (sweep.spaces.{m}): it is either tuned or not")
    if grid.untuned and grid.hparams != "sweep":
        raise g.error("grid.untuned", list(grid.untuned), "only means something with grid.hparams: sweep")
    if (grid.hparams == "from_run") != (grid.from_run is not None):
        raise g.error("grid.from_run", grid.from_run, "give grid.from_run (a parent run id) exactly when "
                                                       "grid.hparams is 'from_run'")
    if grid.hparams == "sweep" and grid.enabled:
        if not spaces:
            raise g.error("grid.hparams", "sweep", "no sweep.spaces configured: use 'paper' or add a sweep")
        unswept = [m for m in methods if m not in spaces and m not in grid.untuned]
        if unswept:
            raise g.error("grid.hparams", "sweep",
                          f"methods {unswept} are not swept: a table that compares tuned with untuned methods "
                          f"misleads. Sweep them too (sweep.spaces, same trial budget), or list them in "
                          f"grid.untuned to take the paper's values (marked with a dagger in every table)")
    return grid


def _check_fixed_vs_searched(s: Reader, students: StudentsConfig, sweep: SweepConfig) -> None:
    """A hyperparameter is fixed by the user (students.hparams) or searched, not both."""
    for method, space in sweep.spaces.items():
        for volume in sweep.volumes:
            fixed = for_method(students.hparams, method)
            both = sorted(set(fixed) & set(space_keys(space, method, volume)))
            if both:
                shown = both[0] if both[0] in students.hparams else f"{method}.{both[0]}"
                raise s.error(f"students.hparams.{shown}", fixed[both[0]],
                              f"is fixed here but search space {space!r} (sweep.spaces.{method}) also sets "
                              f"{both}: remove it from students.hparams to let the sweep choose it, or "
                              f"from the sweep")
