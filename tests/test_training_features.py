"""Training features for real data: frozen BN, accumulation, label smoothing, augmentation,
MixUp / CutMix, EMA, class balancing. Each test fails if its feature is silently a no-op."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from motionsqueeze.data.augment import (
    AugmentConfig,
    RAND_AUGMENT_OPS,
    color_jitter,
    mix_clips,
    rand_augment,
    sample_color_jitter,
)
from motionsqueeze.engine import fit
from motionsqueeze.engine.accumulate import group_bounds, loss_share
from motionsqueeze.engine.checkpoint import load_checkpoint
from motionsqueeze.engine.config import ConfigError, bundled_recipes, config_from_dict, load_config
from motionsqueeze.engine.ema import ModelEMA
from motionsqueeze.engine.losses import balanced_item_weights, class_weights, training_loss
from motionsqueeze.engine.data_order import ResumableSampler
from motionsqueeze.engine.trainer import build_model_from_config
from motionsqueeze.models import create_model
from motionsqueeze.models.batchnorm import freeze_batchnorm, frozen_batchnorm_layers


def small_config(train=None, model=None, augment=None, optim=None, train_clips=10):
    raw = {
        "model": {"arch": "tsm_tiny", "dropout": 0.2, "widths": [8, 8, 16, 16],
                  **(model or {})},
        "data": {"dataset": "synthetic", "train_clips": train_clips, "val_clips": 2, "num_segments": 2, "size": 32, "seed": 3},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01, "reference_batch_size": 0, "clip_grad_norm": 20,
                  **(optim or {})},
        "schedule": {"epochs": 1, "kind": "cosine", "warmup_epochs": 0.5},
        "train": {"batch_size": 2, "workers": 0, "seed": 1, "log_every": 0, "progress": False, "tensorboard": False,
                  **(train or {})},
        "eval": {"batch_size": 4},
        "augment": augment or {},
    }
    return config_from_dict(raw)


def _weights(run_dir, name="last.pt"):
    return load_checkpoint(Path(run_dir) / "checkpoints" / name)["model"]


# --------------------------------------------------------------------------- frozen BN


@pytest.mark.parametrize("mode", ["partial", "all"])
def test_frozen_batchnorm_keeps_statistics_and_affine_parameters_in_train_mode(mode):
    torch.manual_seed(0)
    model = create_model("msnet_tiny", num_classes=4, num_segments=2, patch_size=5)
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = freeze_batchnorm(model, mode)
    assert frozen == [n for n, _ in (norms[1:] if mode == "partial" else norms)]
    assert frozen_batchnorm_layers(model) == frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()  # must not unfreeze them
    for _ in range(2):
        x = torch.randn(2, 2, 3, 32, 32)
        loss = F.cross_entropy(model(x), torch.tensor([0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    for name in frozen:
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            key = f"{name}.{suffix}"
            assert torch.equal(before[key], after[key]), key
    first = norms[0][0]
    changed_first = not torch.equal(before[f"{first}.running_mean"], after[f"{first}.running_mean"])
    assert changed_first == (mode == "partial")
    assert not torch.equal(before["fc.weight"], after["fc.weight"])  # the rest trains
    assert model.training and all(not m.training for n, m in model.named_modules() if n in frozen)


def test_freeze_bn_none_changes_nothing_and_bad_mode_is_refused():
    model = create_model("tsn_tiny", num_classes=3, num_segments=2)
    assert freeze_batchnorm(model, "none") == []
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="freeze_bn"):
        freeze_batchnorm(model, "some")


# --------------------------------------------------------------------------- accumulation


def test_loss_shares_sum_to_one_per_group_including_a_short_last_group():
    # 10 clips, batches of 2 -> 5 batches; K = 2 -> groups {0,1}, {2,3}, {4}.
    shares = [loss_share(i, 2, 5, 2, 10) for i in range(5)]
    assert shares == [0.5, 0.5, 0.5, 0.5, 1.0]
    # 9 clips, batches of 4 -> 4, 4, 1 clips; K = 3 -> one group of 9.
    assert [loss_share(i, 3, 3, 4, 9) for i in range(3)] == [4 / 9, 4 / 9, 1 / 9]
    assert [group_bounds(i, 2, 5) for i in range(5)] == [(True, False), (False, True), (True, False), (False, True), (True, True)]


def test_accumulating_k_batches_equals_one_batch_of_k_times_the_clips(tmp_path):
    # 6 clips: batches of 4 and 2, or groups of 2 + 2 and 2 (a short last group).
    # freeze_bn=all turns BatchNorm into a fixed affine map: a model without batch statistics.
    common = {"model": {"freeze_bn": "all", "dropout": 0.0}, "optim": {"name": "sgd", "lr": 0.05, "nesterov": False}}
    big = small_config(train={"batch_size": 4, "eval_every": 0}, train_clips=6, **common)
    acc = small_config(train={"batch_size": 2, "accumulate": 2, "eval_every": 0}, train_clips=6, **common)
    single = small_config(train={"batch_size": 2, "eval_every": 0}, train_clips=6, **common)
    fit(big, run_dir=tmp_path / "big", quiet=True)
    fit(acc, run_dir=tmp_path / "acc", quiet=True)
    fit(single, run_dir=tmp_path / "single", quiet=True)
    a, b, c = _weights(tmp_path / "big"), _weights(tmp_path / "acc"), _weights(tmp_path / "single")
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-6, worst
    # Without accumulation (3 updates of 2 clips instead of 2 of 4 and 2) the weights differ.
    assert max((a[k].float() - c[k].float()).abs().max().item() for k in a) > 1e-4


# --------------------------------------------------------------------------- augmentation


def _clip_batch(n=3, t=4, size=16, identical_frames=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    if identical_frames:
        frame = torch.randint(0, 256, (n, 1, 3, size, size), generator=g, dtype=torch.uint8)
        return frame.expand(n, t, 3, size, size).contiguous()
    return torch.randint(0, 256, (n, t, 3, size, size), generator=g, dtype=torch.uint8)


def test_color_jitter_uses_one_set_of_parameters_per_clip():
    cfg = AugmentConfig(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    clips = _clip_batch()
    clips[1] = clips[0]  # two equal clips must still get different parameters
    params = sample_color_jitter(3, cfg, torch.Generator().manual_seed(1))
    out = color_jitter(clips, params)
    assert out.dtype == torch.uint8 and out.shape == clips.shape
    assert (out.float() - clips.float()).abs().mean() > 2  # it does something
    for n in range(3):  # identical frames in -> identical frames out: the same transform per frame
        assert all(torch.equal(out[n, 0], out[n, k]) for k in range(1, 4))
    assert not torch.equal(out[0], out[1])
    # Off: factors of one and no hue rotation leave the clip as it was.
    same = color_jitter(clips, sample_color_jitter(3, AugmentConfig(), torch.Generator().manual_seed(1)))
    assert torch.equal(same, clips)


def test_rand_augment_applies_the_same_operations_to_every_frame_of_a_clip():
    clips = _clip_batch(n=6)
    out, plan = rand_augment(clips, num_ops=2, magnitude=9, g=torch.Generator().manual_seed(2))
    assert out.dtype == torch.uint8 and out.shape == clips.shape
    assert all(len(p) == 2 and all(op in RAND_AUGMENT_OPS and s in (-1, 1) for op, s in p) for p in plan)
    changed = [n for n in range(6) if not torch.equal(out[n], clips[n])]
    assert changed, plan
    for n in range(6):
        assert all(torch.equal(out[n, 0], out[n, k]) for k in range(1, 4)), plan[n]
    # Frames that differ get the operations of their clip, frame by frame alike.
    moving = _clip_batch(n=2, identical_frames=False)
    out2, plan2 = rand_augment(moving, 2, 9, torch.Generator().manual_seed(5))
    for n in range(2):
        for k in range(4):
            x = moving[n, k:k + 1].float()
            for op, s in plan2[n]:
                x = RAND_AUGMENT_OPS[op](x, 0.9, s).clamp(0, 255)
            if all(op not in ("contrast", "autocontrast") for op, _ in plan2[n]):  # these use clip-wide statistics
                assert torch.equal(out2[n, k], x.round().clamp(0, 255).to(torch.uint8)[0]), plan2[n]


def test_mixup_mixes_labels_with_the_same_lambda_as_the_pixels():
    clips = torch.randn(4, 3, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    out, targets, lam = mix_clips(clips, labels, 5, AugmentConfig(mixup_alpha=0.8), torch.Generator().manual_seed(0))
    assert lam.shape == (4,) and ((lam > 0) & (lam < 1)).all() and len(set(lam.tolist())) == 4
    for n in range(4):
        expected = lam[n] * clips[n] + (1 - lam[n]) * clips[3 - n]
        assert torch.allclose(out[n], expected, atol=1e-6)
        want = torch.zeros(5)
        want[labels[n]] += lam[n]
        want[labels[3 - n]] += 1 - lam[n]
        assert torch.allclose(targets[n], want, atol=1e-6)


def test_cutmix_pastes_one_box_on_every_frame_and_weights_labels_by_its_area():
    clips = torch.zeros(4, 3, 3, 16, 16) + torch.arange(4.0).view(4, 1, 1, 1, 1)  # clip n is constant n
    labels = torch.tensor([0, 1, 2, 3])
    out, targets, lam = mix_clips(clips, labels, 4, AugmentConfig(cutmix_alpha=1.0), torch.Generator().manual_seed(3))
    for n in range(4):
        pasted = out[n] == 3 - n  # pixels taken from the partner
        assert all(torch.equal(pasted[0], pasted[k]) for k in range(1, 3))  # same box on every frame
        kept = 1 - pasted[0, 0].float().mean().item()
        assert abs(lam[n].item() - kept) < 1e-6
        assert abs(targets[n, labels[n]].item() - kept) < 1e-6 and abs(targets[n, 3 - n].item() - (1 - kept)) < 1e-6
    assert (lam < 1).any()


def test_mixing_is_skipped_with_probability_one_minus_mix_prob():
    clips, labels = torch.randn(2, 2, 3, 4, 4), torch.tensor([0, 1])
    out, targets, lam = mix_clips(clips, labels, 2, AugmentConfig(mixup_alpha=1.0, mix_prob=0.0), torch.Generator())
    assert torch.equal(out, clips) and torch.equal(targets, F.one_hot(labels, 2).float()) and (lam == 1).all()


# --------------------------------------------------------------------------- losses and balancing


def test_label_smoothing_and_class_weights_change_the_loss_as_defined():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    plain = training_loss(logits, labels)
    assert torch.equal(plain, F.cross_entropy(logits, labels))
    eps = 0.2
    logp = logits.log_softmax(1)
    smooth = (-(1 - eps) * logp[torch.arange(3), labels] - eps / 3 * logp.sum(1)).mean()
    assert torch.allclose(training_loss(logits, labels, label_smoothing=eps), smooth)
    w = class_weights([0, 1, 1, 1, 2, 2], 3)  # counts 1, 3, 2 -> 6 / (3 * n_c)
    assert torch.allclose(w, torch.tensor([2.0, 2 / 3, 1.0]))
    weighted = -(w[labels] * logp[torch.arange(3), labels]).sum() / w[labels].sum()
    assert torch.allclose(training_loss(logits, labels, weight=w), weighted)
    assert not torch.allclose(training_loss(logits, labels, weight=w), plain)


def test_class_balanced_sampler_draws_classes_about_equally_and_is_resumable():
    labels = [0] * 90 + [1] * 10
    weights = balanced_item_weights(labels, 2)
    sampler = ResumableSampler(100, seed=4, weights=weights)
    sampler.set_epoch(0)
    drawn = [labels[i] for _, i in sampler]
    assert len(drawn) == 100 and 35 <= sum(drawn) <= 65  # plain shuffling would give exactly 10
    sampler.set_epoch(0, start=37)
    assert [i for _, i in sampler] == sampler.indices()[37:]
    sampler.set_epoch(1)
    assert sampler.indices() != ResumableSampler(100, seed=4, weights=weights).indices()


# --------------------------------------------------------------------------- EMA


def test_ema_moves_towards_the_weights_by_one_minus_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.75)
    old = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model(torch.randn(5, 3))  # updates the running statistics
    ema.update(model)
    new = ema.module.state_dict()
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(new[k], 0.75 * old[k] + 0.25 * v), k
        else:
            assert torch.equal(new[k], v)
    assert not torch.equal(new["0.weight"], model[0].weight)
    assert not any(p.requires_grad for p in ema.module.parameters())


# --------------------------------------------------------------------------- resume and recipes


# Every feature on at once (class weights for the loss are a function of the training list
# alone, so the sampler, which has state in the data order, is the balancing mode resumed here).
ALL_FEATURES = dict(
    train={"accumulate": 2, "label_smoothing": 0.1, "class_balance": "sampler", "ema_decay": 0.9, "save_every_steps": 3,
           "eval_every": 0},
    model={"freeze_bn": "partial"},
    augment={"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05, "randaugment_ops": 2,
             "mixup_alpha": 0.8, "cutmix_alpha": 1.0})


def test_interrupted_and_resumed_run_with_every_feature_on_ends_bit_identical(tmp_path, monkeypatch):
    make = lambda: small_config(train_clips=7, **ALL_FEATURES)  # noqa: E731  (7 clips: 4 batches, the last short)
    straight = tmp_path / "straight"
    fit(make(), run_dir=straight, quiet=True)

    # 4 batches, updates after batches 2 and 4; a checkpoint after batch 3 (inside a group);
    # the run dies in the next update, then resumes from inside the group.
    from motionsqueeze.engine import optim as optim_mod

    original = optim_mod.LRSchedule.step

    def crash(self):
        if self.step_count == 1:
            raise KeyboardInterrupt("simulated kill")
        return original(self)

    broken = tmp_path / "broken"
    monkeypatch.setattr(optim_mod.LRSchedule, "step", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(make(), run_dir=broken, quiet=True)
    monkeypatch.setattr(optim_mod.LRSchedule, "step", original)
    saved = load_checkpoint(broken / "checkpoints" / "last.pt")
    assert saved["step"] == 3 and saved["grads"] and "ema" in saved
    fit(make(), run_dir=broken, resume="auto", quiet=True)

    a, b = load_checkpoint(straight / "checkpoints" / "last.pt"), load_checkpoint(broken / "checkpoints" / "last.pt")
    for part in ("model",):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), k
    for k in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), k
    assert "grads" not in a  # epoch-end checkpoints close their group

    # The frozen layers are those of the initial model; the EMA model is its own file.
    cfg = make()
    torch.manual_seed(cfg.train.seed)
    initial = build_model_from_config(cfg, 8).state_dict()
    frozen = freeze_batchnorm(build_model_from_config(cfg, 8), cfg.model.freeze_bn)
    for name in frozen:
        for suffix in ("weight", "running_mean", "running_var"):
            assert torch.equal(a["model"][f"{name}.{suffix}"], initial[f"{name}.{suffix}"]), name
    assert not torch.equal(a["model"]["fc.weight"], initial["fc.weight"])
    from motionsqueeze import load_model

    ema_model = load_model(straight / "ema.safetensors")
    assert not torch.equal(ema_model.state_dict()["fc.weight"], a["model"]["fc.weight"])
    assert torch.equal(ema_model.state_dict()["fc.weight"], a["ema"]["model"]["fc.weight"])


PAPER_RECIPES = [r for r in bundled_recipes() if r.startswith(("sthv1", "sthv2", "kinetics400"))]


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_paper_recipes_keep_every_training_feature_off(name):
    cfg = load_config(name)
    assert cfg.model.freeze_bn == "none"
    t = cfg.train
    assert (t.accumulate, t.label_smoothing, t.class_balance, t.ema_decay) == (1, 0.0, "none", 0.0)
    assert not cfg.augment.enabled


@pytest.mark.parametrize("name", ["hmdb51_msnet_r50_8f", "ucf101_msnet_r50_8f"])
def test_fine_tuning_recipes_follow_the_tsm_protocol(name):
    cfg = load_config(name)
    assert cfg.model.freeze_bn == "partial"
    assert cfg.model.options["dropout"] == 0.8
    assert (cfg.optim.lr, cfg.optim.reference_batch_size, cfg.optim.classifier_lr_mult) == (0.001, 64, 5.0)
    assert (cfg.schedule.epochs, tuple(cfg.schedule.milestones), cfg.optim.clip_grad_norm) == (25, (10, 20), 20)


@pytest.mark.parametrize("key, value, message", [
    ("model.freeze_bn", "some", "model.freeze_bn: must be one of none, partial, all; got 'some'"),
    ("train.accumulate", 0, r"train.accumulate: must be in the range \[1, 1000000\], got 0"),
    ("train.label_smoothing", 1.0, r"train.label_smoothing: must be in the range \[0, 1\)"),
    ("train.class_balance", "oversample", "train.class_balance: must be one of none, loss, sampler"),
    ("train.ema_decay", 1.0, r"train.ema_decay: must be in the range \[0, 1\)"),
    ("augment.hue", 0.7, r"augment.hue: must be in the range \[0, 0.5\]"),
    ("augment.mixup_alpha", -1, r"augment.mixup_alpha: must be in the range \[0, inf\)"),
    ("augment.randaugment_ops", 13, r"augment.randaugment_ops: must be in the range \[0, 12\]"),
])
def test_training_feature_settings_out_of_range_are_refused_by_name(tmp_path, key, value, message):
    from motionsqueeze.engine.config import apply_overrides

    raw = {"model": {"arch": "tsn_tiny"}, "data": {"dataset": "synthetic"}}
    raw = apply_overrides(raw, [f"{key}={value}"])
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_training_features_survive_the_run_folder_config_round_trip():
    from motionsqueeze.engine.config import config_to_dict

    cfg = small_config(**ALL_FEATURES)
    again = config_from_dict(config_to_dict(cfg))
    assert again.model.freeze_bn == "partial" and again.train == cfg.train and again.augment == cfg.augment
    assert "freeze_bn" not in config_to_dict(small_config())["model"]


def test_the_randaugment_ops_range_is_the_number_of_operations():
    from dataclasses import fields

    rng = next(f for f in fields(AugmentConfig) if f.name == "randaugment_ops").metadata["range"]
    assert (rng.lo, rng.hi) == (0, len(RAND_AUGMENT_OPS))
