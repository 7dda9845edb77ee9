"""The one typed-configuration loader (motionsqueeze.typed_config) and the configs built on it."""

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from motionsqueeze.data import DataConfig, DataError
from motionsqueeze.engine.config import ConfigError, load_config, range_table
from motionsqueeze.models import ModelConfig
from motionsqueeze.typed_config import Range, Where, apply_overrides, from_mapping, parse_yaml, setting, validate

DOCS = Path(__file__).resolve().parents[1] / "docs"


@dataclass
class Inner:
    config_key = "outer.inner"

    size: int = setting(4, range=Range(1, 10))
    mode: str = setting("a", choices=("a", "b"))
    scales: tuple[float, ...] = setting((1.0,), range=Range(0, 1, lo_open=True))

    def __post_init__(self):
        validate(self)
        if self.mode == "b" and self.size > 5:
            from motionsqueeze.typed_config import fail

            fail(self, "outer.inner.size", f"{self.size} is too large for mode b (at most 5)")


@dataclass
class Outer:
    config_key = "outer"

    name: str = "x"
    rate: float | None = setting(0.5, range=Range(0, 1))
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        validate(self)


TEXT = "outer:\n  name: y\n  rate: 1\n  inner:\n    size: 3\n    scales: [0.5, 1]\n"


@dataclass
class Named:
    config_key = "outer"

    name: str | None = "x"

    def __post_init__(self):
        validate(self)


def _load_optional_name(overrides):
    raw, where = parse_yaml("outer:\n  name: y\n", "r.yaml")
    return from_mapping(Named, apply_overrides(raw, overrides, where)["outer"], where)


def _load(text, overrides=()):
    raw, where = parse_yaml(text, "r.yaml")
    raw = apply_overrides(raw, list(overrides), where)
    return from_mapping(Outer, raw["outer"], where)


def test_values_are_converted_to_their_field_types():
    cfg = _load(TEXT)
    assert cfg == Outer(name="y", rate=1.0, inner=Inner(size=3, scales=(0.5, 1.0)))
    assert isinstance(cfg.rate, float) and isinstance(cfg.inner.scales, tuple)
    assert _load(TEXT, ["outer.rate=null"]).rate is None
    assert _load_optional_name(["outer.name=null"]).name is None  # null stays null, not the text
    # --set gives the text to a string field, and YAML's value to others.
    assert _load(TEXT, ["outer.name=007", "outer.inner.size=5"]) == Outer(name="007", rate=1.0,
                                                                        inner=Inner(size=5, scales=(0.5, 1.0)))


@pytest.mark.parametrize("text, message", [
    (TEXT.replace("size: 3", "sise: 3"), "r.yaml:5: outer.inner.sise: unknown key; did you mean 'size'? valid keys are size, mode, scales"),
    (TEXT.replace("size: 3", "size: 11"), r"r.yaml:5: outer.inner.size: must be in the range [1, 10], got 11"),
    (TEXT.replace("size: 3", "size: three"), "r.yaml:5: outer.inner.size: must be an integer, got 'three'"),
    (TEXT.replace("size: 3", "size: true"), "r.yaml:5: outer.inner.size: must be an integer, got True"),
    (TEXT.replace("[0.5, 1]", "[0.5, 0]"), r"r.yaml:6: outer.inner.scales: each value must be in the range (0, 1], got [0.5, 0.0]"),
    (TEXT.replace("size: 3", "mode: c"), "r.yaml:5: outer.inner.mode: must be one of a, b; got 'c'"),
    (TEXT.replace("rate: 1", "rate: .nan"), r"r.yaml:3: outer.rate: must be in the range [0, 1], got nan"),
    (TEXT.replace("rate: 1", "rate: [1]"), r"r.yaml:3: outer.rate: must be a number or null, got [1]"),
    (TEXT.replace("size: 3", "size: 8\n    mode: b"), "r.yaml:5: outer.inner.size: 8 is too large for mode b"),
    ("outer:\n  inner: 3\n", "r.yaml:2: outer.inner: must be a mapping of settings, got 3"),
])
def test_every_problem_names_file_line_key_and_what_is_allowed(text, message):
    with pytest.raises(ConfigError) as info:
        _load(text)
    assert str(info.value).startswith(message), str(info.value)


def test_an_overridden_key_is_named_as_set_on_the_command_line():
    with pytest.raises(ConfigError, match=re.escape("--set outer.inner.size: must be in the range [1, 10], got 0")):
        _load(TEXT, ["outer.inner.size=0"])
    with pytest.raises(ConfigError, match="key=value"):
        _load(TEXT, ["outer.rate"])


def test_direct_construction_is_checked_by_the_same_rules():
    with pytest.raises(ConfigError, match=re.escape("outer.inner.size: must be in the range [1, 10], got 0")):
        Inner(size=0)
    assert Inner(scales=[1]).scales == (1.0,)


def test_data_and_model_settings_get_file_and_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model:\n  arch: msnet_tiny\n  dropout: 1.5\ndata:\n  root: x\n  train_list: t.txt\n")
    with pytest.raises(ConfigError, match=re.escape("recipe.yaml:3: model.dropout: must be in the range [0, 1), got 1.5")):
        load_config(path)
    path.write_text("model:\n  arch: msnet_tiny\ndata:\n  root: x\n  sampling: dense\n  dense_window: 4\n")
    with pytest.raises(DataError, match="recipe.yaml:6: data.dense_window: 4 is shorter than num_segments 8") as info:
        load_config(path)
    assert isinstance(info.value, ConfigError)  # one error for both callers
    path.write_text("model:\n  arch: msnet_tiny\n  num_classes: 3\ndata:\n  root: x\n")
    with pytest.raises(ConfigError, match="recipe.yaml:3: model.num_classes: is set from the data section"):
        load_config(path)


def test_model_and_data_configs_keep_their_rules():
    with pytest.raises(ValueError, match="model.motion_stages: must be distinct names among res2"):
        ModelConfig(motion_stages=("res3", "res3"))
    assert ModelConfig(motion_stages="res2", widths=[8, 8, 8, 8]).motion_stages == ("res2",)
    assert ModelConfig().replace(widths=[8, 16, 32, 64]).widths == (8, 16, 32, 64)
    with pytest.raises(DataError, match=r"data.std: each value must be in the range \(0, inf\), got \[1.0, 0.0, 1.0\]"):
        DataConfig(std=[1, 0, 1])
    with pytest.raises(DataError, match="data.mean: must be a list of 3 numbers"):
        DataConfig(mean=[0.5])


def test_the_documented_range_table_is_the_fields_metadata():
    doc = (DOCS / "security.md").read_text()
    assert range_table() in doc


def test_every_ranged_field_states_its_range_in_its_docs():
    from dataclasses import fields

    from motionsqueeze.data.augment import AugmentConfig
    from motionsqueeze.data.synthetic import SyntheticDataConfig, SyntheticMotionConfig
    from motionsqueeze.engine.config import SECTIONS

    for cls in (ModelConfig, DataConfig, AugmentConfig, SyntheticDataConfig, SyntheticMotionConfig, *SECTIONS.values()):
        doc = " ".join(cls.__doc__.split())
        names = [f.name for f in fields(cls)]
        for f in fields(cls):
            if f.metadata.get("range") is None:
                continue
            start = doc.index(f" {f.name}: ")
            ends = [doc.find(f" {other}: ", start + 1) for other in names if other != f.name]
            entry = doc[start:min([e for e in ends if e > start], default=len(doc))]
            assert f"range {f.metadata['range']}" in entry.replace("Range", "range"), (cls.__name__, f.name, entry)


# Each bad value is given twice: with --set, and in a recipe file at a known line. The model
# lines sit at line 3 of the file, the data lines at line 6 (see _recipe_with).
BAD_SETTINGS = [
    ("model.sigma", "0", "must be in the range (0, inf), got 0.0"),
    ("model.patch_size", "4", "odd positive integer"),
    ("model.patch_size", "0", "odd positive integer"),
    ("model.temperature", ".inf", "must be in the range (-inf, inf), got inf"),
    ("model.temperature", ".nan", "must be in the range (-inf, inf), got nan"),
    ("model.reduced_channels", "0", "must be in the range [1, inf), got 0"),
    ("model.shift_div", "1", "must be in the range [2, inf), got 1"),
    ("model.widths", "[8, 8]", "one value per stage (res2, res3, res4, res5), got [8, 8]"),
    ("model.widths", "[8, 0, 8, 8]", "each value must be in the range [1, inf)"),
    ("model.layers", "[1, 1, 1]", "one value per stage"),
    ("model.layers", "[1, 0, 1, 1]", "each value must be in the range [1, inf)"),
    ("model.stem_width", "0", "must be in the range [1, inf), got 0"),
    ("model.transform_channels", "[16, 0]", "each value must be in the range [1, inf)"),
    ("model.last_frame", "pad", "must be one of repeat, zero; got 'pad'"),
    ("model.backend", "cuda", "must be a displacement backend, one of auto, reference"),
    ("model.arch", "msnet_tiniest", "unknown model 'msnet_tiniest'"),
    ("data.num_segments", "1", "MotionSqueeze matches neighbouring frames and needs at least 2 frames"),
    ("data.num_segments", "0", "must be in the range [1, inf), got 0"),
    ("data.size", "0", "must be in the range [32, 4096], got 0"),
    ("data.size", "31", "must be in the range [32, 4096], got 31"),
    ("data.size", "100000", "must be in the range [32, 4096], got 100000"),
    ("data.train_clips", "-3", "must be in the range [1, inf), got -3"),
    ("data.val_clips", "0", "must be in the range [1, inf), got 0"),
    ("data.seed", "-1", "must be in the range [0, 4294967295], got -1"),
    ("data.speed", "[5, 1]", "must be [low, high] with low <= high, got [5.0, 1.0]"),
    ("data.speed", "[0, 1]", "each value must be in the range (0, inf)"),
    ("data.spin", "[10, 180]", "each value must be in the range (0, 180)"),
    ("data.spin", "[-30, -15]", "each value must be in the range (0, 180)"),
    ("data.zoom", "[1, 1.1]", "each value must be in the range (1, inf)"),
    ("data.zoom", "[1.2, 1.1]", "low <= high"),
    ("data.object_size", "[0.5, 1.5]", "each value must be in the range (0, 1]"),
    ("data.object_size", "[0, 0.5]", "each value must be in the range (0, 1]"),
    ("data.mean", "[0.5, 0.5, 2]", "each value must be in the range [0, 1]"),
    ("data.std", "[1, 0, 1]", "each value must be in the range (0, inf)"),
]


def _recipe_with(path, key, text):
    """The synthetic recipe's model and data with ``key: text`` at line 3 (model) or 6 (data)."""
    section, name = key.split(".")
    model = f"  {name}: {text}\n" if section == "model" else "  dropout: 0.2\n"
    data = f"  {name}: {text}\n" if section == "data" else "  size: 32\n"
    path.write_text(f"model:\n  arch: msnet_tiny\n{model}data:\n  dataset: synthetic\n{data}")
    return path, 3 if section == "model" else 6


@pytest.mark.parametrize("key, text, problem", BAD_SETTINGS)
def test_every_model_and_synthetic_data_setting_has_its_rule(tmp_path, key, text, problem):
    with pytest.raises(ConfigError) as info:
        load_config("synthetic", [f"{key}={text}"])
    assert str(info.value).startswith(f"--set {key}: "), str(info.value)
    assert problem in str(info.value) and info.value.key == key
    path, line = _recipe_with(tmp_path / "recipe.yaml", key, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line}: {key}: "), str(info.value)
    assert problem in str(info.value)


def test_the_model_and_data_rules_hold_in_code_too(monkeypatch):
    from motionsqueeze.data.synthetic import SyntheticDataConfig, SyntheticMotionConfig
    from motionsqueeze.models import create_model
    displacement_module = importlib.import_module("motionsqueeze.ops.displacement")  # the attribute is the function

    with pytest.raises(ConfigError, match=re.escape("model.sigma: must be in the range (0, inf), got 0.0")):
        create_model("msnet_tiny", sigma=0)
    with pytest.raises(ConfigError, match="model.num_segments: MotionSqueeze matches neighbouring frames"):
        create_model("msnet_tiny", num_segments=1)
    assert create_model("tsm_tiny", num_segments=1).num_segments == 1  # no MotionSqueeze: one frame is fine
    with pytest.raises(ConfigError, match=re.escape("data.speed: must be [low, high] with low <= high")):
        SyntheticDataConfig(speed=(5, 1))
    with pytest.raises(ConfigError, match=re.escape("spin: each value must be in the range (0, 180)")):
        SyntheticMotionConfig(spin=(10, 200))
    # The backend rule reads the registered backends when it checks, not when it was declared.
    with pytest.raises(ConfigError, match="model.backend: .* got 'mine'"):
        ModelConfig(backend="mine")
    monkeypatch.setitem(displacement_module._BACKENDS, "mine", displacement_module._BACKENDS["reference"])
    assert ModelConfig(backend="mine").backend == "mine"


def test_the_edges_of_the_rules_and_every_registered_model_load():
    from motionsqueeze.models import list_models

    # Allowed edges: a 1-cell window, tau 0 or negative (computed exactly by every backend),
    # the smallest size, the narrowest pairs.
    cfg = load_config("synthetic", ["model.patch_size=1", "model.temperature=-1", "model.shift_div=2",
                                    "data.size=32", "data.object_size=[1, 1]", "data.spin=[179.9, 179.9]",
                                    "data.mean=[0, 0, 1]", "model.widths=[1, 1, 1, 1]"])
    assert cfg.model.options["temperature"] == -1.0 and cfg.data.size == 32
    assert load_config("synthetic", ["model.temperature=0"]).model.options["temperature"] == 0.0
    for name in list_models():  # every registered variant is a valid arch, with its own options
        assert load_config("synthetic", [f"model.arch={name}"]).model.arch == name
    with pytest.raises(ConfigError, match="model.arch: unknown model"):
        load_config("synthetic", ["model.arch=msnet_r51"])


def test_every_model_and_synthetic_setting_declares_a_rule_and_the_docs_list_them():
    from dataclasses import fields

    from motionsqueeze.data.synthetic import SyntheticDataConfig, SyntheticMotionConfig
    from motionsqueeze.typed_config import range_table as table_of

    for cls in (ModelConfig, SyntheticDataConfig, SyntheticMotionConfig):
        for f in fields(cls):
            if f.type == "bool" or f.name == "dataset":  # true/false, and the section's selector
                continue
            assert any(f.metadata.get(rule) for rule in ("range", "choices", "check")), (cls.__name__, f.name)
    assert table_of({"data": SyntheticDataConfig}) in (DOCS / "security.md").read_text()
