"""Network shapes, ranges and the SimSiam loss."""

import pytest
import torch

from helioforge.nn.gan import Discriminator, Generator
from helioforge.nn.resnet import ResNet18
from helioforge.nn.simsiam import SimSiam, negative_cosine


@pytest.mark.parametrize("size", [32, 64, 128])
def test_generator_and_discriminator_shapes(size):
    g, d = Generator(100, size, 4), Discriminator(size, 4)
    x = g(torch.randn(3, 100))
    assert x.shape == (3, 1, size, size)
    assert x.abs().max() <= 1.0  # tanh output
    p = d(x)
    assert p.shape == (3, 1) and torch.all((p > 0) & (p < 1))


def test_bad_image_size():
    with pytest.raises(ValueError, match="power of two"):
        Generator(100, 96)


def test_resnet18_has_18_weighted_layers_and_one_channel_stem():
    net = ResNet18(1, 8)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(convs) == 17  # + the final linear of a classifier = 18
    assert convs[0].in_channels == 1
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 64)


def test_negative_cosine_known_values_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[2.0, 0.0], [0.0, -1.0]], requires_grad=True)
    loss = negative_cosine(p, z)
    assert loss.item() == pytest.approx(0.0)  # (-1 + 1) / 2
    loss.backward()
    assert z.grad is None  # stop-gradient on the target branch


def test_simsiam_embed_and_loss_range():
    m = SimSiam(100, 32, 8, 4)
    x = torch.randn(4, 1, 32, 32)
    assert m.embed(x).shape == (4, 100)
    loss, z1 = m(x, x.flip(-1))
    assert -1.0 <= loss.item() <= 1.0
    assert z1.shape == (4, 100)
