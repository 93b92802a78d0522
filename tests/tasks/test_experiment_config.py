"""Every LightningCLI experiment under experiments/ parses through ``cogimg fit``'s parser, and
the values a task shares with its datamodule arrive in the task from the one datamodule key
(cogimg.tasks.config); a linked key given in a config is an error naming it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from cogimg.cli import main
from cogimg.tasks.config import Experiment, linked_targets, load_experiment
from cogimg.tracking.experiment_cli import build_cli

ROOT = Path(__file__).resolve().parents[2]


def _is_cli_experiment(path: Path) -> bool:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    return isinstance(config, dict) and "class_path" in (config.get("model") or {})


EXPERIMENTS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml") if _is_cli_experiment(p))


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _load(path, overrides=()) -> Experiment:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # run-management keys dropped: tested below
        return load_experiment(path, overrides)


def test_every_family_of_experiments_is_covered():
    families = {p.parent.name for p in EXPERIMENTS}
    assert {"stroke", "ad", "pd", "multi", "microbleeds"} <= families
    assert not any(p.parent.name == "outcome" for p in EXPERIMENTS)  # not LightningCLI configs


@pytest.mark.parametrize("config", EXPERIMENTS, ids=_id)
def test_experiment_prints_its_config(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code in (None, 0)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == yaml.safe_load(config.read_text(encoding="utf-8"))["model"]["class_path"]


@pytest.mark.parametrize("config", EXPERIMENTS, ids=_id)
def test_experiment_states_no_linked_key_and_gets_them_from_its_datamodule(config):
    given = yaml.safe_load(config.read_text(encoding="utf-8"))["model"].get("init_args") or {}
    assert not {key.rsplit(".", 1)[1] for key in linked_targets()} & set(given)
    exp = _load(config)
    data = exp.data_class(**exp.data_args)
    args = exp.task_args
    expected = {"in_channels": len(data.modalities), "num_classes": len(data.preset.classes),
                "patch_size": getattr(data, "patch_size", None), "modalities": list(data.modalities),
                "classes": list(data.preset.classes),
                "input_shape": exp.data_args.get("target_shape")}
    # a link whose source the datamodule lacks is skipped (the task keeps its own default)
    skipped = {key for key, source in (("patch_size", "patch_size"), ("input_shape", "target_shape"))
               if source not in exp.data_args}
    linked = {key: value for key, value in expected.items() if key in args and key not in skipped}
    takes = set(expected) & set(exp.task_class.__init__.__code__.co_varnames) - skipped
    assert linked or not takes, f"{config.name}: no linked value reached the task"
    for key, value in linked.items():
        got = args[key]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == (
            list(value) if isinstance(value, (list, tuple)) else value), key


# Hand-read from the YAMLs and the presets of cogimg.diseases.
EXPECTED = {
    "stroke/seg_unet": {"in_channels": 2, "num_classes": 2, "patch_size": (64, 64, 64)},  # DWI + ADC
    "stroke/det_retinanet": {"in_channels": 2, "num_classes": 2, "patch_size": (64, 64, 64)},
    "microbleeds/det_centernet": {"in_channels": 1, "num_classes": 2, "patch_size": (32, 32, 32)},
    "ad/fusion_early_t1_pet": {"modalities": ["T1w", "pet_amyloid"], "classes": ["CN", "MCI", "AD"],
                               "input_shape": (48, 56, 48)},
    "ad/lso_dann_resnet10_t1": {"modalities": ["T1w"], "classes": ["CN", "AD"]},
    "pd/cls_resnet10_t1_dat": {"modalities": ["T1w", "pet_dat"], "classes": ["CN", "PD"]},
    "multi/cls_resnet10": {"classes": ["CN", "AD", "PD", "stroke"]},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_linked_values_are_the_hand_read_ones(name):
    exp = _load(ROOT / "experiments" / f"{name}.yaml")
    for key, value in EXPECTED[name].items():
        got = exp.task_args[key]
        assert (tuple(got) if isinstance(value, tuple) else list(got) if isinstance(value, list) else got) == value


def test_overriding_the_datamodule_key_changes_the_task():
    exp = _load(ROOT / "experiments" / "stroke" / "seg_unet.yaml", ["--data.init_args.patch_size", "[32, 48, 16]"])
    assert tuple(exp.task_args["patch_size"]) == (32, 48, 16) == tuple(exp.data_args["patch_size"])
    exp = _load(ROOT / "experiments" / "ad" / "cls_resnet10_t1.yaml", ["--data.init_args.modalities", "[T1w, pet_amyloid]"])
    assert list(exp.task_args["modalities"]) == ["T1w", "pet_amyloid"]


def test_cli_builds_the_stroke_unet_with_two_input_channels(tmp_path):
    cli = build_cli(["--config", str(ROOT / "experiments" / "stroke" / "seg_unet.yaml"),
                     "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.in_channels == 2 and cli.model.hparams.in_channels == 2
    assert cli.model.patch_size == (64, 64, 64) == cli.datamodule.patch_size
    assert cli.model.num_classes == 2


def test_cli_builds_a_classifier_with_the_datamodules_modalities_and_classes(tmp_path):
    cli = build_cli(["--config", str(ROOT / "experiments" / "pd" / "cls_resnet10_t1_dat.yaml"),
                     "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
                     "--trainer.callbacks", "null"])
    assert cli.model.classes == ("CN", "PD")
    assert list(cli.model.hparams.modalities) == ["T1w", "pet_dat"]
    assert tuple(cli.model.hparams.input_shape) == (48, 56, 48)


def _with_model_key(tmp_path: Path, **extra) -> Path:
    config = yaml.safe_load((ROOT / "experiments" / "stroke" / "seg_unet.yaml").read_text(encoding="utf-8"))
    config["model"]["init_args"].update(extra)
    path = tmp_path / "linked.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize(("key", "value", "source"), [("in_channels", 3, "data.init_args.modalities"),
                                                      ("patch_size", [32, 32, 32], "data.init_args.patch_size")])
def test_a_linked_key_in_a_config_is_an_error_naming_it(tmp_path, capsys, key, value, source):
    path = _with_model_key(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=rf"linked\.yaml: linked key\(s\) \['model\.init_args\.{key}'\].*{source}"):
        load_experiment(path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_.value.code != 0
    assert f"model.init_args.{key}" in capsys.readouterr().err


def test_a_linked_key_given_as_an_override_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(ROOT / "experiments" / "stroke" / "seg_unet.yaml"),
              "--model.init_args.patch_size", "[32, 32, 32]", "--print_config"])
    assert exit_.value.code != 0
    assert "model.init_args.patch_size comes from data.init_args.patch_size" in capsys.readouterr().err


def test_unknown_trainer_key_is_an_error_naming_it_and_the_file(tmp_path):
    config = yaml.safe_load((ROOT / "experiments" / "stroke" / "seg_unet.yaml").read_text(encoding="utf-8"))
    config["trainer"]["max_epoch"] = 3
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ValueError, match=r"typo\.yaml: .*max_epoch"):
        load_experiment(path)


def test_trainer_keys_are_kept_and_run_management_dropped_with_a_warning():
    path = ROOT / "experiments" / "ad" / "cls_resnet10_t1.yaml"
    with pytest.warns(UserWarning, match=r"trainer\.callbacks.*trainer\.default_root_dir"):
        exp = load_experiment(path, ["--trainer.gradient_clip_val", "1.5"])
    assert exp.trainer_args == {"max_epochs": 40, "accelerator": "auto", "devices": 1, "precision": "32-true",
                                "log_every_n_steps": 5, "check_val_every_n_epoch": 1, "gradient_clip_val": 1.5}
    assert exp.seed == 0
    assert exp.data_args["data_root"] == "data/synth" and exp.data_args["batch_size"] == 8


def test_from_yaml_is_the_same_loader():
    path = ROOT / "experiments" / "stroke" / "lso_unet.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Experiment.from_yaml(path) == load_experiment(path)


def test_a_class_that_is_not_a_task_is_rejected_naming_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": {"class_path": "os.system", "init_args": {}},
                                    "data": {"class_path": "cogimg.data.datamodules.VolumeDataModule",
                                             "init_args": {"data_root": "x"}}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml: .*model"):
        load_experiment(path)
