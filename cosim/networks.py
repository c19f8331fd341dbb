"""Layer-shape descriptions of the papers' networks, for the analytic report.

Only the layers that are GEMMs on the engine are listed (convolutions, linear
layers, attention matmuls); pooling, normalization, activations and residual
adds change shapes and sparsity only.  Their parameters are still counted
(``extra_params``) so that parameter totals can be checked against published
figures.  Shapes are per sample; the batch is a property of the report.

Each network is built for a dataset:

* ``cifar10`` (3x32x32, 10 classes): the usual CIFAR adaptations -- VGG with one
  512->10 classifier, ResNets and DenseNet with a 3x3 stride-1 stem and no stem
  pooling, MobileNetV2 with stride 1 in its stem and second stage, a small
  AlexNet (3x3 stride-2 stem), LeNet-5 as published;
* ``imagenet`` (3x224x224, 1000 classes): the torchvision definitions;
* ``seq128``: one BERT-base encoder layer (sequence 128, d 768, 12 heads, FFN 3072).

Flags per layer: ``relu`` -- the layer's own epilogue applies ReLU (and writes the
mask); ``grad_masked`` -- the gradient at the layer's output is masked by a ReLU
(also true for the last conv of a residual block whose add is followed by a ReLU);
``in_relu`` -- the layer's input is a ReLU output (zeros in the forward operand,
and only its nonzero positions need a gradient).
"""
from __future__ import annotations

from dataclasses import dataclass, field


class NetworkError(ValueError):
    """Unknown network or dataset; the message lists the choices."""


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str                 # "conv", "linear" or "matmul"
    cin: int                  # conv: input channels; linear: in features; matmul: K
    cout: int                 # conv: output channels; linear: out features; matmul: N
    k: int = 1
    stride: int = 1
    pad: int = 0
    h: int = 1                # conv: input map; linear: tokens per sample; matmul: M
    w: int = 1
    groups: int = 1
    count: int = 1            # matmul: independent products per sample (heads)
    bias: bool = False
    relu: bool = False
    grad_masked: bool = False
    in_relu: bool = False
    extra_params: int = 0     # normalization parameters attached to this layer

    @property
    def ho(self) -> int:
        return (self.h + 2 * self.pad - self.k) // self.stride + 1 if self.kind == "conv" else self.h

    @property
    def wo(self) -> int:
        return (self.w + 2 * self.pad - self.k) // self.stride + 1 if self.kind == "conv" else self.w

    @property
    def has_weight(self) -> bool:
        return self.kind != "matmul"

    @property
    def fan_in(self) -> int:
        """Inputs of one output value (one row of the weight matrix of one group)."""
        return self.cin // self.groups * self.k * self.k

    @property
    def out_units(self) -> int:
        """Output channels / neurons: one ADA-GP predictor sample each."""
        return self.cout

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the forward pass, per sample."""
        if self.kind == "matmul":
            return self.count * self.h * self.cin * self.cout
        return self.cout * self.ho * self.wo * self.fan_in

    @property
    def weight_params(self) -> int:
        return self.cout * self.fan_in if self.has_weight else 0

    @property
    def params(self) -> int:
        return self.weight_params + (self.cout if self.bias else 0) + self.extra_params


@dataclass
class Network:
    name: str
    dataset: str
    input: tuple              # (C, H, W) or (tokens, features)
    layers: list = field(default_factory=list)
    input_grad: bool = False  # True if the first layer's input needs a gradient (a layer in a stack)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.dataset}"

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.layers)

    @property
    def params(self) -> int:
        return sum(l.params for l in self.layers)


class _Builder:
    """Tracks the activation shape and whether it is a ReLU output while layers are added."""

    def __init__(self, name, dataset, c, h, w):
        self.net = Network(name, dataset, (c, h, w))
        self.c, self.h, self.w = c, h, w
        self.relu_out = False

    def conv(self, name, cout, k, stride=1, pad=0, groups=1, bias=False, bn=False, relu=True,
             grad_masked=None, pre_norm=0):
        l = Layer(name, "conv", self.c, cout, k, stride, pad, self.h, self.w, groups, bias=bias,
                  relu=relu, grad_masked=relu if grad_masked is None else grad_masked,
                  in_relu=self.relu_out, extra_params=(2 * cout if bn else 0) + 2 * pre_norm)
        self.net.layers.append(l)
        self.c, self.h, self.w = cout, l.ho, l.wo
        self.relu_out = relu
        return l

    def pool(self, k, stride=None, pad=0):
        stride = stride or k
        self.h = (self.h + 2 * pad - k) // stride + 1
        self.w = (self.w + 2 * pad - k) // stride + 1

    def global_pool(self):
        self.h = self.w = 1

    def linear(self, name, cout, bias=True, relu=False, pre_norm=0, tokens=1):
        l = Layer(name, "linear", self.c * self.h * self.w, cout, h=tokens, bias=bias, relu=relu,
                  grad_masked=relu, in_relu=self.relu_out, extra_params=2 * pre_norm)
        self.net.layers.append(l)
        self.c, self.h, self.w = cout, 1, 1
        self.relu_out = relu
        return l


DATASETS = {"cifar10": (3, 32, 32, 10), "imagenet": (3, 224, 224, 1000)}

VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def vgg(name, dataset):
    c, h, w, classes = DATASETS[dataset]
    b = _Builder(name, dataset, c, h, w)
    i = 0
    for v in VGG_CFG[name]:
        if v == "M":
            b.pool(2)
        else:
            i += 1
            b.conv(f"conv{i}", v, 3, 1, 1, bias=True)
    if dataset == "imagenet":
        b.linear("fc1", 4096, relu=True)
        b.linear("fc2", 4096, relu=True)
    b.linear("fc", classes)
    return b.net


RESNET_CFG = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
              "resnet50": ("bottleneck", [3, 4, 6, 3])}


def resnet(name, dataset):
    c, h, w, classes = DATASETS[dataset]
    kind, blocks = RESNET_CFG[name]
    b = _Builder(name, dataset, c, h, w)
    if dataset == "imagenet":
        b.conv("conv1", 64, 7, 2, 3, bn=True)
        b.pool(3, 2, 1)
    else:
        b.conv("conv1", 64, 3, 1, 1, bn=True)
    expansion = 4 if kind == "bottleneck" else 1
    for stage, n in enumerate(blocks):
        width = 64 << stage
        for j in range(n):
            stride = 2 if stage > 0 and j == 0 else 1
            cin, hin, win, rin = b.c, b.h, b.w, b.relu_out
            p = f"layer{stage + 1}.{j}."
            # the last conv of the block and the shortcut conv end in add + ReLU: masked gradient
            if kind == "basic":
                b.conv(p + "conv1", width, 3, stride, 1, bn=True)
                b.conv(p + "conv2", width, 3, 1, 1, bn=True, relu=False, grad_masked=True)
            else:
                b.conv(p + "conv1", width, 1, 1, 0, bn=True)
                b.conv(p + "conv2", width, 3, stride, 1, bn=True)
                b.conv(p + "conv3", width * expansion, 1, 1, 0, bn=True, relu=False, grad_masked=True)
            if stride != 1 or cin != width * expansion:
                out = (b.c, b.h, b.w)
                b.c, b.h, b.w, b.relu_out = cin, hin, win, rin
                b.conv(p + "downsample", width * expansion, 1, stride, 0, bn=True, relu=False,
                       grad_masked=True)
                b.c, b.h, b.w = out
            b.relu_out = True                                  # ReLU after the add
    b.global_pool()
    b.linear("fc", classes)
    return b.net


MBV2_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenetv2(name, dataset):
    c, h, w, classes = DATASETS[dataset]
    b = _Builder(name, dataset, c, h, w)
    cifar = dataset == "cifar10"
    b.conv("conv_stem", 32, 3, 1 if cifar else 2, 1, bn=True)       # ReLU6 counted as ReLU
    for stage, (t, cout, n, s) in enumerate(MBV2_CFG):
        if cifar and stage == 1:
            s = 1
        for j in range(n):
            p = f"block{stage}.{j}."
            hidden = b.c * t
            if t != 1:
                b.conv(p + "expand", hidden, 1, bn=True)
            b.conv(p + "dw", hidden, 3, s if j == 0 else 1, 1, groups=hidden, bn=True)
            b.conv(p + "project", cout, 1, bn=True, relu=False)     # linear bottleneck
    b.conv("conv_last", 1280, 1, bn=True)
    b.global_pool()
    b.linear("fc", classes)
    return b.net


def alexnet(name, dataset):
    c, h, w, classes = DATASETS[dataset]
    b = _Builder(name, dataset, c, h, w)
    if dataset == "imagenet":
        b.conv("conv1", 64, 11, 4, 2, bias=True)
        b.pool(3, 2)
        b.conv("conv2", 192, 5, 1, 2, bias=True)
        b.pool(3, 2)
    else:
        b.conv("conv1", 64, 3, 2, 1, bias=True)
        b.pool(2)
        b.conv("conv2", 192, 3, 1, 1, bias=True)
        b.pool(2)
    b.conv("conv3", 384, 3, 1, 1, bias=True)
    b.conv("conv4", 256, 3, 1, 1, bias=True)
    b.conv("conv5", 256, 3, 1, 1, bias=True)
    if dataset == "imagenet":
        b.pool(3, 2)                         # 13 -> 6 (adaptive 6x6 pool is then the identity)
    else:
        b.pool(2)
    b.linear("fc1", 4096, relu=True)
    b.linear("fc2", 4096, relu=True)
    b.linear("fc3", classes)
    return b.net


def lenet5(name, dataset):
    c, h, w, classes = DATASETS[dataset]
    b = _Builder(name, dataset, c, h, w)
    b.conv("conv1", 6, 5, bias=True)
    b.pool(2)
    b.conv("conv2", 16, 5, bias=True)
    b.pool(2)
    b.linear("fc1", 120, relu=True)
    b.linear("fc2", 84, relu=True)
    b.linear("fc3", classes)
    return b.net


def densenet121(name, dataset, growth=32, blocks=(6, 12, 24, 16), bn_size=4):
    c, h, w, classes = DATASETS[dataset]
    b = _Builder(name, dataset, c, h, w)
    if dataset == "imagenet":
        b.conv("conv0", 2 * growth, 7, 2, 3, bn=True)
        b.pool(3, 2, 1)
    else:
        b.conv("conv0", 2 * growth, 3, 1, 1, bn=True)
    for i, n in enumerate(blocks):
        for j in range(n):
            p = f"block{i + 1}.{j}."
            cin, hin, win = b.c, b.h, b.w
            b.relu_out = True                      # pre-activation: BN-ReLU before each conv
            b.conv(p + "conv1", bn_size * growth, 1, pre_norm=cin)
            b.conv(p + "conv2", growth, 3, 1, 1, pre_norm=bn_size * growth, relu=False,
                   grad_masked=False)
            b.c, b.h, b.w = cin + growth, hin, win    # concatenation
        if i != len(blocks) - 1:
            b.relu_out = True
            b.conv(f"trans{i + 1}", b.c // 2, 1, pre_norm=b.c, relu=False)
            b.pool(2)
    b.relu_out = True
    c_last = b.c
    b.global_pool()
    b.linear("fc", classes, pre_norm=c_last)
    return b.net


def bert_layer(name, dataset, seq=128, d=768, heads=12, ffn=3072):
    net = Network(name, dataset, (seq, d), input_grad=True)
    dh = d // heads
    lin = lambda n, i, o, **kw: Layer(n, "linear", i, o, h=seq, bias=True, **kw)
    net.layers = [
        lin("q", d, d), lin("k", d, d), lin("v", d, d),
        Layer("scores", "matmul", dh, seq, h=seq, count=heads),        # Q.K^T per head
        Layer("context", "matmul", seq, dh, h=seq, count=heads),       # softmax(S).V per head
        lin("out", d, d, extra_params=2 * d),                          # + LayerNorm
        lin("ffn1", d, ffn),                                           # GELU: no ReLU sparsity
        lin("ffn2", ffn, d, extra_params=2 * d),                       # + LayerNorm
    ]
    return net


NETWORKS = {
    **{n: (vgg, ("cifar10", "imagenet")) for n in VGG_CFG},
    **{n: (resnet, ("cifar10", "imagenet")) for n in RESNET_CFG},
    "mobilenetv2": (mobilenetv2, ("cifar10", "imagenet")),
    "alexnet": (alexnet, ("cifar10", "imagenet")),
    "lenet5": (lenet5, ("cifar10",)),
    "densenet121": (densenet121, ("cifar10", "imagenet")),
    "bert_layer": (bert_layer, ("seq128",)),
}


def build(name: str, dataset: str | None = None) -> Network:
    """One network; ``name`` may be ``"vgg16/imagenet"``."""
    if "/" in name and dataset is None:
        name, dataset = name.split("/", 1)
    if name not in NETWORKS:
        raise NetworkError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    fn, datasets = NETWORKS[name]
    dataset = dataset or datasets[0]
    if dataset not in datasets:
        raise NetworkError(f"network {name!r} has no {dataset!r} variant; choose one of {', '.join(datasets)}")
    return fn(name, dataset)


def paper_set() -> list[str]:
    """Every network at every input size it is defined for (22 entries)."""
    return [f"{n}/{d}" for n, (_, ds) in NETWORKS.items() for d in ds]


def resolve(spec: str) -> list[str]:
    """``paper``, ``all`` or a comma list of ``name`` / ``name/dataset`` -> keys."""
    if spec in ("paper", "all"):
        return paper_set()
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name = item.split("/", 1)[0]
        if name not in NETWORKS:
            raise NetworkError(f"unknown network {name!r}; choose one of paper, {', '.join(NETWORKS)}")
        if "/" in item:
            build(item)                                   # validates the dataset
            out.append(item)
        else:
            out.extend(f"{name}/{d}" for d in NETWORKS[name][1])
    if not out:
        raise NetworkError(f"no network given; choose paper or some of {', '.join(NETWORKS)}")
    return out
