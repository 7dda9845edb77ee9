"""The training recipe: YAML errors with file and line, --set overrides, the bundled recipes."""

import pytest

from motionsqueeze.engine.config import ConfigError, bundled_recipes, load_config


def test_malformed_config_names_the_bad_key_and_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model:\n  arch: msnet_tiny\noptim:\n  lr: 0.1\n  lr_decay: 0.5\ndata:\n  dataset: synthetic\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml:5: optim.lr_decay: unknown key; .*valid keys are name, lr, "):
        load_config(path)
    path.write_text("model:\n  arch: msnet_tiny\n  patchsize: 5\ndata:\n  dataset: synthetic\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml:3: model.patchsize: unknown key; did you mean 'patch_size'"):
        load_config(path)
    path.write_text("trainer:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="recipe.yaml:1: trainer: unknown section"):
        load_config(path)
    path.write_text("data:\n  dataset: synthetic\n  size: big\n")
    with pytest.raises(ConfigError, match="recipe.yaml:3: data.size: must be an integer, got 'big'"):
        load_config(path)
    path.write_text("data:\n  dataset: synthetic\ntrain:\n  amp: fp8\n")
    with pytest.raises(ConfigError, match="recipe.yaml:4: train.amp: must be one of none, bf16, fp16; got 'fp8'"):
        load_config(path)


def test_overrides_apply_and_are_typed(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  dataset: synthetic\noptim:\n  lr: 0.1\n")
    cfg = load_config(path, ["optim.lr=0.02", "schedule.milestones=[3, 6]", "model.patch_size=7", "train.amp=bf16"])
    assert cfg.optim.lr == 0.02 and cfg.schedule.milestones == (3, 6)
    assert cfg.model.options == {"patch_size": 7} and cfg.train.amp == "bf16"
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["optim.lr"])


def test_every_bundled_recipe_loads_by_name():
    names = bundled_recipes()
    assert "synthetic" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.source.endswith(f"{name}.yaml")
    with pytest.raises(FileNotFoundError, match="not a bundled recipe"):
        load_config("no_such_recipe")
