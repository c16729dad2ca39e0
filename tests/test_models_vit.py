"""Plaintext ViT-Lite: configs, state_dict layout, and forward semantics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from privit.models.attention import AttnMode, MPCAttention, relu_softmax, scale_attention
from privit.models.config import MODEL_CONFIGS, ViTConfig, get_config
from privit.models.schema import count_elements, describe_keys
from privit.models.vit import ViTLite

# ------------------------------------------------------------------ configs


def test_registry_shapes() -> None:
    c7, c9, cd = (MODEL_CONFIGS[n] for n in ("vit_7_4_32", "vit_9_12_64", "vit_digits"))
    assert (c7.n_tokens, c7.head_dim, c7.dim, c7.depth, c7.heads, c7.mlp_hidden,
            c7.num_classes) == (65, 64, 256, 7, 4, 512, 10)
    assert (c9.n_tokens, c9.head_dim, c9.dim, c9.depth, c9.heads, c9.mlp_hidden,
            c9.num_classes) == (257, 16, 192, 9, 12, 384, 200)
    assert (cd.n_tokens, cd.in_chans, cd.img_size, cd.patch_size) == (17, 1, 8, 2)
    cb = MODEL_CONFIGS["vit_base_16"]
    assert (cb.n_tokens, cb.head_dim, cb.dim, cb.depth, cb.heads, cb.mlp_hidden,
            cb.num_classes) == (197, 64, 768, 12, 12, 3072, 1000)
    assert MODEL_CONFIGS["vit_7_4_32_teacher"].teacher
    assert set(MODEL_CONFIGS) == {"vit_7_4_32", "vit_7_4_32_teacher", "vit_9_12_64",
                                  "vit_9_12_64_teacher", "vit_digits", "vit_digits_teacher",
                                  "vit_base_16", "vit_base_16_teacher"}
    assert get_config("vit_7_4_32", num_classes=100).num_classes == 100
    assert get_config("vit_7_4_32", linear_gelu=True).linear_gelu


@pytest.mark.parametrize("changes, message", [
    (dict(dim=30), "not divisible by heads"),
    (dict(img_size=30), "not divisible by patch_size"),
    (dict(heads=0), "heads must be a positive int"),
    (dict(teacher=True, linear_gelu=True), "only for student"),
])
def test_config_validation(changes: dict, message: str) -> None:
    base = dict(name="x", img_size=32, in_chans=3, patch_size=4, dim=32, depth=1, heads=4,
                mlp_hidden=64, num_classes=10)
    with pytest.raises(ValueError, match=message):
        ViTConfig(**{**base, **changes})


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'vit_x'"):
        get_config("vit_x")


# ------------------------------------------------------- state_dict layout

BLOCK0_VIT7 = [
    ("classifier.blocks.0.pre_norm.weight", (256,)),
    ("classifier.blocks.0.pre_norm.bias", (256,)),
    ("classifier.blocks.0.self_attn.alpha", (1, 4, 1, 1)),
    ("classifier.blocks.0.self_attn.qkv.weight", (768, 256)),
    ("classifier.blocks.0.self_attn.proj.weight", (256, 256)),
    ("classifier.blocks.0.self_attn.proj.bias", (256,)),
    ("classifier.blocks.0.linear1.weight", (512, 256)),
    ("classifier.blocks.0.linear1.bias", (512,)),
    ("classifier.blocks.0.norm1.weight", (256,)),
    ("classifier.blocks.0.norm1.bias", (256,)),
    ("classifier.blocks.0.linear2.weight", (256, 512)),
    ("classifier.blocks.0.linear2.bias", (256,)),
]


@pytest.mark.parametrize("name, classes, linear_gelu, n_keys, n_elements", [
    ("vit_7_4_32", None, False, 92, 3_716_902),
    ("vit_7_4_32", 100, False, 92, 3_740_032),
    ("vit_7_4_32", None, True, 99, 3_717_357),
    ("vit_9_12_64", None, False, 116, 2_766_068),
    ("vit_7_4_32_teacher", None, False, 85, 3_716_874),
    ("vit_9_12_64_teacher", None, False, 107, 2_766_068 - 108),
])
def test_state_dict_layout(name: str, classes: int | None, linear_gelu: bool, n_keys: int,
                           n_elements: int) -> None:
    config = get_config(name, num_classes=classes, linear_gelu=linear_gelu)
    sd = ViTLite(config).state_dict()
    got = [(k, tuple(v.shape)) for k, v in sd.items()]
    assert got == [(k.name, k.shape) for k in describe_keys(config)]
    assert len(sd) == n_keys
    assert sum(v.numel() for v in sd.values()) == n_elements
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert all(k.startswith(("tokenizer.", "classifier.")) for k in sd)


def test_vit_7_4_32_exact_key_names() -> None:
    specs = [(k.name, k.shape) for k in describe_keys(MODEL_CONFIGS["vit_7_4_32"])]
    assert specs[:4] == [("tokenizer.conv_layers.0.0.weight", (256, 3, 4, 4)),
                         ("tokenizer.conv_layers.0.0.bias", (256,)),
                         ("classifier.class_emb", (1, 1, 256)),
                         ("classifier.positional_emb", (1, 65, 256))]
    assert specs[4:16] == BLOCK0_VIT7
    assert specs[-4:] == [("classifier.norm.weight", (256,)), ("classifier.norm.bias", (256,)),
                          ("classifier.fc.weight", (10, 256)), ("classifier.fc.bias", (10,))]


def test_mpcvit_plus_beta_first_in_block() -> None:
    specs = describe_keys(get_config("vit_7_4_32", linear_gelu=True))
    assert (specs[4].name, specs[4].shape) == ("classifier.blocks.0.beta", (1, 65, 1))
    assert specs[5].name == "classifier.blocks.0.pre_norm.weight"


@pytest.mark.parametrize("name, n_keys, n_elements", [
    ("vit_7_4_32_teacher", 187, 28_658_767),
    ("vit_9_12_64_teacher", 237, 24_999_085),
])
def test_teacher_dead_parameter_schema(name: str, n_keys: int, n_elements: int) -> None:
    specs = describe_keys(MODEL_CONFIGS[name], include_dead=True)
    assert len(specs) == n_keys and count_elements(specs) == n_elements
    block = [k.name.split(".", 3)[3] for k in specs if k.name.startswith("classifier.blocks.0.")]
    assert block == [
        "pre_norm.weight", "pre_norm.bias", "self_attn.W", "self_attn.kernel_s",
        "self_attn.kernel_o", "self_attn.qkv.weight", "self_attn.proj.weight",
        "self_attn.proj.bias", "self_attn.qkv_expand.0.weight", "self_attn.qkv_expand.1.weight",
        "self_attn.proj_expand.0.weight", "self_attn.proj_expand.0.bias",
        "self_attn.proj_expand.1.weight", "self_attn.proj_expand.1.bias",
        "self_attn.dw_conv.weight", "linear1.weight", "linear1.bias", "norm1.weight",
        "norm1.bias", "linear2.weight", "linear2.bias", "linear_expand.0.weight",
        "linear_expand.0.bias", "linear_expand.1.weight", "linear_expand.1.bias"]
    assert [k.name for k in specs[-4:]] == ["classifier.fc_expand.0.weight",
                                            "classifier.fc_expand.0.bias",
                                            "classifier.fc_expand.1.weight",
                                            "classifier.fc_expand.1.bias"]


# ------------------------------------------------------- attention kernels

def _alpha(attn: MPCAttention) -> torch.nn.Parameter:
    assert attn.alpha is not None
    return attn.alpha


def test_relu_softmax_nonpositive_row_is_zero() -> None:
    s = torch.tensor([[-1.0, -2.0, 0.0], [1.0, -1.0, 3.0]])
    a = relu_softmax(s)
    assert torch.equal(a[0], torch.zeros(3))
    torch.testing.assert_close(a[1], torch.tensor([1.0, 0.0, 3.0]) / (4.0 + 1e-5))


def test_scale_attention_divides_by_n_including_cls() -> None:
    config = MODEL_CONFIGS["vit_digits"]
    attn = MPCAttention(config.dim, config.heads)
    with torch.no_grad():
        _alpha(attn).zero_()
    s = torch.randn(2, config.heads, config.n_tokens, config.n_tokens)
    assert torch.equal(attn.attention_weights(s), s / 17)
    assert torch.equal(scale_attention(s), s / 17)
    assert attn.attention_modes() == [AttnMode.SCALE] * 4


# ------------------------------------------------------ reference forward

def _randomise(model: ViTLite, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(("alpha", "beta")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _reference_logits(sd: dict, config: ViTConfig, img: torch.Tensor, alpha: list[list[int]],
                      cct: bool = True) -> torch.Tensor:
    """Independent forward from explicit ops (cct=False: standard pre-norm MLP block)."""
    d, h, dh, n = config.dim, config.heads, config.head_dim, config.n_tokens

    def ln(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, (d,), sd[prefix + ".weight"], sd[prefix + ".bias"], eps=1e-5)

    t = F.conv2d(img, sd["tokenizer.conv_layers.0.0.weight"], sd["tokenizer.conv_layers.0.0.bias"],
                 stride=config.patch_size)
    t = t.flatten(2).transpose(1, 2)
    x = torch.cat([sd["classifier.class_emb"].expand(img.shape[0], 1, d), t], 1)
    x = x + sd["classifier.positional_emb"]
    for layer in range(config.depth):
        p = f"classifier.blocks.{layer}."
        y = ln(x, p + "pre_norm")
        qkv = y @ sd[p + "self_attn.qkv.weight"].T
        outs = []
        for head in range(h):
            q, k, v = (qkv[..., j * d + head * dh: j * d + (head + 1) * dh] for j in range(3))
            s = q @ k.transpose(1, 2) / math.sqrt(dh)
            if config.teacher:
                a = torch.exp(s - s.max(-1, keepdim=True).values)
                a = a / a.sum(-1, keepdim=True)
            elif alpha[layer][head] == 1:
                r = s.clamp(min=0)
                a = r / (r.sum(-1, keepdim=True) + 1e-5)
            else:
                a = s / n
            outs.append(a @ v)
        proj_w, proj_b = sd[p + "self_attn.proj.weight"], sd[p + "self_attn.proj.bias"]
        x = x + torch.cat(outs, -1) @ proj_w.T + proj_b
        if cct:
            x = ln(x, p + "norm1")
            mlp_in = x
        else:
            mlp_in = ln(x, p + "norm1")
        hid = mlp_in @ sd[p + "linear1.weight"].T + sd[p + "linear1.bias"]
        hid = 0.5 * hid * (1 + torch.erf(hid / math.sqrt(2)))
        x = x + hid @ sd[p + "linear2.weight"].T + sd[p + "linear2.bias"]
    x = ln(x, "classifier.norm")
    return x[:, 0] @ sd["classifier.fc.weight"].T + sd["classifier.fc.bias"]


ALPHA_DIGITS = [[1, 0, 1, 0], [0, 0, 1, 1]]


@pytest.mark.parametrize("name", ["vit_digits", "vit_digits_teacher"])
def test_forward_matches_explicit_reference(name: str) -> None:
    config = MODEL_CONFIGS[name]
    model = ViTLite(config).eval()
    _randomise(model)
    if not config.teacher:
        model.set_alpha(torch.tensor(ALPHA_DIGITS))
    img = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(img)
        ref = _reference_logits(model.state_dict(), config, img, ALPHA_DIGITS)
        wrong_block = _reference_logits(model.state_dict(), config, img, ALPHA_DIGITS, cct=False)
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 10)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    # The reference is sensitive to the CCT block order.
    assert (logits - wrong_block).abs().max() > 1e-2


def test_scale_divisor_matters_in_model() -> None:
    config = MODEL_CONFIGS["vit_digits"]
    model = ViTLite(config).eval()
    _randomise(model)
    model.set_alpha(torch.zeros(2, 4))
    attn = model.blocks[0].self_attn
    s = torch.randn(1, 4, 17, 17)
    assert torch.equal(attn.attention_weights(s), s / config.n_tokens)
    assert model.attention_modes() == [[AttnMode.SCALE] * 4] * 2


def test_attention_modes_and_alpha_roundtrip() -> None:
    model = ViTLite(MODEL_CONFIGS["vit_digits"])
    assert torch.equal(model.get_alpha(), torch.ones(2, 4))  # fresh = all ReLU-softmax
    model.set_alpha(ALPHA_DIGITS)
    assert torch.equal(model.get_alpha(), torch.tensor(ALPHA_DIGITS, dtype=torch.float32))
    r, s = AttnMode.RELU_SOFTMAX, AttnMode.SCALE
    assert model.attention_modes() == [[r, s, r, s], [s, s, r, r]]
    teacher = ViTLite(MODEL_CONFIGS["vit_digits_teacher"])
    assert teacher.attention_modes() == [[AttnMode.SOFTMAX] * 4] * 2
    with pytest.raises(ValueError, match="teacher"):
        teacher.set_alpha(torch.ones(2, 4))
    with pytest.raises(ValueError, match="shape"):
        model.set_alpha(torch.ones(3, 4))


def test_non_binary_alpha_rejected_outside_search() -> None:
    model = ViTLite(MODEL_CONFIGS["vit_digits"]).eval()
    model.set_alpha(torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="layer 0"):
        model.check_binary_alpha()
    with pytest.raises(ValueError, match="exactly 0 or 1"):
        model(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError):
        model.attention_modes()


def test_search_relaxation_mixes_and_trains_alpha() -> None:
    model = ViTLite(MODEL_CONFIGS["vit_digits"])
    _randomise(model)
    img = torch.randn(2, 1, 8, 8)
    model.set_alpha(ALPHA_DIGITS)
    with torch.no_grad():
        hard = model(img)
    model.set_search(True)
    assert model.search and _alpha(model.blocks[0].self_attn).requires_grad
    with torch.no_grad():
        assert torch.equal(model(img), hard)  # binary alpha: the mix is exact
    model.set_alpha(torch.full((2, 4), 0.25))
    s = torch.randn(1, 4, 17, 17)
    mixed = model.blocks[0].self_attn.attention_weights(s)
    torch.testing.assert_close(mixed, 0.25 * relu_softmax(s) + 0.75 * s / 17)
    model(img).sum().backward()
    assert _alpha(model.blocks[0].self_attn).grad is not None
    model.set_search(False)
    assert not _alpha(model.blocks[0].self_attn).requires_grad


def test_mpcvit_plus_beta_gate() -> None:
    plain = ViTLite(MODEL_CONFIGS["vit_digits"]).eval()
    _randomise(plain)
    plus = ViTLite(get_config("vit_digits", linear_gelu=True)).eval()
    missing, unexpected = plus.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["classifier.blocks.0.beta", "classifier.blocks.1.beta"]
    assert not unexpected
    img = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(plus(img), plain(img))  # beta = 1 everywhere keeps GeLU
        block = plus.blocks[0]
        assert block.beta is not None
        block.beta.zero_()
        x = torch.randn(2, 17, 32)
        linear = torch.relu(block.linear2(block.linear1(x)))
        torch.testing.assert_close(block.mlp(x), linear)


def test_gelu_choice() -> None:
    erf = ViTLite(MODEL_CONFIGS["vit_digits"]).eval()
    _randomise(erf)
    tanh = ViTLite(MODEL_CONFIGS["vit_digits"], gelu="tanh").eval()
    tanh.load_state_dict(erf.state_dict())
    img = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        diff = (erf(img) - tanh(img)).abs().max().item()
    assert 0 < diff < 0.1
    with pytest.raises(ValueError, match="unknown gelu"):
        ViTLite(MODEL_CONFIGS["vit_digits"], gelu="poly")


def test_training_mode_dropout_and_drop_path() -> None:
    model = ViTLite(MODEL_CONFIGS["vit_digits"], attn_dropout=0.1, drop_path=0.1)
    img = torch.randn(4, 1, 8, 8)
    model.train()
    model(img).sum().backward()
    assert model.classifier.fc.weight.grad is not None
    assert _alpha(model.blocks[0].self_attn).grad is None  # frozen outside search
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(img), model(img))
