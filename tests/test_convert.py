"""Import of the authors' MotionSqueeze and the official TSM checkpoints.

The yardstick is tests/official_reference.py, a re-statement of their forward passes on
their state-dict layout (their CUDA code cannot run here)."""

import copy

import pytest
import torch

from motionsqueeze import load_model
from motionsqueeze.cli import main
from motionsqueeze.models.convert import convert_state_dict, load_official
from official_reference import OfficialMSNet, OfficialTSMNet, official_checkpoint, random_weights_

T = 3  # frames: enough for both shift directions and two displacement maps
SIZE = 96  # res3 is 12x12, smaller than nothing in the 15x15 window: borders matter


def _clips(n=2, seed=1):
    return torch.randn(n, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _assert_same_logits(got, expected):
    """The requirement is 1e-4; in float64 the two agree to rounding, and the tighter bound
    also catches small departures in the MotionSqueeze path (sigma 4 instead of 5 moves
    these logits by only ~5e-5)."""
    assert got.dtype == expected.dtype == torch.float64
    assert (got - expected).abs().max() <= 1e-9


def _official_logits(net, clips, **kwargs):
    with torch.no_grad():
        return net(clips.reshape(clips.shape[0], -1, SIZE, SIZE), **kwargs)


@pytest.fixture(scope="module")
def official_ms():
    return random_weights_(OfficialMSNet(18, num_segments=T, num_classes=7), seed=3).double().eval()


def test_spec_parameter_counts_hold_for_the_reference_layout():
    # The authors' published counts: their models with 174 classes (their unused bn2 included), and the
    # official TSM code's ResNet, which has no bn2.
    with torch.device("meta"):
        counts = {
            ("ms", 18): OfficialMSNet(18), ("ms", 50): OfficialMSNet(50),
            ("tsm", 18): OfficialTSMNet(18), ("tsm", 50): OfficialTSMNet(50),
        }
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in counts.items()}
    assert counts == {("ms", 18): 11_287_015, ("ms", 50): 23_935_719,
                      ("tsm", 18): 11_265_774, ("tsm", 50): 23_864_558}


def test_authors_msnet_r18_converted_gives_the_same_logits(official_ms):
    model = load_official(official_checkpoint(official_ms, "MS"), "official-ms", arch="msnet_r18", num_segments=T)
    model.double()
    clips = _clips()
    expected = _official_logits(official_ms, clips, temperature=100)
    with torch.no_grad():
        got = model(clips)
    assert expected.abs().max() > 0.1  # a real signal, not near-zero logits
    _assert_same_logits(got, expected)
    # The comparison is sensitive to the MotionSqueeze path: another temperature differs.
    assert (_official_logits(official_ms, clips, temperature=1) - got).abs().max() > 1e-3
    record = model.card.provenance.converted_from
    assert model.card.provenance.source == "converted"
    assert record["dropped"] == [f"base_model.bn2.{k}" for k in
                                 ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    assert {k: record[k] for k in ("source", "epoch", "arch", "best_prec1")} == {
        "source": "official-ms", "epoch": 40, "arch": "MS", "best_prec1": 45.5}


def test_authors_checkpoint_without_dropout_uses_fc1():
    net = random_weights_(OfficialMSNet(18, num_segments=T, num_classes=4, dropout=0.0), seed=5).double().eval()
    ckpt = official_checkpoint(net, "MS")
    assert ckpt["state_dict"]["module.base_model.fc1.weight"].shape == (4, 512, 1)
    model = load_official(ckpt, "official-ms", arch="msnet_r18", num_segments=T).double()
    clips = _clips(1)
    with torch.no_grad():
        _assert_same_logits(model(clips), _official_logits(net, clips))


def test_official_tsm_r18_converted_gives_the_same_logits():
    net = random_weights_(OfficialTSMNet(18, num_segments=T, num_classes=6), seed=7).double().eval()
    ckpt = official_checkpoint(net, "resnet18")
    assert "module.base_model.layer1.0.conv1.net.weight" in ckpt["state_dict"]
    model = load_official(ckpt, "official-tsm", arch="tsm_r18", num_segments=T).double()
    clips = _clips()
    expected = _official_logits(net, clips)
    with torch.no_grad():
        got = model(clips)
    assert expected.abs().max() > 0.1
    _assert_same_logits(got, expected)


def test_authors_r50_layout_converts_and_loads_strictly():
    net = random_weights_(OfficialMSNet(50, num_segments=8, num_classes=174), seed=11)
    ckpt = official_checkpoint(net, "MS")
    sd = ckpt["state_dict"]
    # The authors' shapes: C = 512 after res3 of ResNet-50, C' = 64, Conv1d classifier.
    assert sd["module.base_model.chnl_reduction.0.weight"].shape == (64, 512, 1, 1)
    assert sd["module.base_model.flow_refinement.conv4.3.weight"].shape == (512, 64, 1, 1)
    assert sd["module.new_fc.weight"].shape == (174, 2048, 1)
    model = load_official(ckpt, "official-ms", arch="msnet_r50", num_segments=8)
    ours = model.state_dict()

    def our_name(key):  # the mapping of docs/weights.md, written out
        key = key.removeprefix("module.")
        if key.startswith("base_model.bn2."):
            return None  # their unused BatchNorm
        if key.startswith("new_fc."):
            return "fc." + key.split(".")[-1]
        key = key.removeprefix("base_model.")
        if key.startswith(("chnl_reduction.", "flow_refinement.")):
            return "motion.res3." + key
        return "backbone." + key

    assert set(ours) == {our_name(k) for k in sd} - {None}
    assert torch.equal(ours["backbone.layer3.5.bn3.running_var"], sd["module.base_model.layer3.5.bn3.running_var"])
    assert torch.equal(ours["motion.res3.flow_refinement.conv1.0.weight"],
                       sd["module.base_model.flow_refinement.conv1.0.weight"])
    assert torch.equal(ours["fc.weight"], sd["module.new_fc.weight"][:, :, 0])


def test_bare_state_dict_without_module_prefix_and_without_counters(official_ms):
    ckpt = official_checkpoint(official_ms, "MS", data_parallel=False)["state_dict"]
    # Checkpoints from before PyTorch 0.4.1 have no num_batches_tracked.
    ckpt = {k: v for k, v in ckpt.items() if not k.endswith("num_batches_tracked")}
    model = load_official(ckpt, "official-ms", arch="msnet_r18", num_segments=T).double()
    clips = _clips(1)
    with torch.no_grad():
        _assert_same_logits(model(clips), _official_logits(official_ms, clips))


def test_mismatches_are_reported_with_hints(official_ms):
    ckpt = official_checkpoint(official_ms, "MS")
    with pytest.raises(ValueError, match=r"ResNet-18 backbone, msnet_r50 is a ResNet-50"):
        load_official(ckpt, "official-ms", arch="msnet_r50", num_segments=T)
    with pytest.raises(ValueError, match=r"MotionSqueeze weights but tsm_r18 has no MotionSqueeze"):
        load_official(ckpt, "official-ms", arch="tsm_r18", num_segments=T)
    with pytest.raises(ValueError, match=r"use official-ms"):
        load_official(ckpt, "official-tsm", arch="msnet_r18", num_segments=T)
    tsm = official_checkpoint(OfficialTSMNet(18, num_segments=T, num_classes=3), "resnet18")
    with pytest.raises(ValueError, match=r"use official-tsm"):
        load_official(tsm, "official-ms", arch="tsm_r18", num_segments=T)
    with pytest.raises(ValueError, match=r"has MotionSqueeze but the checkpoint has none"):
        load_official(tsm, "official-tsm", arch="msnet_r18", num_segments=T)
    broken = dict(ckpt, state_dict={**ckpt["state_dict"], "module.base_model.mystery.weight": torch.ones(1)})
    with pytest.raises(ValueError, match=r"base_model.mystery.weight"):
        load_official(broken, "official-ms", arch="msnet_r18", num_segments=T)


def test_convert_state_dict_rejects_unknown_source(official_ms):
    with pytest.raises(ValueError, match="unknown checkpoint source"):
        convert_state_dict(official_checkpoint(official_ms, "MS"), "mmaction")


def test_cli_convert_writes_a_model_file_that_reproduces_the_logits(official_ms, tmp_path, capsys):
    src, out = tmp_path / "ms_best.pth.tar", tmp_path / "msnet_r18.safetensors"
    reference = copy.deepcopy(official_ms).float()  # their checkpoints are float32
    torch.save(official_checkpoint(reference, "MS"), src)
    reference.double()
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(f"class {i}" for i in range(7)) + "\n")
    argv = ["convert", "official-ms", str(src), str(out), "--arch", "msnet_r18", "--num-segments", str(T),
            "--class-names", str(labels)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "dropped 5 unused (base_model.bn2.*)" in printed and "wrote" in printed
    model = load_model(out).double()
    assert model.card.arch == "msnet_r18" and model.card.class_names[6] == "class 6"
    assert model.card.provenance.converted_from["source"] == "official-ms"
    assert model.card.provenance.converted_from["epoch"] == 40
    assert model.card.provenance.converted_from["file"] == "ms_best.pth.tar"
    assert model.card.preprocess.input_size == 224 and model.card.preprocess.resize == 256
    clips = _clips(1)
    with torch.no_grad():
        _assert_same_logits(model(clips), _official_logits(reference, clips))
    # Finished work is never overwritten without --force.
    before = out.read_bytes()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    # A wrong number of class names is refused before anything is written.
    labels.write_text("a\nb\n")
    assert main(argv[:-2] + ["--class-names", str(labels), "--force"]) == 2
    assert "2 class names for a model with 7 outputs" in capsys.readouterr().err
    assert out.read_bytes() == before
