"""Layer-shape descriptions against the same networks written in plain torch.nn:
parameters counted by torch, GEMM MACs counted by forward hooks; and against
published parameter counts."""
import pytest
import torch
from torch import nn

from cosim import networks

torch.set_num_threads(1)


# ---------------------------------------------------------------- torch models (independent)
class MatMul(nn.Module):
    def forward(self, a, b):
        return a @ b


def conv_bn(cin, cout, k, s=1, p=0, groups=1):
    return [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]


def t_vgg(cfg, classes, imagenet):
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    head = ([nn.Flatten(), nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
             nn.Linear(4096, classes)] if imagenet else [nn.Flatten(), nn.Linear(512, classes)])
    return nn.Sequential(*layers, *head)


class Basic(nn.Module):
    exp = 1

    def __init__(self, cin, width, s):
        super().__init__()
        self.f = nn.Sequential(*conv_bn(cin, width, 3, s, 1), nn.ReLU(), *conv_bn(width, width, 3, 1, 1))
        self.sc = nn.Sequential(*conv_bn(cin, width, 1, s)) if s != 1 or cin != width else nn.Identity()

    def forward(self, x):
        return torch.relu(self.f(x) + self.sc(x))


class Bottleneck(nn.Module):
    exp = 4

    def __init__(self, cin, width, s):
        super().__init__()
        self.f = nn.Sequential(*conv_bn(cin, width, 1), nn.ReLU(), *conv_bn(width, width, 3, s, 1), nn.ReLU(),
                               *conv_bn(width, 4 * width, 1))
        self.sc = nn.Sequential(*conv_bn(cin, 4 * width, 1, s)) if s != 1 or cin != 4 * width else nn.Identity()

    def forward(self, x):
        return torch.relu(self.f(x) + self.sc(x))


def t_resnet(block, counts, classes, imagenet):
    stem = ([*conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)] if imagenet
            else [*conv_bn(3, 64, 3, 1, 1), nn.ReLU()])
    layers, c = [], 64
    for i, n in enumerate(counts):
        for j in range(n):
            layers.append(block(c, 64 << i, 2 if i and not j else 1))
            c = (64 << i) * block.exp
    return nn.Sequential(*stem, *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


class InvRes(nn.Module):
    def __init__(self, cin, cout, s, t):
        super().__init__()
        hid = cin * t
        ex = [*conv_bn(cin, hid, 1), nn.ReLU6()] if t != 1 else []
        self.f = nn.Sequential(*ex, *conv_bn(hid, hid, 3, s, 1, groups=hid), nn.ReLU6(), *conv_bn(hid, cout, 1))
        self.res = s == 1 and cin == cout

    def forward(self, x):
        return x + self.f(x) if self.res else self.f(x)


def t_mobilenetv2(classes, imagenet):
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2 if imagenet else 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1)]
    layers, c = [*conv_bn(3, 32, 3, 2 if imagenet else 1, 1), nn.ReLU6()], 32
    for t, co, n, s in cfg:
        for j in range(n):
            layers.append(InvRes(c, co, s if j == 0 else 1, t))
            c = co
    return nn.Sequential(*layers, *conv_bn(c, 1280, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(1280, classes))


def t_alexnet_imagenet():
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d(6),
        nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))


def t_lenet5():
    return nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, 10))


class DenseLayer(nn.Module):
    def __init__(self, cin, g=32):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * g, 1, bias=False),
                               nn.BatchNorm2d(4 * g), nn.ReLU(), nn.Conv2d(4 * g, g, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.f(x)], 1)


def t_densenet121(classes, imagenet):
    layers = ([*conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)] if imagenet
              else [*conv_bn(3, 64, 3, 1, 1), nn.ReLU()])
    c = 64
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            layers.append(DenseLayer(c))
            c += 32
        if i < 3:
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
            c //= 2
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c, classes))


class BertLayer(nn.Module):
    def __init__(self, d=768, h=12, ffn=3072):
        super().__init__()
        self.h = h
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mm1, self.mm2 = MatMul(), MatMul()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.f1, self.f2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        b, s, d = x.shape
        split = lambda t: t.view(b, s, self.h, d // self.h).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        p = torch.softmax(self.mm1(q, k.transpose(-1, -2)) / 8, -1)
        ctx = self.mm2(p, v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.f2(torch.nn.functional.gelu(self.f1(x))))


def hooked_macs(model, x):
    """GEMM MACs of one sample, counted by forward hooks from the outputs' shapes."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features
        elif isinstance(mod, MatMul):
            total[0] += out.numel() * inp[0].shape[-1]
    hs = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in hs:
        h.remove()
    return total[0] // x.shape[0]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


CASES = {
    "vgg11/cifar10": lambda: t_vgg(networks.VGG_CFG["vgg11"], 10, False),
    "vgg16/cifar10": lambda: t_vgg(networks.VGG_CFG["vgg16"], 10, False),
    "resnet18/cifar10": lambda: t_resnet(Basic, [2, 2, 2, 2], 10, False),
    "resnet34/imagenet": lambda: t_resnet(Basic, [3, 4, 6, 3], 1000, True),
    "resnet50/imagenet": lambda: t_resnet(Bottleneck, [3, 4, 6, 3], 1000, True),
    "mobilenetv2/cifar10": lambda: t_mobilenetv2(10, False),
    "mobilenetv2/imagenet": lambda: t_mobilenetv2(1000, True),
    "alexnet/imagenet": t_alexnet_imagenet,
    "lenet5/cifar10": t_lenet5,
    "densenet121/cifar10": lambda: t_densenet121(10, False),
    "bert_layer/seq128": BertLayer,
}


@pytest.mark.parametrize("key", list(CASES))
def test_macs_and_params_match_torch(key):
    net = networks.build(key)
    with torch.device("meta"):          # shapes only: no weight init, no arithmetic
        model = CASES[key]()
        x = torch.empty(1, 128, 768) if key.startswith("bert") else torch.empty(1, *net.input)
    assert net.params == n_params(model)
    assert net.macs == hooked_macs(model, x)


@pytest.mark.parametrize("key,make", [
    ("vgg13/imagenet", lambda: t_vgg(networks.VGG_CFG["vgg13"], 1000, True)),
    ("vgg19/imagenet", lambda: t_vgg(networks.VGG_CFG["vgg19"], 1000, True)),
    ("densenet121/imagenet", lambda: t_densenet121(1000, True)),
])
def test_params_match_torch_without_running(key, make):
    with torch.device("meta"):
        model = make()
    assert networks.build(key).params == n_params(model)


# published totals (torchvision model cards / the papers), millions of parameters
PUBLISHED_M = {"vgg11/imagenet": 132.9, "vgg13/imagenet": 133.0, "vgg16/imagenet": 138.4,
               "vgg19/imagenet": 143.7, "resnet18/imagenet": 11.7, "resnet34/imagenet": 21.8,
               "resnet50/imagenet": 25.6, "mobilenetv2/imagenet": 3.5, "alexnet/imagenet": 61.1,
               "densenet121/imagenet": 8.0, "lenet5/cifar10": 0.062, "bert_layer/seq128": 7.09}


@pytest.mark.parametrize("key", list(PUBLISHED_M))
def test_published_parameter_counts_within_1_percent(key):
    assert networks.build(key).params / 1e6 == pytest.approx(PUBLISHED_M[key], rel=0.01)


def test_paper_set_has_every_network_and_size():
    keys = networks.paper_set()
    assert len(keys) == 22 and len(set(keys)) == 22
    names = {k.split("/")[0] for k in keys}
    assert names == {"vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "mobilenetv2",
                     "alexnet", "lenet5", "densenet121", "bert_layer"}


def test_depthwise_is_grouped_and_flags():
    net = networks.build("mobilenetv2/imagenet")
    dw = [l for l in net.layers if l.groups > 1]
    assert dw and all(l.groups == l.cin == l.cout and l.fan_in == 9 for l in dw)
    rn = {l.name: l for l in networks.build("resnet18/cifar10").layers}
    assert rn["layer1.0.conv2"].grad_masked and not rn["layer1.0.conv2"].relu
    assert rn["layer1.0.conv1"].in_relu and not rn["conv1"].in_relu


@pytest.mark.parametrize("spec,needle", [("vgg17", "unknown network 'vgg17'; choose one of paper, vgg11"),
                                         ("lenet5/imagenet", "no 'imagenet' variant; choose one of cifar10"),
                                         (",", "no network given")])
def test_bad_network_lists_choices(spec, needle):
    with pytest.raises(networks.NetworkError, match=needle.replace("(", r"\(")):
        networks.resolve(spec)
