"""Studies as configs: ``cogimg study studies/fusion_gain.yaml --out runs/studies/fusion_gain``.

A study (file format: :mod:`cogimg.tracking.study_spec`, ``studies/README.md``) compares
*arms* — experiment YAMLs run by a named runner — over seeds on one cohort. The job:
synthesise the cohort once (or use ``data:``) → run every arm × seed into an ordinary run
directory ``--out/runs/<arm>/seed<k>/`` (manifest, per-subject rows, curves; an arm × seed
whose run directory finished is not run again, so an interrupted study resumes) → the same
outputs ``cogimg leaderboard|figures|report --out`` make from those directories alone
(:func:`finish_study`): leaderboard, standard figures, the study's comparison table
(:mod:`cogimg.tracking.study_stats`) and its declared figures, ``report.html``.

``--out/study.yaml`` is the resolved study (preset applied); ``study.json`` the commit, the
preset, the last call's wall time and each arm's: the sum over its seeds of the seconds each
arm × seed took in the call that ran it (``runs/<arm>/seed<k>/study_wall.json``), so a resumed
study still reports the time of every run.

Two registries (:mod:`cogimg.tracking.study_registry`) make the job extensible without
touching it:

* :data:`~cogimg.tracking.study_registry.RUNNERS` — ``{name: runner(arm, seed, run_dir, context)}``: runs one arm × seed into
  ``run_dir`` (a run directory, or a folder holding one). ``fit`` (the default) fits the
  arm's experiment YAML (:func:`cogimg.tracking.experiment.run_experiment`). Register more
  with :func:`~cogimg.tracking.study_registry.register_runner`.
* :data:`~cogimg.tracking.study_registry.FIGURES` — ``{name: figure(out, study, figures_dir) -> list[png paths]}``: a figure
  kind a study can list under ``figures:``; :func:`~cogimg.tracking.study_registry.register_figure` adds one
  (:mod:`cogimg.tracking.study_figures` holds the built-in ones).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from cogimg.io import atomic_write_text
from cogimg.tracking.study_registry import OWN_DATA, RUNNERS, StudyContext, load_plugins

#: File in ``runs/<arm>/seed<k>/`` with the seconds the runner took for that arm × seed.
WALL_FILE = "study_wall.json"


def recorded_wall(out: Path, study: dict) -> dict[str, float | None]:
    """``{arm: seconds}`` summed over the arm's seeds from their :data:`WALL_FILE`; ``None``
    for an arm with a seed that has none (run before the file existed)."""
    wall = {}
    for arm in study["arms"]:
        paths = [out / "runs" / arm["name"] / f"seed{seed}" / WALL_FILE for seed in study["seeds"]]
        wall[arm["name"]] = round(sum(json.loads(p.read_text(encoding="utf-8"))["wall_s"] for p in paths), 1) \
            if all(p.is_file() for p in paths) else None
    return wall


def finished(run_dir: Path, stages: tuple[str, ...]) -> bool:
    """Whether ``run_dir`` holds a finished run directory with per-subject rows of every stage."""
    from cogimg.tracking.leaderboard import find_runs

    return run_dir.is_dir() and all(find_runs(run_dir, stage=s)[0] for s in stages)


def study_stages(study: dict) -> tuple[str, ...]:
    """The stages the comparisons score (``("val",)`` without comparisons)."""
    return tuple(sorted({c["stage"] for c in study.get("comparisons", [])} or {"val"}))


def trainer_arguments(accelerator: str | None = None, devices: str | None = None,
                      precision: str | None = None) -> list[str]:
    """LightningCLI arguments for the options given on the command line."""
    args = []
    for key, value in (("accelerator", accelerator), ("devices", devices), ("precision", precision)):
        if value is not None:
            args += [f"--trainer.{key}", str(value)]
    return args


def prepare_data(study: dict, out: Path, workers: int = 2, command: str = "cogimg study") -> Path:
    """The study's BIDS root: ``data:``, or the ``cohort`` synthesised once into ``out/data``."""
    from cogimg.data.bids import load_dataset
    from cogimg.data.synth import generate_cohort

    if study.get("data"):
        data = Path(study["data"])
    else:
        data = out / "data"
        if not (data / "participants.tsv").is_file():
            cohort = dict(study["cohort"])
            print(f"synthesising {cohort.get('subjects')} subjects → {data}", flush=True)
            generate_cohort(data, cohort.pop("subjects"), cohort.pop("seed", 0), workers=workers,
                            command=command, progress=False, **cohort)
    if study.get("cohort") or not all(a["runner"] in OWN_DATA for a in study["arms"]):
        load_dataset(data)  # strict: any problem stops the study with the full list
    return data


def run_arms(study: dict, out: Path, data: Path, trainer_overrides: list[str] = ()) -> dict:
    """Run every arm × seed not finished yet; returns ``{arm: seconds spent now}``."""
    context = StudyContext(data=data, cache=out / "cache", stages=study_stages(study),
                           trainer_overrides=list(trainer_overrides), out=out)
    wall: dict[str, float] = {}
    for arm in study["arms"]:
        wall.setdefault(arm["name"], 0.0)
        for seed in study["seeds"]:
            run_dir = out / "runs" / arm["name"] / f"seed{seed}"
            if finished(run_dir, context.stages):
                print(f"  {arm['name']} seed {seed}: finished earlier", flush=True)
                continue
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an interrupted run starts afresh
            start = time.perf_counter()
            load_plugins()
            RUNNERS[arm["runner"]](arm, seed, run_dir, context)
            seconds = time.perf_counter() - start
            wall[arm["name"]] += seconds
            atomic_write_text(run_dir / WALL_FILE, json.dumps({"wall_s": round(seconds, 1)}) + "\n")
            print(f"  {arm['name']} seed {seed}: {seconds:.0f} s", flush=True)
    return wall


def finish_study(out: str | Path, title: str | None = None, stage: str = "val") -> dict:
    """Leaderboard, figures, comparison table, study figures and report of ``out`` — what
    ``cogimg leaderboard``, ``figures`` and ``report`` make of it; returns their paths."""
    from cogimg.tracking.figure_set import make_figures
    from cogimg.tracking.leaderboard import find_runs, leaderboard
    from cogimg.tracking.report import write_report
    from cogimg.tracking.study_spec import read_resolved
    from cogimg.tracking.study_stats import write_study_tables
    from cogimg.tracking.tables import to_markdown, write_leaderboard

    out = Path(out)
    n_boot = int((read_resolved(out) or {}).get("n_boot") or 1000)  # leaderboard CIs too
    runs, _ = find_runs(out / "runs" if (out / "runs").is_dir() else out, stage=stage)
    table = leaderboard(runs, n_boot=n_boot)
    written = write_leaderboard(table, out, stage=stage)
    print(to_markdown(table, stage))
    comparisons, paths = write_study_tables(out, out)
    figures, skipped = make_figures(out, out / "figures", stage=stage, n_boot=min(n_boot, 500))
    for reason in skipped:
        print(f"  figure skipped: {reason}")
    report = write_report(out, out / "report.html", figures_dir=out / "figures", stage=stage,
                          title=title or f"cogimg study: {out.name}", n_boot=n_boot)
    return {**written, **paths, "comparisons": comparisons, "figures": figures, "report": report}


def run_study(path: str | Path, out: str | Path, preset: str | None = None,
              seeds: list[int] | None = None, accelerator: str | None = None,
              devices: str | None = None, precision: str | None = None, workers: int = 2,
              study: dict | None = None) -> dict:
    """Run the study file ``path`` into ``out`` (module docstring); returns
    :func:`finish_study`'s paths plus ``comparisons`` (the table). ``study``: an already
    resolved study (``cogimg benchmark`` passes its own)."""
    from cogimg.tracking.provenance import git_info
    from cogimg.tracking.study_spec import load_study, read_resolved
    from cogimg.tracking.study_stats import comparisons_markdown

    out = Path(out)
    study = dict(study) if study is not None else load_study(path, preset)
    if seeds:
        study["seeds"] = list(seeds)
    start = time.perf_counter()
    earlier = read_resolved(out)
    for key in ("preset", "cohort", "data"):
        if earlier is not None and earlier.get(key) != study.get(key):
            raise FileExistsError(f"{out / 'study.yaml'}: {key} was {earlier.get(key)!r}, now "
                                  f"{study.get(key)!r}: its runs would mix; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", yaml.safe_dump(study, sort_keys=False, allow_unicode=True))
    data = prepare_data(study, out, workers=workers)
    print(f"{study['name']}: {len(study['arms'])} arms × seeds {study['seeds']}", flush=True)
    run_arms(study, out, data, trainer_arguments(accelerator, devices, precision))
    outputs = finish_study(out, title=f"cogimg study: {study['name']}")
    if outputs.get("comparisons") is not None:
        print(comparisons_markdown(outputs["comparisons"]))
    atomic_write_text(out / "study.json", json.dumps(
        {"study": str(path), "name": study["name"], "preset": study.get("preset"),
         "seeds": study["seeds"], "wall_s": round(time.perf_counter() - start, 1),
         "wall_s_per_arm": recorded_wall(out, study),
         "commit": (git_info() or {}).get("commit"),
         "trainer_overrides": trainer_arguments(accelerator, devices, precision)}, indent=2) + "\n")
    return outputs
