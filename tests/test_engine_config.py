"""TrainConfig: official defaults, config files (YAML/JSON), command-line overrides, presets, errors."""

import json
import re

import pytest

from yolox_fast.engine.config import DEMO_DEFAULTS, TrainConfig, build_config, load_config_file, save_config_file
from yolox_fast.train import build_parser, make_config

COCO = ["--coco-images", "imgs", "--coco-ann", "ann.json"]


def parse(argv):
    return make_config(build_parser().parse_args(argv))[0]


def test_official_defaults():
    cfg = TrainConfig()
    assert (cfg.lr_per_image, cfg.momentum, cfg.weight_decay, cfg.warmup_epochs, cfg.warmup_lr) == (
        0.01 / 64, 0.9, 5e-4, 5, 0.0)
    assert (cfg.min_lr_ratio, cfg.no_aug_epochs, cfg.epochs, cfg.ema_decay) == (0.05, 15, 300, 0.9998)
    assert (cfg.multiscale_range, cfg.multiscale_interval, cfg.hsv_prob, cfg.flip_prob) == (5, 10, 1.0, 0.5)
    assert (cfg.degrees, cfg.translate, cfg.shear, cfg.mixup_scale) == (10.0, 0.1, 2.0, (0.5, 1.5))


def test_presets_fill_unset_fields():
    s = parse([*COCO, "--model", "yolox_s"])
    assert (s.model, s.img_size, s.test_size, s.mixup_prob, s.mosaic_prob, s.mosaic_scale, s.random_size) == (
        "yolox-s", 640, 640, 1.0, 1.0, (0.1, 2.0), None)
    nano = parse([*COCO, "--model", "nano"])
    assert (nano.img_size, nano.mixup_prob, nano.mosaic_prob, nano.mosaic_scale, nano.random_size) == (
        416, 0.0, 0.5, (0.5, 1.5), (10, 20))
    tiny = parse([*COCO, "--model", "yolox-tiny", "--mixup-prob", "0.3", "--img-size", "512"])
    assert (tiny.mixup_prob, tiny.mosaic_prob, tiny.img_size, tiny.test_size) == (0.3, 1.0, 512, 512)


def test_no_data_uses_demo_defaults_but_flags_still_win():
    cfg = parse([])
    for key, value in DEMO_DEFAULTS.items():
        assert getattr(cfg, key) == value, key
    cfg = parse(["--epochs", "3", "--img-size", "128"])
    assert (cfg.epochs, cfg.img_size, cfg.model) == (3, 128, "yolox-nano")
    assert parse(COCO).epochs == 300  # with data: the official recipe


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_then_command_line(tmp_path, suffix):
    values = {"coco_images": "imgs", "coco-ann": "a.json", "epochs": 50, "batch_size": 32,
              "mosaic_scale": [0.2, 1.8], "progress": False, "class_names": ["a", "b"]}
    path = tmp_path / f"run{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        import yaml

        path.write_text(yaml.safe_dump(values))
    cfg = parse(["--config", str(path), "--epochs", "20", "--mosaic-scale", "0.3", "1.2", "--progress"])
    assert (cfg.epochs, cfg.batch_size, cfg.mosaic_scale, cfg.progress, cfg.class_names) == (
        20, 32, (0.3, 1.2), True, ["a", "b"])
    assert parse(["--config", str(path), "--no-progress"]).progress is False
    assert parse(["--config", str(path)]).progress is False


def test_saved_config_loads_back(tmp_path):
    cfg = parse([*COCO, "--model", "yolox-tiny", "--no-ema", "--random-size", "12", "18"])
    save_config_file(cfg, tmp_path / "config.yaml")
    assert build_config(load_config_file(tmp_path / "config.yaml")) == cfg


def test_errors_name_the_setting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("img_sise: 320\n")
    with pytest.raises(ValueError, match="unknown setting 'img_sise' \\(did you mean 'img_size'\\?\\)"):
        parse(["--config", str(bad)])
    with pytest.raises(ValueError, match="command line: epochs: cannot read 'ten' as an integer"):
        parse(["--epochs", "ten"])
    with pytest.raises(ValueError, match="img_size must be a positive multiple of 32"):
        parse(["--img-size", "100"])
    with pytest.raises(ValueError, match="needs both coco_images and coco_ann"):
        parse(["--coco-images", "x"])
    with pytest.raises(ValueError, match="unknown model"):
        parse(["--model", "yolox-q"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        parse(["--config", str(tmp_path / "missing.yaml")])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        parse(["--config", str(tmp_path / "list.yaml")])


def test_multiscale_sizes_follow_the_requested_img_size():
    """Issue 9.5: the presets' 320-640 range applies at their own 416 input only; elsewhere +- 5 * 32, >= 32."""
    assert parse([*COCO, "--model", "nano"]).multiscale_sizes() == (320, 640)  # official nano / tiny
    assert parse([*COCO, "--model", "yolox-s"]).multiscale_sizes() == (480, 800)  # 640 +- 160
    small = parse([*COCO, "--model", "nano", "--img-size", "160"])
    assert small.random_size is None and small.multiscale_sizes() == (32, 320)
    assert parse([*COCO, "--model", "tiny", "--img-size", "320"]).multiscale_sizes() == (160, 480)
    assert parse([*COCO, "--img-size", "160", "--multiscale-range", "2"]).multiscale_sizes() == (96, 224)
    assert parse([*COCO, "--img-size", "160", "--random-size", "3", "6"]).multiscale_sizes() == (96, 192)


def test_help_states_each_default_once():
    """Issue 9.10: no "(default: auto) (default: auto)"; every setting's help gives its default exactly once."""
    parser = build_parser()
    text = parser.format_help()
    assert "(default: auto) (default: auto)" not in " ".join(text.split())
    for action in parser._actions:
        if action.dest not in ("help", "config", "resume", "stop_after_epoch", "exist_ok", "debug"):
            assert action.help.count("default") == 1, (action.dest, action.help)


def test_resume_keeps_the_run_settings_but_flags_win_and_derived_ones_follow(tmp_path):
    """Issue 9.6: on --resume the saved settings come back, typed flags win, and settings the run had derived
    from a flag given now (evaluation size, the preset's multiscale range) are derived again."""
    import torch

    saved = parse([*COCO, "--model", "nano", "--epochs", "30", "--batch-size", "8"])
    assert (saved.img_size, saved.test_size, saved.random_size) == (416, 416, (10, 20))
    ckpt = {"model": {}, "optimizer": {}, "epoch": 3, "iteration": 30, "config": saved.to_dict(),
            "class_names": ["a"]}
    torch.save(ckpt, tmp_path / "latest.pt")
    resumed = parse(["--resume", str(tmp_path)])
    assert resumed == saved.updated({"output_dir": str(tmp_path)})
    small = parse(["--resume", str(tmp_path), "--img-size", "160", "--no-multiscale", "--epochs", "40"])
    assert (small.img_size, small.test_size, small.random_size, small.multiscale) == (160, 160, None, False)
    assert (small.epochs, small.batch_size, small.multiscale_sizes()) == (40, 8, (32, 320))
    chosen = parse(["--resume", str(tmp_path), "--img-size", "160", "--test-size", "416"])
    assert (chosen.img_size, chosen.test_size) == (160, 416)
    # a range the user chose stays chosen
    saved = parse([*COCO, "--model", "nano", "--random-size", "12", "18", "--test-size", "320"])
    torch.save({**ckpt, "config": saved.to_dict()}, tmp_path / "latest.pt")
    kept = parse(["--resume", str(tmp_path), "--img-size", "160"])
    assert (kept.random_size, kept.test_size) == ((12, 18), 320)


def test_data_paths_are_made_absolute_once(tmp_path, monkeypatch):
    """Issue 9.7: relative data paths resolve against the working directory when the run starts."""
    monkeypatch.chdir(tmp_path)
    cfg = parse(["--yolo-dir", "data/ybase", "--weights", "w.pth"])
    assert cfg.yolo_dir == str(tmp_path / "data" / "ybase") and cfg.weights == str(tmp_path / "w.pth")
    assert parse(COCO).coco_ann == str(tmp_path / "ann.json")


@pytest.mark.parametrize("values, phrase", [
    ({"epochs": True}, "epochs: cannot read True as an integer"),  # issue 18.5: a boolean is not an epoch count
    ({"batch_size": "16.5"}, "batch_size: cannot read '16.5' as an integer"),
    ({"cache_images": 5}, "cache_images: cannot read 5 as true/false"),
    ({"model": 5}, "model: cannot read 5 as a string"),
    ({"lr_per_image": False}, "lr_per_image: cannot read False as a finite number"),
    ({"lr_per_image": "nan"}, "lr_per_image: cannot read 'nan' as a finite number"),
    ({"mosaic_scale": [0.5, True]}, "mosaic_scale: cannot read [0.5, True] as two numbers"),
    ({"random_size": 10}, "random_size: cannot read 10 as two integers"),
    ({"freeze": {"a": 1}}, "freeze: cannot read {'a': 1} as a list of names"),
])
def test_config_values_are_type_checked_strictly(values, phrase):
    with pytest.raises(ValueError, match=re.escape(phrase)):
        TrainConfig().updated(values, "config file")


def test_config_values_of_the_right_type_still_load():
    cfg = TrainConfig().updated({"epochs": 5.0, "batch_size": "8", "cache_images": "yes", "ema": False,
                                 "lr_per_image": 1, "mosaic_scale": "0.5 1.5", "class_names": ["a", 1]})
    assert (cfg.epochs, cfg.batch_size, cfg.cache_images, cfg.ema, cfg.lr_per_image) == (5, 8, True, False, 1.0)
    assert cfg.mosaic_scale == (0.5, 1.5) and cfg.class_names == ["a", "1"]
