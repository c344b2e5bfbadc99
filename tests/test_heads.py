from __future__ import annotations

import pytest
import torch

from phonemekit.errors import ConfigError
from phonemekit.models.heads import available_heads, build_head
from phonemekit.models.heads.ctc import reverse_within_length


@pytest.mark.parametrize("kind", ["mlp", "ctc", "conv-ctc", "conv-pool"])
def test_head_shapes(kind):
    head = build_head(kind, 24, 7).eval()
    x, lengths = torch.randn(3, 11, 24), torch.tensor([11, 5, 1])
    out = head(x, lengths)
    if head.output == "logits":
        assert out.shape == (3, 7)
    else:
        assert out.shape == (3, 11, 8) and head.blank == 7
        assert torch.allclose(out.exp().sum(-1), torch.ones(3, 11), atol=1e-5)


@pytest.mark.parametrize(
    "kind,options",
    [
        ("mlp", None),
        ("ctc", None),
        ("conv-ctc", None),
        ("conv-ctc", {"attention_heads": 0}),
        ("conv-ctc", {"stride": 2}),
        ("conv-ctc", {"stride": 3}),
        ("conv-ctc", {"stride": 2, "input_norm": "standardize"}),
        ("conv-pool", None),
        ("conv-pool", {"stride": 3, "pooling": "meanmax"}),
        ("conv-pool", {"stride": 2, "attention_heads": 0, "input_norm": "standardize"}),
    ],
)
def test_heads_ignore_padding(kind, options):
    head = build_head(kind, 16, 5, options).eval()
    for n in (6, 7):  # a stride that divides the length, and one that leaves a partial last window
        x = torch.randn(1, n, 16)
        padded = torch.cat([x, torch.randn(1, 4, 16) * 10], 1)
        a = head(x, torch.tensor([n]))
        b = head(padded, torch.tensor([n]))
        if head.output == "ctc":
            frames = int(head.out_lengths(torch.tensor([n]))[0])
            assert a.shape[1] == frames
            b = b[:, :frames]
        assert torch.allclose(a, b, atol=1e-5)


def test_a_strided_head_scores_fewer_frames_and_trains():
    import torch.nn.functional as F

    head = build_head("conv-ctc", 16, 5, {"stride": 2})
    x, lengths = torch.randn(3, 11, 16), torch.tensor([11, 6, 1])
    out = head(x, lengths)
    out_len = head.out_lengths(lengths)
    assert out.shape == (3, 6, 6) and out_len.tolist() == [6, 3, 1]
    loss = F.ctc_loss(out.transpose(0, 1), torch.tensor([[1], [2], [3]]), out_len, torch.ones(3, dtype=torch.long), blank=head.blank)
    loss.backward()
    assert torch.isfinite(loss) and head.proj[1].weight.grad is not None


def test_standardized_input_is_folded_into_the_projection():
    """Fitted statistics, applied by the folded projection, equal standardising
    every frame and then projecting; a stride averages the same frames."""
    import numpy as np

    from phonemekit.models.heads.mlp import Standardize

    torch.manual_seed(0)
    head = build_head("conv-pool", 16, 5, {"input_norm": "standardize", "stride": 2}).eval()
    items = [np.random.default_rng(i).normal(3.0, 2.0 + i, (9 + i, 16)).astype(np.float32) for i in range(4)]
    head.fit_statistics(items)
    norm, linear = head.proj
    assert isinstance(norm, Standardize) and torch.allclose(norm.mean, torch.from_numpy(np.concatenate(items).mean(0)), atol=1e-5)
    x, n = torch.from_numpy(items[0])[None], torch.tensor([9])
    h, valid = head.trunk(x, n)
    explicit = linear((x - norm.mean) * norm.inv_std)  # (1, 9, C) every frame, then pairs averaged
    pairs = torch.stack([explicit[0, i : i + 2].mean(0) for i in range(0, 9, 2)])
    assert valid.tolist() == [[True] * 5]
    head.blocks, head.attention = torch.nn.ModuleList(), None  # the trunk's first stage alone
    assert torch.allclose(head.trunk(x, n)[0][0], pairs, atol=1e-5)


def test_a_pooled_conv_head_exports_with_parity(tmp_path):
    from phonemekit.config import HeadConfig, ModelConfig
    from phonemekit.deploy import onnx as ox
    from phonemekit.deploy.benchmark import _spec_for
    from phonemekit.deploy.export import HeadGraph, max_frames
    from phonemekit.models.model import PhonemeModel
    from phonemekit.models.presets import HEADS

    for i, head in enumerate((HEADS["conv-pool"], HeadConfig("conv-pool", {"pooling": "meanmax", "stride": 3}))):
        model = PhonemeModel(ModelConfig(name="p", head=head), ["a", "b", "c"], _spec_for(32)).eval()
        graph = HeadGraph(model)
        ox.export_torchscript(graph, (torch.randn(2, 20, 32), torch.tensor([20, 13])), tmp_path / f"p{i}.onnx", ox.GraphIO.of("head", False), max_frames(model))
        sess = ox.session(tmp_path / f"p{i}.onnx")
        x, n = torch.randn(3, 17, 32), torch.tensor([17, 9, 4])
        with torch.no_grad():
            ref = graph(x, n)[0].numpy()
        got = sess.run(["probs"], {"features": x.numpy(), "lengths": n.numpy()})[0]
        assert abs(got - ref).max() < 1e-5


def test_reverse_within_length():
    x = torch.arange(5.0).view(1, 5, 1).repeat(2, 1, 1)
    r = reverse_within_length(x, torch.tensor([5, 3]))
    assert r[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert r[1, :, 0].tolist() == [2, 1, 0, 3, 4]


def test_registry_and_bad_options():
    assert {"mlp", "ctc", "conv-ctc", "conv-pool"} <= set(available_heads())
    with pytest.raises(ConfigError, match="head.options"):
        build_head("ctc", 8, 3, {"nonsense": 1})
    with pytest.raises(ConfigError, match="multiple of attention_heads"):
        build_head("conv-ctc", 8, 3, {"channels": 10, "attention_heads": 4})
    with pytest.raises(ConfigError, match="unknown head"):
        build_head("nope", 8, 3)


@pytest.mark.parametrize(
    "kind,options,key",
    [
        ("ctc", {"hidden": 10**9}, "head.options.hidden"),  # would try to allocate terabytes
        ("ctc", {"layers": 0}, "head.options.layers"),
        ("ctc", {"dropout": 1.5}, "head.options.dropout"),
        ("ctc", {"proj": "wide"}, "head.options.proj"),
        ("mlp", {"hidden": [64, -1]}, "head.options.hidden[1]"),
        ("mlp", {"hidden": 64}, "head.options.hidden"),
        ("mlp", {"pooling": "max"}, "head.options.pooling"),
        ("conv-ctc", {"kernel": 4}, "head.options.kernel"),
        ("conv-ctc", {"stride": 5}, "head.options.stride"),
        ("conv-ctc", {"input_norm": "batch"}, "head.options.input_norm"),
        ("conv-pool", {"pooling": "max"}, "head.options.pooling"),
        ("conv-pool", {"queries": 0}, "head.options.queries"),
    ],
)
def test_head_options_are_typed_and_bounded(kind, options, key):
    from phonemekit.config import HeadConfig
    from phonemekit.models.heads import check_head_options

    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        check_head_options(HeadConfig(kind, options))


def test_head_options_from_a_config_file_become_the_typed_dataclass():
    from phonemekit.models.heads import head_options
    from phonemekit.models.heads.mlp import MLPOptions

    opts = head_options("mlp", {"hidden": [32, 16], "pooling": "mean"})
    assert opts == MLPOptions(hidden=(32, 16), pooling="mean")
    assert build_head("mlp", 8, 3, {"hidden": [32, 16]}).opts.hidden == (32, 16)


def test_a_strided_head_exports_to_onnx_with_parity(tmp_path):
    """AveragePool with ceil_mode and the shorter output lengths survive the export, at lengths other than the example's."""
    from phonemekit.config import ModelConfig
    from phonemekit.deploy import onnx as ox
    from phonemekit.deploy.benchmark import _spec_for
    from phonemekit.deploy.export import HeadGraph, max_frames
    from phonemekit.models.model import PhonemeModel
    from phonemekit.models.presets import HEADS

    model = PhonemeModel(ModelConfig(name="s2", head=HEADS["conv-ctc-s2"]), ["a", "b", "c"], _spec_for(32)).eval()
    graph = HeadGraph(model)
    example = (torch.randn(2, 20, 32), torch.tensor([20, 13]))
    ox.export_torchscript(graph, example, tmp_path / "s2.onnx", ox.GraphIO.of("head", True), max_frames(model))
    sess = ox.session(tmp_path / "s2.onnx")
    x, n = torch.randn(3, 17, 32), torch.tensor([17, 9, 4])
    with torch.no_grad():
        ref = graph(x, n)[0].numpy()
    got = sess.run(["probs"], {"features": x.numpy(), "lengths": n.numpy()})[0]
    assert abs(got - ref).max() < 1e-5
